//! One cgroup interface, two backends: cgroup v2 and v1 (hybrid hosts).
//!
//! A [`CgroupManager`] owns the run root `runq-<pid>` in every hierarchy it
//! uses: on v1 under the cgroup runq itself runs in, on v2 at the hierarchy
//! root (v2 gives no controllers below a non-root cgroup that holds
//! processes, and runq's own cgroup holds runq). Callers name cgroups by
//! paths relative to the run root (`"a"`, `"a/b"`; `""` is the run root) and
//! never see hierarchy paths except through [`CgroupBackend::paths`].
//!
//! - v1 ([`v1::V1Backend`]): separate `cpuset`, `cpu` and (when mounted apart)
//!   `cpuacct` hierarchies; every new cpuset directory gets `cpuset.cpus` and
//!   `cpuset.mems` copied from its parent before any task enters; weight maps
//!   to `cpu.shares = weight * 1024 / 100`; threads move through `tasks`.
//! - v2 ([`v2::V2Backend`]): one unified hierarchy; `+cpuset +cpu` are
//!   enabled in `cgroup.subtree_control` along the path. Per-thread placement
//!   makes the target cgroup `threaded` (its parent becomes the thread root
//!   holding the process); see `v2.rs` for the kernel rules that follow.
//!
//! A later run removes roots whose pid is dead ([`CgroupManager::cleanup_stale`],
//! called by [`CgroupManager::detect`]). Tasks still inside a cgroup being
//! removed are first moved to the run root's parent.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`CgroupManager`] (run root, stale-root cleanup), the [`CgroupBackend`] trait, weight constants |
//! | `detect.rs` | which hierarchies exist, where they are mounted and where runq sits in them (`/proc/self/mountinfo`, `/proc/self/cgroup`) |
//! | `v1.rs` | the v1 backend: per-controller hierarchies, cpuset inheritance, `cpu.shares`, `cpu.rt_runtime_us` |
//! | `v2.rs` | the v2 backend: the unified hierarchy, threaded subtrees, `cpu.weight` |

pub mod detect;
pub mod v1;
pub mod v2;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::RunqError;
use crate::topology::{format_cpu_list, parse_cpu_list};

pub use v1::V1Backend;
pub use v2::V2Backend;

/// Which cgroup interface a backend drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        })
    }
}

/// Lowest and highest accepted cpu weight (cgroup v2 `cpu.weight` range).
pub const WEIGHT_MIN: u32 = 1;
/// See [`WEIGHT_MIN`].
pub const WEIGHT_MAX: u32 = 10_000;
/// The weight every cgroup starts with (v1 shares 1024).
pub const WEIGHT_DEFAULT: u32 = 100;

