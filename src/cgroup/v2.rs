//! cgroup v2: one unified hierarchy. The run root `runq-<pid>` is created
//! at the hierarchy root, wherever runq itself runs: v2 gives no
//! controllers to the children of a non-root cgroup that holds processes,
//! and runq's own cgroup holds runq. `cpuset` and `cpu` are enabled in
//! `cgroup.subtree_control` of the root and of every parent of a cgroup the
//! run creates (when the hierarchy offers them; a cgroup2 mount without
//! them still creates, moves, lists and removes, and cpuset/weight calls
//! fail with an environment error).
//!
//! Every cgroup the run creates is `threaded`, which makes the run root
//! `runq-<pid>` a thread root (`domain threaded`). Why: the kernel lets
//! single threads move only within one threaded subtree, and a thread root
//! accepts only threaded children; with domain children, placing threads
//! would fail as soon as a sibling held a process. A threaded subtree also
//! lifts v2's no-internal-process rule, so like v1, any cgroup of the run
//! may hold processes and children at once. `cpu` and `cpuset` are threaded
//! controllers, so weights and cpusets work the same; domain-only
//! controllers (memory, io) are not used by the run.
//!
//! - Whole processes enter any run cgroup through `cgroup.procs`.
//! - A single thread enters through `cgroup.threads`; if its process is
//!   still outside the run, the process is first moved to the run root, so
//!   its other threads wait there (on v1 they stay in runq's own cgroup).
//! - Threaded cgroups cannot list `cgroup.procs`; processes are derived
//!   from `cgroup.threads`.
//! - `clear_cpuset` writes the empty set ("use the parent's") when the
//!   kernel allows it; kernels that refuse an empty set on a populated
//!   cgroup (ENOSPC) get the parent's effective set written instead.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{
    check_cpus_within, check_rel, check_weight, detect, join_rel, make_dir, online_cpus,
    parent_rel, parse_flat_keyed, procs_of_dir, read_cpus, read_ids, read_text, remove_tree,
    tgid_of, write_ctl, write_ids, write_value, CgroupBackend, CgroupVersion,
};
use crate::error::RunqError;
use crate::topology::format_cpu_list;

/// The controllers runq enables when offered.
const WANTED: &[&str] = &["cpuset", "cpu"];

/// The v2 backend. See the module docs.
#[derive(Debug)]
pub struct V2Backend {
    mount: PathBuf,
    /// The cgroup path shown at the mount point (`/` unless namespaced).
    mount_root: String,
    /// Where the run root lives: the hierarchy root (see [`V2Backend::new`]).
    parent: PathBuf,
    /// This process's cgroup: tasks left in a removed cgroup go back here.
    home: PathBuf,
    /// `parent/runq-<pid>`.
    root: PathBuf,
    /// Controllers enabled for the run's cgroups (subset of [`WANTED`]).
    enabled: Vec<String>,
}

impl V2Backend {
    /// Uses the cgroup2 hierarchy mounted at `mount`, with the run root
    /// `root_name` at its root; `own_dir` (this process's cgroup) receives
    /// tasks left in removed cgroups. Enables the wanted controllers when
    /// the hierarchy offers them.
    pub fn new(mount: &Path, own_dir: &Path, root_name: &str) -> anyhow::Result<V2Backend> {
        let offered = detect::v2_controllers(mount);
        let enabled: Vec<String> = WANTED
            .iter()
            .filter(|c| offered.iter().any(|o| o == *c))
            .map(|c| c.to_string())
            .collect();
        let mount_root = detect::read_mounts()
            .ok()
            .and_then(|mounts| detect::mount_at(&mounts, mount).map(|m| m.root.clone()))
            .unwrap_or_else(|| "/".to_string());
        // Run roots live at the hierarchy root, not below runq's own cgroup:
        // that cgroup holds runq, and v2 gives no controllers to the
        // children of a non-root cgroup holding processes (a login
        // session's scope on a systemd host, say). The root is exempt.
        let backend = V2Backend {
            mount: mount.to_path_buf(),
            mount_root,
            parent: mount.to_path_buf(),
            home: own_dir.to_path_buf(),
            root: mount.join(root_name),
            enabled,
        };
        backend.make_root().map_err(|err| {
            RunqError::environment(format!(
                "{err:#}; runq needs to create and manage cgroups at the root of the cgroup2 \
                 hierarchy {}: run it as root (in a container: with a writable cgroup2 mount)",
                mount.display()
            ))
        })?;
        Ok(backend)
    }

    /// Enables the controllers at the hierarchy root, then creates the run
    /// root with them enabled; removes it again on failure.
    fn make_root(&self) -> anyhow::Result<()> {
        self.enable_in(&self.parent)?;
        let created = make_dir(&self.root).context("creating the run's cgroup root")?;
        if let Err(err) = self.enable_in(&self.root) {
            if created {
                let _ = fs::remove_dir(&self.root);
            }
            return Err(err.context("creating the run's cgroup root"));
        }
        Ok(())
    }

    /// The controllers enabled for the run's cgroups.
    pub fn enabled_controllers(&self) -> &[String] {
        &self.enabled
    }

