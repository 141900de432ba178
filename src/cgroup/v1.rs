//! cgroup v1: separate `cpuset`, `cpu` and `cpuacct` hierarchies (any of
//! them may share one mount, e.g. `cpu,cpuacct`). Every cgroup exists in each
//! hierarchy used; tasks move in all of them.
//!
//! v1 cpuset directories start with empty `cpuset.cpus`/`cpuset.mems`, and no
//! task can enter until both are set, so each new directory gets its parent's
//! values first. The kernel also insists that a child's set stays within its
//! parent's: changing a set that has children re-fits the children (each
//! keeps its CPUs that remain allowed, or takes the new set when none do).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    check_cpus_within, check_rel, check_weight, child_dirs, join_rel, make_dir, online_cpus,
    parent_rel, parse_flat_keyed, read_cpus, read_ids, read_text, remove_tree, write_ctl,
    write_ids, write_value, CgroupBackend, CgroupVersion, RT_ROOT_BUDGETS_US,
};
use crate::error::RunqError;
use crate::topology::format_cpu_list;

/// One v1 hierarchy used by the run.
#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    /// This process's cgroup: where the run root lives.
    parent: PathBuf,
    /// `parent/runq-<pid>`.
    root: PathBuf,
}

/// The v1 backend. See the module docs.
#[derive(Debug)]
pub struct V1Backend {
    hierarchies: Vec<Hierarchy>,
    cpuset: Option<usize>,
    cpu: Option<usize>,
    cpuacct: Option<usize>,
}

impl V1Backend {
    /// Uses the given `(mount point, this process's cgroup dir)` pairs and
    /// creates the run root `root_name` in each. Hierarchies sharing a mount
    /// point are used once.
    pub fn new(
        cpuset: Option<(&Path, &Path)>,
        cpu: Option<(&Path, &Path)>,
        cpuacct: Option<(&Path, &Path)>,
        root_name: &str,
    ) -> anyhow::Result<V1Backend> {
        let mut backend = V1Backend {
            hierarchies: Vec::new(),
            cpuset: None,
            cpu: None,
            cpuacct: None,
        };
        let mut add = |pair: Option<(&Path, &Path)>| -> Option<usize> {
            let (mount, parent) = pair?;
            if let Some(i) = backend.hierarchies.iter().position(|h| h.mount == mount) {
                return Some(i);
            }
            backend.hierarchies.push(Hierarchy {
                mount: mount.to_path_buf(),
                parent: parent.to_path_buf(),
                root: parent.join(root_name),
            });
            Some(backend.hierarchies.len() - 1)
        };
        // cpuset first: listing and membership are read from the first one.
        let cpuset_index = add(cpuset);
        let cpu_index = add(cpu);
        let cpuacct_index = add(cpuacct);
        backend.cpuset = cpuset_index;
        backend.cpu = cpu_index;
        backend.cpuacct = cpuacct_index;
        if backend.hierarchies.is_empty() {
            return Err(RunqError::environment(
                "cgroup v1: no cpuset, cpu or cpuacct hierarchy given; mount one (mount -t cgroup -o cpuset cgroup DIR)",
            ));
        }
        if let Err(err) = backend.create_one("") {
            let _ = backend.remove("");
            return Err(err.context("creating the run's cgroup root"));
        }
        Ok(backend)
    }

    fn dir(&self, index: usize, rel: &str) -> PathBuf {
        join_rel(&self.hierarchies[index].root, rel)
    }