/// Operations on the cgroups of one run. `rel` is a path relative to the run
/// root: components of letters, digits, `_` and `-` separated by `/`; `""`
/// names the run root itself.
pub trait CgroupBackend: Send + Sync {
    /// The interface this backend drives.
    fn version(&self) -> CgroupVersion;
    /// Creates `rel` and any missing ancestors (nested `"a/b"` allowed).
    /// Creating an existing cgroup is not an error.
    fn create(&self, rel: &str) -> anyhow::Result<()>;
    /// Restricts `rel` to `cpus` (and memory nodes `mems` when given). The
    /// CPUs must lie within the parent's effective CPUs (bad input otherwise).
    fn set_cpuset(&self, rel: &str, cpus: &[usize], mems: Option<&[usize]>) -> anyhow::Result<()>;
    /// Returns `rel` to its parent's effective CPUs and memory nodes.
    fn clear_cpuset(&self, rel: &str) -> anyhow::Result<()>;
    /// Sets the cpu weight, 1..=10000 (v1: `cpu.shares = weight * 1024 / 100`).
    fn set_weight(&self, rel: &str, weight: u32) -> anyhow::Result<()>;
    /// Moves whole processes (every thread) into `rel`.
    fn move_procs(&self, rel: &str, pids: &[i32]) -> anyhow::Result<()>;
    /// Moves single threads into `rel`.
    fn move_threads(&self, rel: &str, tids: &[i32]) -> anyhow::Result<()>;
    /// Processes with at least one thread in `rel`, sorted.
    fn procs(&self, rel: &str) -> anyhow::Result<Vec<i32>>;
    /// Threads in `rel`, sorted.
    fn threads(&self, rel: &str) -> anyhow::Result<Vec<i32>>;
    /// The CPUs tasks in `rel` may run on.
    fn effective_cpus(&self, rel: &str) -> anyhow::Result<Vec<usize>>;
    /// CPU accounting of `rel`: `usage_usec`, `user_usec`, `system_usec`
    /// plus whatever else the kernel reports (`nr_periods`, `nr_throttled`,
    /// `throttled_usec`, ...). v1 takes usage from `cpuacct` when mounted.
    fn cpu_stat(&self, rel: &str) -> anyhow::Result<BTreeMap<String, u64>>;
    /// Removes `rel` and everything below it, bottom-up, after moving any
    /// task still inside to the run root's parent. Removing the run root
    /// (`""`) removes the whole run. A missing cgroup is not an error.
    fn remove(&self, rel: &str) -> anyhow::Result<()>;
    /// Every hierarchy directory backing `rel` (for snapshots).
    fn paths(&self, rel: &str) -> Vec<PathBuf>;
    /// Every directory run roots are created in (one per hierarchy).
    fn root_parents(&self) -> Vec<PathBuf>;
    /// Lets `rel` run real-time (SCHED_FIFO/RR) tasks. v1 with RT group
    /// scheduling starts every cgroup with `cpu.rt_runtime_us` = 0, which
    /// refuses RT tasks: `rel` and each ancestor whose budget is 0 get one,
    /// top-down (a cgroup's budget cannot exceed its parent's). Cgroups
    /// below the run root get the first of `budgets_us` the kernel accepts
    /// (µs per `cpu.rt_period_us`), the run root (and any budgetless
    /// ancestor above it) the first of [`RT_ROOT_BUDGETS_US`]. A cgroup that
    /// already has a budget keeps it. v2 has no RT budgets: nothing to do.
    fn grant_rt_runtime(&self, rel: &str, budgets_us: &[u64]) -> anyhow::Result<()>;
}

/// Real-time budgets tried for the run root's `cpu.rt_runtime_us` (v1 with
/// RT group scheduling), in µs per `cpu.rt_period_us` (1 s by default),
/// largest first: concurrent runs share the machine's budget.
pub const RT_ROOT_BUDGETS_US: &[u64] = &[300_000, 200_000, 100_000];
/// Budgets tried for a cgroup below the run root that runs RT workers.
pub const RT_CGROUP_BUDGETS_US: &[u64] = &[100_000, 50_000, 20_000];

/// Owns the run root `runq-<pid>` in every hierarchy a backend uses and
/// removes it (bottom-up) on [`CgroupManager::teardown`] or drop.
pub struct CgroupManager {
    backend: Box<dyn CgroupBackend>,
    root_name: String,
    owner_pid: u32,
    torn_down: bool,
}

/// Managers made so far by this process (the first takes `runq-<pid>`, later
/// ones `runq-<pid>-<n>` so several can live at once).
static MANAGERS_MADE: AtomicUsize = AtomicUsize::new(0);

fn next_root_name() -> String {
    let pid = std::process::id();
    match MANAGERS_MADE.fetch_add(1, Ordering::Relaxed) {
        0 => format!("runq-{pid}"),
        n => format!("runq-{pid}-{n}"),
    }
}