    fn dir(&self, rel: &str) -> PathBuf {
        join_rel(&self.root, rel)
    }

    fn parent_dir(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.parent.clone()
        } else {
            self.dir(parent_rel(rel))
        }
    }

    /// Adds every enabled controller to `dir`'s subtree_control.
    fn enable_in(&self, dir: &Path) -> anyhow::Result<()> {
        if self.enabled.is_empty() {
            return Ok(());
        }
        let path = dir.join("cgroup.subtree_control");
        let current = read_text(&path)?;
        for controller in &self.enabled {
            if current.split_whitespace().any(|c| c == controller) {
                continue;
            }
            write_value(&path, &format!("+{controller}"))
                .with_context(|| format!("enabling {controller} in {}", path.display()))?;
        }
        Ok(())
    }

    fn cgroup_type(dir: &Path) -> String {
        fs::read_to_string(dir.join("cgroup.type"))
            .map(|t| t.trim().to_string())
            // The hierarchy root has no cgroup.type and can hold anything.
            .unwrap_or_else(|_| "root".to_string())
    }

    fn must_exist(&self, rel: &str) -> anyhow::Result<PathBuf> {
        check_rel(rel)?;
        let dir = self.dir(rel);
        if !dir.is_dir() {
            return Err(RunqError::bad_input(format!(
                "cgroup {rel:?} does not exist; create it (AddCgroup) before using it"
            )));
        }
        Ok(dir)
    }

    fn need_file(&self, dir: &Path, file: &str, controller: &str) -> anyhow::Result<PathBuf> {
        let path = dir.join(file);
        if path.exists() {
            return Ok(path);
        }
        Err(RunqError::environment(format!(
            "the {controller} controller is not available in the cgroup v2 hierarchy at {} \
             (cgroup.controllers: [{}]); it is probably bound to a cgroup v1 hierarchy: use the v1 \
             backend, or boot with cgroup_no_v1=all so cgroup v2 gets it",
            self.mount.display(),
            detect::v2_controllers(&self.mount).join(" ")
        )))
    }

    /// Switches `dir` to threaded (a no-op when it already is).
    fn make_threaded(&self, rel: &str, dir: &Path) -> anyhow::Result<()> {
        let kind = Self::cgroup_type(dir);
        if kind == "threaded" || kind == "domain threaded" || kind == "root" {
            return Ok(());
        }
        write_value(&dir.join("cgroup.type"), "threaded").map_err(|err| {
            if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
                RunqError::environment(format!(
                    "cgroup {rel:?}: cgroup v2 refused to make it threaded (a sibling holds \
                     processes as a domain cgroup, or domain controllers are enabled above it); \
                     remove other cgroups from {} or run runq from an empty cgroup",
                    dir.parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ))
            } else {
                anyhow::Error::new(err).context(format!("making cgroup {rel:?} threaded"))
            }
        })
    }

    /// The cgroup path (as in /proc/PID/cgroup) of a directory under the mount.
    fn cgroup_path(&self, dir: &Path) -> Option<String> {
        let rest = dir.strip_prefix(&self.mount).ok()?;
        let base = self.mount_root.trim_end_matches('/');
        let joined = format!("{base}/{}", rest.display());
        let trimmed = joined.trim_end_matches('/');
        Some(if trimmed.is_empty() {
            "/".to_string()
        } else {
            trimmed.to_string()
        })
    }

    fn process_cgroup_path(pid: i32) -> anyhow::Result<String> {
        let path = format!("/proc/{pid}/cgroup");
        let text =
            fs::read_to_string(&path).with_context(|| format!("process {pid}: reading {path}"))?;
        detect::parse_proc_cgroup(&text)
            .into_iter()
            .find(|c| c.hierarchy_id == 0)
            .map(|c| c.path)
            .ok_or_else(|| anyhow::anyhow!("process {pid}: no cgroup v2 entry in {path}"))
    }
}

