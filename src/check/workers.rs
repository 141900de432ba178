//! What the worker checks derive about each worker before judging it: its
//! allowed CPUs, whether it really reported, whether its work type is
//! CPU-bound, its policy class; plus the wording helpers they share.

use std::collections::BTreeSet;

use super::fairness::{nice_weight, IDLE_WEIGHT};
use super::input::{CgroupRun, CheckInput, PolicyClass, WorkerSetup};
use crate::topology::format_cpu_list;
use crate::workload::{Demand, ExitShape, WorkType, WorkerReport};

/// A worker with what the checks derive about it.
pub(super) struct Entry<'a> {
    pub(super) cgroup: usize,
    pub(super) index: usize,
    pub(super) report: &'a WorkerReport,
    pub(super) setup: WorkerSetup,
    pub(super) label: String,
    /// The CPUs it may run on (affinity ∩ cpuset, or all CPUs).
    pub(super) allowed: BTreeSet<usize>,
    /// It has a real report (not a sentinel).
    pub(super) reported: bool,
    /// Its work type's [`Demand`] is `Cpu`: it has a fair share.
    pub(super) cpu_bound: bool,
    pub(super) class: PolicyClass,
}

impl Entry<'_> {
    pub(super) fn wall_ns(&self, cgroup: &CgroupRun) -> f64 {
        if self.report.wall_time_ns > 0 {
            self.report.wall_time_ns as f64
        } else {
            cgroup.run_ms.max(0.0) * 1e6
        }
    }

    pub(super) fn weight(&self) -> f64 {
        match self.class {
            PolicyClass::Idle => IDLE_WEIGHT,
            _ => nice_weight(self.setup.nice),
        }
    }

    /// CPU time over wall time.
    pub(super) fn cpu_rate(&self, cgroup: &CgroupRun) -> f64 {
        let wall = self.wall_ns(cgroup);
        if wall > 0.0 {
            self.report.cpu_time_ns as f64 / wall
        } else {
            0.0
        }
    }
}

/// A cgroup's declared cpuset when it restricts anything.
pub(super) fn declared_cpuset(cgroup: &CgroupRun) -> Option<BTreeSet<usize>> {
    cgroup
        .cpuset
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().copied().collect())
}

pub(super) fn entries(input: &CheckInput) -> Vec<Entry<'_>> {
    let all: BTreeSet<usize> = (0..input.num_cpus.max(1)).collect();
    let mut out = Vec::new();
    for (ci, cg) in input.cgroups.iter().enumerate() {
        let cpuset = declared_cpuset(cg);
        for (wi, report) in cg.workers.iter().enumerate() {
            let setup = cg.setups.get(wi).cloned().unwrap_or_default();
            let affinity: Option<BTreeSet<usize>> = setup
                .affinity
                .as_ref()
                .filter(|a| !a.is_empty())
                .map(|a| a.iter().copied().collect());
            let allowed = match (&cpuset, &affinity) {
                (Some(c), Some(a)) => {
                    let both: BTreeSet<usize> = c.intersection(a).copied().collect();
                    if both.is_empty() {
                        a.clone()
                    } else {
                        both
                    }
                }
                (Some(c), None) => c.clone(),
                (None, Some(a)) => a.clone(),
                (None, None) => all.clone(),
            };
            let label = format!(
                "{} worker {} (tid {}, {})",
                cg.name, wi, report.tid, report.work_type
            );
            let class = setup.policy_class();
            out.push(Entry {
                cgroup: ci,
                index: wi,
                report,
                cpu_bound: WorkType::demand_of(&report.work_type) == Some(Demand::Cpu),
                reported: report.completed,
                setup,
                label,
                allowed,
                class,
            });
        }
    }
    out
}

/// Words for an exit shape.
pub fn describe_exit(exit: &ExitShape) -> String {
    match exit {
        ExitShape::Exited(code) => format!("exited with code {code}"),
        ExitShape::Signaled(sig) => {
            let name = nix::sys::signal::Signal::try_from(*sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| "unknown".to_string());
            format!("killed by signal {sig} ({name})")
        }
        ExitShape::TimedOut => "timed out: no report before the collect deadline, killed".into(),
        ExitShape::WaitFailed(msg) => format!("could not be reaped: {msg}"),
        ExitShape::Panicked(msg) => format!("panicked: {msg}"),
    }
}

pub(super) fn unreported_note(entries: &[Entry]) -> Option<String> {
    let n = entries.iter().filter(|e| !e.reported).count();
    (n > 0).then(|| format!("{n} worker(s) without a report left out (see workers_completed)"))
}

pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(super) fn format_set(cpus: &BTreeSet<usize>) -> String {
    if cpus.is_empty() {
        return "none".to_string();
    }
    format_cpu_list(&cpus.iter().copied().collect::<Vec<_>>())
}