/// The pid a run-root name belongs to (`runq-<pid>` or `runq-<pid>-<n>`).
pub fn root_owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("runq-")?;
    let (pid, suffix) = match rest.split_once('-') {
        Some((pid, suffix)) => (pid, Some(suffix)),
        None => (rest, None),
    };
    if let Some(suffix) = suffix {
        if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

/// True if the process `pid` exists and has not ended: a zombie (ended,
/// not yet reaped by its parent) is dead, so its roots are stale.
pub fn pid_alive(pid: i32) -> bool {
    crate::process::is_alive(pid)
}

impl CgroupManager {
    /// Picks the interface this host offers and creates the run root: v2 if
    /// the unified hierarchy offers `cpuset` and `cpu`, else the v1 `cpuset`
    /// and `cpu` hierarchies. Removes stale roots of dead runs first. An
    /// environment error (exit 3) names what is missing and how to fix it.
    pub fn detect() -> anyhow::Result<CgroupManager> {
        let mounts = detect::read_mounts()?;
        let selves = detect::read_self_cgroups()?;
        let v2 = detect::v2_mount(&mounts, &selves);
        let mut v2_note = "no cgroup2 mount".to_string();
        if let Some((mount, own)) = &v2 {
            let offered = detect::v2_controllers(&mount.mount_point);
            if offered.iter().any(|c| c == "cpuset") && offered.iter().any(|c| c == "cpu") {
                let root_name = next_root_name();
                let backend = V2Backend::new(&mount.mount_point, own, &root_name)?;
                return Self::build(Box::new(backend), root_name);
            }
            v2_note = format!(
                "the cgroup2 hierarchy at {} offers [{}]",
                mount.mount_point.display(),
                offered.join(" ")
            );
        }
        let cpuset = detect::v1_mount_for(&mounts, &selves, "cpuset");
        let cpu = detect::v1_mount_for(&mounts, &selves, "cpu");
        match (cpuset, cpu) {
            (Some((cpuset, cpuset_dir)), Some((cpu, cpu_dir))) => {
                let cpuacct = detect::v1_mount_for(&mounts, &selves, "cpuacct");
                let root_name = next_root_name();
                let backend = V1Backend::new(
                    Some((&cpuset.mount_point, &cpuset_dir)),
                    Some((&cpu.mount_point, &cpu_dir)),
                    cpuacct
                        .as_ref()
                        .map(|(m, d)| (m.mount_point.as_path(), d.as_path())),
                    &root_name,
                )?;
                Self::build(Box::new(backend), root_name)
            }
            (cpuset, cpu) => {
                let mut missing = Vec::new();
                if cpuset.is_none() {
                    missing.push("cpuset");
                }
                if cpu.is_none() {
                    missing.push("cpu");
                }
                Err(RunqError::environment(format!(
                    "no usable cgroup controllers: {v2_note} (needs cpuset and cpu) and no cgroup v1 \
                     hierarchy carries {}; fix: mount them, e.g. `mkdir -p /sys/fs/cgroup/{m} && mount \
                     -t cgroup -o {m} cgroup /sys/fs/cgroup/{m}`, or boot a kernel whose cgroup2 \
                     hierarchy has cpuset and cpu (cgroup_no_v1=all)",
                    missing.join(" and "),
                    m = missing[0]
                )))
            }
        }
    }

    /// A manager over explicitly named mount points (for tests, e.g. a cgroup2
    /// mount made by the test). v2 takes one mount; v1 takes the mounts of
    /// the `cpuset`, `cpu` and `cpuacct` hierarchies it should use (any
    /// subset; operations needing a missing controller fail with an
    /// environment error). Does not remove stale roots: call
    /// [`CgroupManager::cleanup_stale`].
    pub fn with_backend(
        version: CgroupVersion,
        mounts: &[PathBuf],
    ) -> anyhow::Result<CgroupManager> {
        let known = detect::read_mounts()?;
        let selves = detect::read_self_cgroups()?;
        let mut found = Vec::new();
        for path in mounts {
            let mount = detect::mount_at(&known, path).ok_or_else(|| {
                RunqError::bad_input(format!(
                    "{}: not a cgroup mount point; pass a directory where a cgroup hierarchy is mounted",
                    path.display()
                ))
            })?;
            if mount.unified != (version == CgroupVersion::V2) {
                return Err(RunqError::bad_input(format!(
                    "{}: is a cgroup {} mount, not {version}; pass a {version} mount",
                    path.display(),
                    if mount.unified { "v2" } else { "v1" }
                )));
            }
            let own = detect::own_dir(mount, &selves).ok_or_else(|| {
                RunqError::environment(format!(
                    "{}: this process's cgroup is not visible through this mount",
                    path.display()
                ))
            })?;
            found.push((mount.clone(), own));
        }
        let root_name = next_root_name();
        let backend: Box<dyn CgroupBackend> = match version {
            CgroupVersion::V2 => {
                let [(mount, own)] = found.as_slice() else {
                    return Err(RunqError::bad_input(format!(
                        "cgroup v2 takes exactly one mount point, got {}",
                        found.len()
                    )));
                };
                Box::new(V2Backend::new(&mount.mount_point, own, &root_name)?)
            }
            CgroupVersion::V1 => {
                let pick = |controller: &str| {
                    found
                        .iter()
                        .find(|(m, _)| m.controllers.iter().any(|c| c == controller))
                        .map(|(m, d)| (m.mount_point.as_path(), d.as_path()))
                };
                Box::new(V1Backend::new(
                    pick("cpuset"),
                    pick("cpu"),
                    pick("cpuacct"),
                    &root_name,
                )?)
            }
        };
        Ok(CgroupManager {
            backend,
            root_name,
            owner_pid: std::process::id(),
            torn_down: false,
        })
    }

    fn build(backend: Box<dyn CgroupBackend>, root_name: String) -> anyhow::Result<CgroupManager> {
        let manager = CgroupManager {
            backend,
            root_name,
            owner_pid: std::process::id(),
            torn_down: false,
        };
        for removed in manager.cleanup_stale() {
            tracing::info!("removed stale cgroup root {removed}");
        }
        Ok(manager)
    }

    /// Removes `runq-<pid>` roots (in every hierarchy this manager uses)
    /// whose pid is dead, moving any task left inside to the parent first.
    /// Returns the directories removed; failures are logged and skipped.
    pub fn cleanup_stale(&self) -> Vec<String> {
        let version = self.backend.version();
        let mut removed = Vec::new();
        for parent in self.backend.root_parents() {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = root_owner_pid(&name) else {
                    continue;
                };
                if pid as u32 == std::process::id() || pid_alive(pid) || !entry.path().is_dir() {
                    continue;
                }
                let dir = entry.path();
                match remove_tree(&dir, &parent, version) {
                    Ok(()) => removed.push(dir.display().to_string()),
                    Err(err) => {
                        tracing::warn!("cannot remove stale cgroup {}: {err:#}", dir.display())
                    }
                }
            }
        }
        removed
    }

    /// The backend doing the work (also reachable through `Deref`).
    pub fn backend(&self) -> &dyn CgroupBackend {
        self.backend.as_ref()
    }

    /// The run root's directory name, `runq-<pid>` (or `runq-<pid>-<n>` for
    /// a second manager in the same process).
    pub fn root_name(&self) -> &str {
        &self.root_name
    }

    /// Removes every cgroup of the run, bottom-up. Safe to call twice; does
    /// nothing in a forked child (only the creating process tears down).
    pub fn teardown(&mut self) -> anyhow::Result<()> {
        if self.torn_down || self.owner_pid != std::process::id() {
            return Ok(());
        }
        self.backend.remove("")?;
        self.torn_down = true;
        Ok(())
    }
}