impl CgroupBackend for V2Backend {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self, rel: &str) -> anyhow::Result<()> {
        let parts = check_rel(rel)?;
        for depth in 1..=parts.len() {
            let sub = parts[..depth].join("/");
            let dir = self.dir(&sub);
            if dir.is_dir() {
                continue;
            }
            let parent = self.parent_dir(&sub);
            self.enable_in(&parent).map_err(|err| {
                if err
                    .root_cause()
                    .downcast_ref::<std::io::Error>()
                    .and_then(|e| e.raw_os_error())
                    == Some(libc::EBUSY)
                {
                    RunqError::bad_input(format!(
                        "cgroup {:?} holds processes, so cgroup v2 cannot give it child cgroups \
                         with controllers ({sub:?}); place workers only in leaf cgroups",
                        parent_rel(&sub)
                    ))
                } else {
                    err.context(format!("creating cgroup {sub:?}"))
                }
            })?;
            make_dir(&dir)?;
            self.make_threaded(&sub, &dir)?;
        }
        Ok(())
    }

    fn set_cpuset(&self, rel: &str, cpus: &[usize], mems: Option<&[usize]>) -> anyhow::Result<()> {
        let dir = self.must_exist(rel)?;
        let cpus_file = self.need_file(&dir, "cpuset.cpus", "cpuset")?;
        let allowed = if rel.is_empty() {
            read_cpus(&self.parent.join("cpuset.cpus.effective")).or_else(|_| online_cpus())?
        } else {
            self.effective_cpus(parent_rel(rel))?
        };
        check_cpus_within(rel, cpus, &allowed, "CPU")?;
        if let Some(mems) = mems {
            let parent = self.parent_dir(rel);
            let allowed = read_cpus(&parent.join("cpuset.mems.effective"))?;
            check_cpus_within(rel, mems, &allowed, "memory node")?;
            write_ctl(&dir.join("cpuset.mems"), &format_cpu_list(mems))?;
        }
        write_ctl(&cpus_file, &format_cpu_list(cpus))
    }

    fn clear_cpuset(&self, rel: &str) -> anyhow::Result<()> {
        let dir = self.must_exist(rel)?;
        let cpus_file = self.need_file(&dir, "cpuset.cpus", "cpuset")?;
        let parent = self.parent_dir(rel);
        for (file, effective) in [
            (cpus_file, "cpuset.cpus.effective"),
            (dir.join("cpuset.mems"), "cpuset.mems.effective"),
        ] {
            // An empty set means "the parent's effective set".
            match write_value(&file, "\n") {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => {
                    let inherited = read_text(&parent.join(effective))?;
                    write_ctl(&file, inherited.trim())?;
                }
                Err(err) => {
                    return Err(anyhow::Error::new(err))
                        .with_context(|| format!("clearing {}", file.display()))
                }
            }
        }
        Ok(())
    }

    fn set_weight(&self, rel: &str, weight: u32) -> anyhow::Result<()> {
        check_weight(rel, weight)?;
        let dir = self.must_exist(rel)?;
        let file = self.need_file(&dir, "cpu.weight", "cpu")?;
        write_ctl(&file, &weight.to_string())
    }

    fn move_procs(&self, rel: &str, pids: &[i32]) -> anyhow::Result<()> {
        let dir = self.must_exist(rel)?;
        if !rel.is_empty() {
            self.make_threaded(rel, &dir)?;
        }
        write_ids(&dir.join("cgroup.procs"), pids, "process")
    }

    fn move_threads(&self, rel: &str, tids: &[i32]) -> anyhow::Result<()> {
        let dir = self.must_exist(rel)?;
        if !rel.is_empty() {
            self.make_threaded(rel, &dir)?;
        }
        // Every run cgroup is threaded: the run root is the thread root.
        let thread_root = self.root.clone();
        let root_path = self.cgroup_path(&thread_root).ok_or_else(|| {
            anyhow::anyhow!(
                "{} is outside {}",
                thread_root.display(),
                self.mount.display()
            )
        })?;
        let mut pids: Vec<i32> = Vec::new();
        for tid in tids {
            let tgid = tgid_of(*tid)?;
            if !pids.contains(&tgid) {
                pids.push(tgid);
            }
        }
        for pid in pids {
            let path = Self::process_cgroup_path(pid)?;
            let inside = root_path == "/"
                || path == root_path
                || path
                    .strip_prefix(&root_path)
                    .is_some_and(|r| r.starts_with('/'));
            if !inside {
                write_ids(&thread_root.join("cgroup.procs"), &[pid], "process")
                    .context("moving the thread's process to the thread root first")?;
            }
        }
        write_ids(&dir.join("cgroup.threads"), tids, "thread")
    }

    fn procs(&self, rel: &str) -> anyhow::Result<Vec<i32>> {
        let dir = self.must_exist(rel)?;
        procs_of_dir(&dir)
    }

    fn threads(&self, rel: &str) -> anyhow::Result<Vec<i32>> {
        let dir = self.must_exist(rel)?;
        read_ids(&dir.join("cgroup.threads"))
    }

    fn effective_cpus(&self, rel: &str) -> anyhow::Result<Vec<usize>> {
        let dir = self.must_exist(rel)?;
        let path = dir.join("cpuset.cpus.effective");
        if path.exists() {
            read_cpus(&path)
        } else {
            // No cpuset controller: nothing restricts the CPUs.
            online_cpus()
        }
    }

    fn cpu_stat(&self, rel: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        let dir = self.must_exist(rel)?;
        Ok(parse_flat_keyed(&read_text(&dir.join("cpu.stat"))?))
    }

    fn remove(&self, rel: &str) -> anyhow::Result<()> {
        check_rel(rel)?;
        remove_tree(&self.dir(rel), &self.home, CgroupVersion::V2)
    }

    fn paths(&self, rel: &str) -> Vec<PathBuf> {
        vec![self.dir(rel)]
    }

    fn root_parents(&self) -> Vec<PathBuf> {
        let mut parents = vec![self.parent.clone()];
        if self.home != self.parent {
            parents.push(self.home.clone());
        }
        parents
    }

    /// cgroup v2 has no real-time group budgets (RT tasks run anywhere).
    fn grant_rt_runtime(&self, rel: &str, _budgets_us: &[u64]) -> anyhow::Result<()> {
        check_rel(rel).map(drop)
    }
}
