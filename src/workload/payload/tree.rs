//! A payload's process tree as runq samples it: every descendant seen
//! (walked through `/proc/PID/task/TID/children`), and the members found
//! outside one of the payload's cgroups. Also the end of the tree: killing
//! members that left the process group, and waiting until none is left in
//! the cgroups.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::process::{self, Stat};

/// How often the tree is walked.
pub const TREE_SAMPLE_INTERVAL: Duration = Duration::from_millis(25);

pub(super) struct Tree {
    /// The payload's name, for warnings.
    name: String,
    /// `cgroup.procs` of every cgroup the tree must stay in.
    cgroup_procs: Vec<PathBuf>,
    /// Every member seen, as first seen (the start time tells a reused pid).
    members: BTreeMap<i32, Stat>,
    /// Order in which members were first seen.
    order: Vec<i32>,
    escaped: BTreeMap<i32, String>,
    last_sample: Option<Instant>,
}

impl Tree {
    pub(super) fn new(name: &str, cgroup_procs: &[PathBuf]) -> Tree {
        Tree {
            name: name.to_string(),
            cgroup_procs: cgroup_procs.to_vec(),
            members: BTreeMap::new(),
            order: Vec::new(),
            escaped: BTreeMap::new(),
            last_sample: None,
        }
    }

    /// Walks the tree below `root` (with `root` itself when `with_root`)
    /// and checks cgroup membership, at most every
    /// [`TREE_SAMPLE_INTERVAL`] unless `force`.
    pub(super) fn sample(&mut self, root: i32, with_root: bool, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .last_sample
                .is_some_and(|t| now.duration_since(t) < TREE_SAMPLE_INTERVAL)
        {
            return;
        }
        self.last_sample = Some(now);
        // Walk first, then read the cgroups: a process in the walk was born
        // (inside the cgroups) before the membership lists were read.
        let mut members = process::descendants(root);
        if with_root {
            members.insert(0, root);
        }
        for &pid in &members {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.members.entry(pid) {
                if let Some(stat) = process::stat(pid) {
                    slot.insert(stat);
                    self.order.push(pid);
                }
            }
        }
        let in_cgroups: Vec<HashSet<i32>> = self
            .cgroup_procs
            .iter()
            .map(|procs| read_pids(procs).into_iter().collect())
            .collect();
        for &pid in &members {
            if in_cgroups.iter().all(|set| set.contains(&pid)) || self.escaped.contains_key(&pid) {
                continue;
            }
            // Absent because it just ended (or is a zombie) is not escaping.
            if !process::is_alive(pid) {
                continue;
            }
            let comm = self
                .members
                .get(&pid)
                .map(|s| s.comm.clone())
                .unwrap_or_default();
            tracing::warn!(
                "payload {}: process {pid} ({comm}) is outside its cgroups",
                self.name
            );
            self.escaped.insert(pid, comm);
        }
    }

    /// SIGKILLs members other than `root` still alive (same start time: not
    /// a reused pid), which catches those that left the process group.
    pub(super) fn kill_leftovers(&self, root: i32) {
        for (&pid, seen) in &self.members {
            if pid == root {
                continue;
            }
            if let Some(now) = process::stat(pid) {
                if now.start_ticks == seen.start_ticks && !now.is_ended() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }

    /// Waits until no member (nor `root`) is left in the payload's cgroups
    /// and `root`'s group is empty (killed stragglers take a moment to exit
    /// and be reaped by init), so the caller can remove the cgroups at once.
    pub(super) fn await_gone(&self, root: i32, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let left = self.cgroup_procs.iter().any(|procs| {
                read_pids(procs)
                    .iter()
                    .any(|pid| self.members.contains_key(pid) || *pid == root)
            });
            let group_alive = killpg(Pid::from_raw(root), None).is_ok();
            if !left && !group_alive {
                return;
            }
            if Instant::now() >= end {
                tracing::warn!(
                    "payload {}: processes of its tree outlived the SIGKILL",
                    self.name
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The first member seen.
    pub(super) fn first(&self) -> Option<i32> {
        self.order.first().copied()
    }

    /// Every member seen (pid, command name), in the order first seen.
    pub(super) fn listing(&self) -> Vec<(i32, String)> {
        self.order
            .iter()
            .map(|pid| (*pid, self.members[pid].comm.clone()))
            .collect()
    }

    /// Members seen outside the cgroups (pid, command name).
    pub(super) fn escaped(&self) -> Vec<(i32, String)> {
        self.escaped
            .iter()
            .map(|(pid, comm)| (*pid, comm.clone()))
            .collect()
    }
}

fn read_pids(path: &std::path::Path) -> Vec<i32> {
    process::read_pid_list(path).unwrap_or_default()
}