impl std::ops::Deref for CgroupManager {
    type Target = dyn CgroupBackend;
    fn deref(&self) -> &Self::Target {
        self.backend.as_ref()
    }
}

impl Drop for CgroupManager {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            tracing::warn!("cgroup teardown of {}: {err:#}", self.root_name);
        }
    }
}

impl std::fmt::Debug for CgroupManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupManager")
            .field("version", &self.backend.version())
            .field("root_name", &self.root_name)
            .field("paths", &self.backend.paths(""))
            .finish()
    }
}

// ---- helpers shared by both backends ----

/// Names that are control files in v1 directories without a dot.
pub const RESERVED_NAMES: &[&str] = &["tasks", "notify_on_release", "release_agent"];

/// Longest part of a cgroup path runq accepts (a directory name; the run
/// root's own name and the kernel's 255-byte limit leave room for it).
pub const MAX_NAME_PART: usize = 200;

/// Splits and checks a relative cgroup path. `""` is the run root.
pub fn check_rel(rel: &str) -> anyhow::Result<Vec<&str>> {
    if rel.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts {
        let ok = !part.is_empty()
            && part.len() <= MAX_NAME_PART
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && !RESERVED_NAMES.contains(part);
        if !ok {
            return Err(RunqError::bad_input(format!(
                "cgroup name {rel:?}: use letters, digits, '_' and '-' separated by '/' \
                 (no empty parts, no '.', not tasks/notify_on_release/release_agent)"
            )));
        }
    }
    Ok(parts)
}