    /// The directory of `rel`'s parent (the run root's parent for `""`).
    fn parent_dir(&self, index: usize, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.hierarchies[index].parent.clone()
        } else {
            self.dir(index, parent_rel(rel))
        }
    }

    fn need(&self, index: Option<usize>, controller: &str) -> anyhow::Result<usize> {
        index.ok_or_else(|| {
            RunqError::environment(format!(
                "cgroup v1: no {controller} hierarchy in use; mount it (mkdir -p /sys/fs/cgroup/{controller} && \
                 mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller})"
            ))
        })
    }

    fn must_exist(&self, rel: &str) -> anyhow::Result<()> {
        check_rel(rel)?;
        if !self.dir(0, rel).is_dir() {
            return Err(RunqError::bad_input(format!(
                "cgroup {rel:?} does not exist; create it (AddCgroup) before using it"
            )));
        }
        Ok(())
    }

    /// Creates `rel` (its parent exists) in every hierarchy.
    fn create_one(&self, rel: &str) -> anyhow::Result<()> {
        for index in 0..self.hierarchies.len() {
            let dir = self.dir(index, rel);
            make_dir(&dir)?;
            if Some(index) == self.cpuset {
                let parent = self.parent_dir(index, rel);
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if read_text(&dir.join(file))?.trim().is_empty() {
                        let value = read_text(&parent.join(file))?;
                        write_ctl(&dir.join(file), value.trim())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets `file` (`cpuset.cpus` or `cpuset.mems`) of `dir` to `new`,
    /// re-fitting descendants so every step keeps children within parents.
    fn apply_nested(dir: &Path, file: &str, new: &[usize]) -> anyhow::Result<()> {
        let mut plan = vec![(dir.to_path_buf(), read_cpus(&dir.join(file))?, new.to_vec())];
        Self::plan_children(dir, file, new, &mut plan)?;
        if plan.len() == 1 {
            return write_ctl(&dir.join(file), &format_cpu_list(new));
        }
        // Widen top-down to current ∪ target, then narrow bottom-up to target.
        let mut widened = Vec::with_capacity(plan.len());
        for (path, current, target) in &plan {
            let mut union: Vec<usize> = current.iter().chain(target).copied().collect();
            union.sort_unstable();
            union.dedup();
            if &union != current {
                write_ctl(&path.join(file), &format_cpu_list(&union))?;
            }
            widened.push(union);
        }
        for ((path, _, target), union) in plan.iter().zip(widened).rev() {
            if *target != union {
                write_ctl(&path.join(file), &format_cpu_list(target))?;
            }
        }
        Ok(())
    }

    /// Pre-order list of descendants with their current and re-fitted sets.
    fn plan_children(
        dir: &Path,
        file: &str,
        parent_target: &[usize],
        plan: &mut Vec<(PathBuf, Vec<usize>, Vec<usize>)>,
    ) -> anyhow::Result<()> {
        for child in child_dirs(dir) {
            let current = read_cpus(&child.join(file))?;
            let mut target: Vec<usize> = current
                .iter()
                .copied()
                .filter(|c| parent_target.contains(c))
                .collect();
            if target.is_empty() {
                target = parent_target.to_vec();
            }
            plan.push((child.clone(), current, target.clone()));
            Self::plan_children(&child, file, &target, plan)?;
        }
        Ok(())
    }
}

impl CgroupBackend for V1Backend {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self, rel: &str) -> anyhow::Result<()> {
        let parts = check_rel(rel)?;
        for depth in 1..=parts.len() {
            self.create_one(&parts[..depth].join("/"))
                .with_context_rel(rel, "creating")?;
        }
        Ok(())
    }

    fn set_cpuset(&self, rel: &str, cpus: &[usize], mems: Option<&[usize]>) -> anyhow::Result<()> {
        let index = self.need(self.cpuset, "cpuset")?;
        self.must_exist(rel)?;
        let parent = self.parent_dir(index, rel);
        let allowed = read_cpus(&parent.join("cpuset.effective_cpus"))?;
        check_cpus_within(rel, cpus, &allowed, "CPU")?;
        let mut sorted = cpus.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if let Some(mems) = mems {
            let allowed = read_cpus(&parent.join("cpuset.effective_mems"))?;
            check_cpus_within(rel, mems, &allowed, "memory node")?;
            let mut mems = mems.to_vec();
            mems.sort_unstable();
            mems.dedup();
            Self::apply_nested(&self.dir(index, rel), "cpuset.mems", &mems)?;
        }
        Self::apply_nested(&self.dir(index, rel), "cpuset.cpus", &sorted)
    }

    fn clear_cpuset(&self, rel: &str) -> anyhow::Result<()> {
        let index = self.need(self.cpuset, "cpuset")?;
        self.must_exist(rel)?;
        let parent = self.parent_dir(index, rel);
        let dir = self.dir(index, rel);
        let mems = read_cpus(&parent.join("cpuset.effective_mems"))?;
        Self::apply_nested(&dir, "cpuset.mems", &mems)?;
        let cpus = read_cpus(&parent.join("cpuset.effective_cpus"))?;
        Self::apply_nested(&dir, "cpuset.cpus", &cpus)
    }

    fn set_weight(&self, rel: &str, weight: u32) -> anyhow::Result<()> {
        check_weight(rel, weight)?;
        let index = self.need(self.cpu, "cpu")?;
        self.must_exist(rel)?;
        let shares = (u64::from(weight) * 1024 / 100).max(2);
        write_ctl(
            &self.dir(index, rel).join("cpu.shares"),
            &shares.to_string(),
        )
    }

    fn move_procs(&self, rel: &str, pids: &[i32]) -> anyhow::Result<()> {
        self.must_exist(rel)?;
        for index in 0..self.hierarchies.len() {
            write_ids(&self.dir(index, rel).join("cgroup.procs"), pids, "process")?;
        }
        Ok(())
    }

    fn move_threads(&self, rel: &str, tids: &[i32]) -> anyhow::Result<()> {
        self.must_exist(rel)?;
        for index in 0..self.hierarchies.len() {
            write_ids(&self.dir(index, rel).join("tasks"), tids, "thread")?;
        }
        Ok(())
    }

    fn procs(&self, rel: &str) -> anyhow::Result<Vec<i32>> {
        self.must_exist(rel)?;
        read_ids(&self.dir(0, rel).join("cgroup.procs"))
    }

    fn threads(&self, rel: &str) -> anyhow::Result<Vec<i32>> {
        self.must_exist(rel)?;
        read_ids(&self.dir(0, rel).join("tasks"))
    }

    fn effective_cpus(&self, rel: &str) -> anyhow::Result<Vec<usize>> {
        self.must_exist(rel)?;
        match self.cpuset {
            Some(index) => read_cpus(&self.dir(index, rel).join("cpuset.effective_cpus")),
            None => online_cpus(),
        }
    }

    fn cpu_stat(&self, rel: &str) -> anyhow::Result<BTreeMap<String, u64>> {
        self.must_exist(rel)?;
        if self.cpu.is_none() && self.cpuacct.is_none() {
            self.need(None, "cpuacct")?;
        }
        let mut stat = BTreeMap::new();
        if let Some(index) = self.cpu {
            let path = self.dir(index, rel).join("cpu.stat");
            if path.exists() {
                for (key, value) in parse_flat_keyed(&read_text(&path)?) {
                    // v1 reports times in nanoseconds; v2 names them *_usec.
                    if let Some(base) = key.strip_suffix("_time") {
                        stat.insert(format!("{base}_usec"), value / 1000);
                    }
                    stat.insert(key, value);
                }
            }
        }
        if let Some(index) = self.cpuacct {
            let dir = self.dir(index, rel);
            for (file, key) in [
                ("cpuacct.usage", "usage_usec"),
                ("cpuacct.usage_user", "user_usec"),
                ("cpuacct.usage_sys", "system_usec"),
            ] {
                let path = dir.join(file);
                if path.exists() {
                    let nanos: u64 = read_text(&path)?.trim().parse().unwrap_or(0);
                    stat.insert(key.to_string(), nanos / 1000);
                }
            }
        }
        Ok(stat)
    }

    fn remove(&self, rel: &str) -> anyhow::Result<()> {
        check_rel(rel)?;
        let mut first_err = None;
        for (index, hierarchy) in self.hierarchies.iter().enumerate() {
            if let Err(err) =
                remove_tree(&self.dir(index, rel), &hierarchy.parent, CgroupVersion::V1)
            {
                first_err.get_or_insert(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn paths(&self, rel: &str) -> Vec<PathBuf> {
        (0..self.hierarchies.len())
            .map(|i| self.dir(i, rel))
            .collect()
    }

    fn root_parents(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.parent.clone()).collect()
    }

    fn grant_rt_runtime(&self, rel: &str, budgets_us: &[u64]) -> anyhow::Result<()> {
        self.must_exist(rel)?;
        let Some(cpu) = self.cpu else {
            return Ok(());
        };
        let hierarchy = &self.hierarchies[cpu];
        // Bottom-up while the budget is 0; each entry says if it is the run
        // root or above it.
        let mut chain = Vec::new();
        let mut at = Some(self.dir(cpu, rel));
        while let Some(dir) = at {
            let knob = dir.join(RT_KNOB);
            match read_text(&knob) {
                Ok(text) if text.trim() == "0" => {}
                // No RT group scheduling (no knob), or a budget already.
                _ => break,
            }
            let at_or_above_root = !dir.starts_with(&hierarchy.root) || dir == hierarchy.root;
            chain.push((knob, at_or_above_root));
            at = dir
                .parent()
                .filter(|p| p.starts_with(&hierarchy.mount))
                .map(Path::to_path_buf);
        }
        for (knob, at_or_above_root) in chain.iter().rev() {
            let budgets = if *at_or_above_root {
                RT_ROOT_BUDGETS_US
            } else {
                budgets_us
            };
            write_first_accepted(knob, budgets)?;
        }
        Ok(())
    }
}

/// The real-time budget knob of the v1 cpu controller.
const RT_KNOB: &str = "cpu.rt_runtime_us";

/// Writes the first of `budgets` the kernel accepts into `knob`.
fn write_first_accepted(knob: &Path, budgets: &[u64]) -> anyhow::Result<()> {
    let mut last_err = None;
    for budget in budgets {
        match write_value(knob, &budget.to_string()) {
            Ok(()) => return Ok(()),
            Err(e) => last_err = Some(e),
        }
    }
    let why = last_err.map_or("no budget given".to_string(), |e| e.to_string());
    Err(RunqError::environment(format!(
        "giving {} a real-time budget (tried {budgets:?} us): {why}; real-time tasks need \
         one, and other cgroups may use up the parent's (see cpu.rt_runtime_us of the \
         parent and its children)",
        knob.display()
    )))
}

/// Adds "creating cgroup X" context without hiding the error kind.
trait RelContext<T> {
    fn with_context_rel(self, rel: &str, action: &str) -> anyhow::Result<T>;
}

impl<T> RelContext<T> for anyhow::Result<T> {
    fn with_context_rel(self, rel: &str, action: &str) -> anyhow::Result<T> {
        anyhow::Context::with_context(self, || format!("{action} cgroup {rel:?}"))
    }
}