/// The relative path of `rel`'s parent (`""` for a top-level cgroup).
pub fn parent_rel(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// `base/rel`, or `base` for the run root.
pub(crate) fn join_rel(base: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

pub(crate) fn read_text(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn read_cpus(path: &Path) -> anyhow::Result<Vec<usize>> {
    let text = read_text(path)?;
    parse_cpu_list(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Writes `value` to a control file in one `write` call.
pub(crate) fn write_value(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(value.as_bytes())
}

pub(crate) fn write_ctl(path: &Path, value: &str) -> anyhow::Result<()> {
    write_value(path, value)
        .with_context(|| format!("writing {:?} to {}", value.trim(), path.display()))
}

/// Writes each id with its own `write` call (the kernel takes one per call).
pub(crate) fn write_ids(path: &Path, ids: &[i32], what: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for id in ids {
        if *id <= 0 {
            return Err(RunqError::bad_input(format!(
                "{what} {id}: not a valid id; pass ids > 0"
            )));
        }
        if let Err(err) = file.write_all(id.to_string().as_bytes()) {
            if err.raw_os_error() == Some(libc::ESRCH) {
                return Err(anyhow::Error::new(err)).with_context(|| {
                    format!("moving {what} {id} to {}: no such task", path.display())
                });
            }
            return Err(anyhow::Error::new(err))
                .with_context(|| format!("moving {what} {id} to {}", path.display()));
        }
    }
    Ok(())
}

pub(crate) fn read_ids(path: &Path) -> anyhow::Result<Vec<i32>> {
    crate::process::read_pid_list(path).with_context(|| format!("reading {}", path.display()))
}

/// Processes with a thread in the cgroup directory `dir`, sorted. Threaded
/// cgroup v2 directories cannot list `cgroup.procs`; their processes are
/// derived from `cgroup.threads`.
pub fn procs_of_dir(dir: &Path) -> anyhow::Result<Vec<i32>> {
    let threaded = fs::read_to_string(dir.join("cgroup.type"))
        .map(|t| t.trim() == "threaded")
        .unwrap_or(false);
    if !threaded {
        return read_ids(&dir.join("cgroup.procs"));
    }
    let mut pids: Vec<i32> = read_ids(&dir.join("cgroup.threads"))?
        .into_iter()
        .filter_map(|tid| tgid_of(tid).ok())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

pub(crate) use crate::process::tgid_of;

/// Parses `key value` lines (cpu.stat and friends).
pub(crate) fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let key = it.next()?;
            let value = it.next()?.parse().ok()?;
            Some((key.to_string(), value))
        })
        .collect()
}

/// CPUs outside `allowed`, as a bad-input error naming the cgroup and fix.
pub(crate) fn check_cpus_within(
    rel: &str,
    cpus: &[usize],
    allowed: &[usize],
    what: &str,
) -> anyhow::Result<()> {
    if cpus.is_empty() {
        return Err(RunqError::bad_input(format!(
            "cpuset of cgroup {rel:?}: empty {what} list; give at least one (allowed: {})",
            format_cpu_list(allowed)
        )));
    }
    let outside: Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|c| !allowed.contains(c))
        .collect();
    if !outside.is_empty() {
        return Err(RunqError::bad_input(format!(
            "cpuset of cgroup {rel:?}: {what} {} outside the parent's set {}; pick {what}s from {}",
            format_cpu_list(&outside),
            format_cpu_list(allowed),
            format_cpu_list(allowed)
        )));
    }
    Ok(())
}

pub(crate) fn check_weight(rel: &str, weight: u32) -> anyhow::Result<()> {
    if !(WEIGHT_MIN..=WEIGHT_MAX).contains(&weight) {
        return Err(RunqError::bad_input(format!(
            "weight of cgroup {rel:?}: {weight} is out of range; use {WEIGHT_MIN}..={WEIGHT_MAX} \
             (default {WEIGHT_DEFAULT})"
        )));
    }
    Ok(())
}

/// Subdirectories of a cgroup directory.
pub fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Moves every task out of `dir` into `escape` (v1: thread by thread through
/// `tasks`; v2: whole processes through `cgroup.procs`). Tasks that exit
/// meanwhile are ignored.
pub(crate) fn evacuate(dir: &Path, escape: &Path, version: CgroupVersion) -> anyhow::Result<()> {
    for _round in 0..20 {
        let (ids, target) = match version {
            CgroupVersion::V1 => (read_ids(&dir.join("tasks"))?, escape.join("tasks")),
            CgroupVersion::V2 => {
                let tids = read_ids(&dir.join("cgroup.threads"))?;
                let mut pids: Vec<i32> = tids.iter().filter_map(|t| tgid_of(*t).ok()).collect();
                pids.sort_unstable();
                pids.dedup();
                (pids, escape.join("cgroup.procs"))
            }
        };
        if ids.is_empty() {
            return Ok(());
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .with_context(|| format!("opening {}", target.display()))?;
        for id in ids {
            if let Err(err) = file.write_all(id.to_string().as_bytes()) {
                if err.raw_os_error() != Some(libc::ESRCH) {
                    return Err(anyhow::Error::new(err)).with_context(|| {
                        format!(
                            "moving task {id} out of {} to {}",
                            dir.display(),
                            target.display()
                        )
                    });
                }
            }
        }
    }
    Ok(())
}

/// Removes `dir` and its subtree bottom-up, first moving tasks to `escape`.
/// A directory that vanished meanwhile (another run cleaning up) is fine.
pub(crate) fn remove_tree(dir: &Path, escape: &Path, version: CgroupVersion) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for child in child_dirs(dir) {
        remove_tree(&child, escape, version)?;
    }
    if let Err(err) = evacuate(dir, escape, version) {
        if dir.exists() {
            return Err(err);
        }
        return Ok(());
    }
    // Exiting tasks can keep a cgroup busy for a moment after they left it.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                let _ = evacuate(dir, escape, version);
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => {
                return Err(anyhow::Error::new(err))
                    .with_context(|| format!("removing {}", dir.display()))
            }
        }
    }
}

/// Creates one cgroup directory; an existing one is fine.
pub(crate) fn make_dir(dir: &Path) -> anyhow::Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
            Err(RunqError::environment(format!(
                "cannot create cgroup {}: permission denied; run runq as root",
                dir.display()
            )))
        }
        Err(err) if err.raw_os_error() == Some(libc::EROFS) => {
            Err(RunqError::environment(format!(
                "cannot create cgroup {}: the cgroup filesystem is mounted read-only; remount it \
                 read-write (in a container: run it privileged with the host's cgroups)",
                dir.display()
            )))
        }
        Err(err) => Err(anyhow::Error::new(err))
            .with_context(|| format!("creating cgroup {}", dir.display())),
    }
}

/// Online CPUs of the host (fallback when no cpuset controller is present).
pub(crate) fn online_cpus() -> anyhow::Result<Vec<usize>> {
    read_cpus(Path::new("/sys/devices/system/cpu/online"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_names_parse_only_runq_pid_forms() {
        assert_eq!(root_owner_pid("runq-123"), Some(123));
        assert_eq!(root_owner_pid("runq-123-4"), Some(123));
        assert_eq!(root_owner_pid("runq-"), None);
        assert_eq!(root_owner_pid("runq-12a"), None);
        assert_eq!(root_owner_pid("runq-12-"), None);
        assert_eq!(root_owner_pid("runq-0"), None);
        assert_eq!(root_owner_pid("other-12"), None);
    }

    #[test]
    fn relative_paths_are_checked() {
        assert_eq!(check_rel("a/b_c-1").unwrap(), vec!["a", "b_c-1"]);
        assert!(check_rel("").unwrap().is_empty());
        for bad in [
            "/a",
            "a/",
            "a//b",
            "..",
            "a/../b",
            "a b",
            "cpu.shares",
            "tasks",
        ] {
            let err = check_rel(bad).unwrap_err();
            assert_eq!(
                crate::error::exit_code_for(&err),
                crate::error::EXIT_BAD_INPUT,
                "{bad}"
            );
        }
        assert_eq!(parent_rel("a/b/c"), "a/b");
        assert_eq!(parent_rel("a"), "");
    }

    #[test]
    fn cpu_checks_name_the_cgroup_and_the_allowed_set() {
        let err = check_cpus_within("cg1", &[1, 7], &[0, 1], "CPU").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"cg1\"") && text.contains("7") && text.contains("0-1"),
            "{text}"
        );
        assert!(check_cpus_within("cg1", &[], &[0, 1], "CPU").is_err());
        assert!(check_cpus_within("cg1", &[0, 1], &[0, 1], "CPU").is_ok());
        assert!(check_weight("x", 0).is_err());
        assert!(check_weight("x", 10_001).is_err());
        assert!(check_weight("x", 1).is_ok());
    }

    #[test]
    fn flat_keyed_parses_cpu_stat() {
        let map = parse_flat_keyed("usage_usec 10\nuser_usec 7\nbad\nnr_periods 0\n");
        assert_eq!(map["usage_usec"], 10);
        assert_eq!(map.len(), 3);
    }
}
