//! [`Batch`]: the workers spawned together (a cgroup's works, or one
//! `spawn` op), which share a lifetime and become one `CgroupRun` of the
//! report.
//!
//! Separate because a batch's bookkeeping (progress samples, the masks its
//! workers were pinned to, the CPUs its cgroups allowed) and turning it into
//! a report entry need nothing of the executor around it.

use std::collections::BTreeSet;
use std::time::Instant;

use super::ms_since;
use crate::check::{CgroupRun, ProgressSample, WorkerSetup};
use crate::scenario::dsl::WorkSpec;
use crate::topology::Topology;
use crate::workload::{WorkerReport, WorkloadHandle};

pub(super) struct LiveWork {
    pub(super) spec: WorkSpec,
    pub(super) handle: WorkloadHandle,
}

pub(super) struct Batch {
    pub(super) cgroup: String,
    pub(super) label: String,
    pub(super) works: Vec<LiveWork>,
    /// The run's start: samples and setups use ms since then.
    pub(super) run_start: Instant,
    pub(super) started: Instant,
    pub(super) samples: Vec<ProgressSample>,
    /// Per worker: union of the masks it was pinned to, `None` once it was
    /// unpinned or its cgroup's cpuset changed (a v1 cpuset resets masks).
    pub(super) affinity: Vec<Option<BTreeSet<usize>>>,
    pub(super) pinned: Vec<bool>,
    pub(super) weight: Option<u32>,
    /// Union of every CPU set the batch's cgroups allowed while it ran
    /// (`None`: never restricted).
    pub(super) cpus_bound: Option<BTreeSet<usize>>,
    pub(super) iterations_at_step_start: u64,
}

impl Batch {
    pub(super) fn worker_pids(&self) -> Vec<i32> {
        self.works
            .iter()
            .flat_map(|w| w.handle.worker_pids())
            .collect()
    }

    pub(super) fn process_pids(&self) -> Vec<i32> {
        self.works
            .iter()
            .flat_map(|w| w.handle.process_pids())
            .collect()
    }

    pub(super) fn iterations(&self) -> Vec<u64> {
        self.works
            .iter()
            .flat_map(|w| w.handle.snapshot_iterations())
            .collect()
    }

    pub(super) fn sample(&mut self) {
        let iterations = self.iterations();
        self.samples.push(ProgressSample {
            at_ms: ms_since(self.run_start),
            iterations,
        });
    }

    /// Index of the first worker of work `w` within the batch.
    fn offset(&self, w: usize) -> usize {
        self.works[..w].iter().map(|x| x.spec.workers).sum()
    }

    /// Records masks given to the workers of work `w`.
    pub(super) fn record_masks(&mut self, w: usize, masks: Option<Vec<Vec<usize>>>) {
        let offset = self.offset(w);
        let count = self.works[w].spec.workers;
        for i in 0..count {
            let slot = offset + i;
            match &masks {
                Some(masks) => {
                    let mask = &masks[i % masks.len()];
                    if self.pinned[slot] {
                        if let Some(bound) = &mut self.affinity[slot] {
                            bound.extend(mask.iter().copied());
                        }
                    } else {
                        self.pinned[slot] = true;
                        self.affinity[slot] = Some(mask.iter().copied().collect());
                    }
                }
                None => {
                    if self.pinned[slot] {
                        self.affinity[slot] = None;
                    }
                }
            }
        }
    }

    /// The kernel may have reset every mask (cpuset change or move).
    pub(super) fn forget_masks(&mut self) {
        for slot in 0..self.affinity.len() {
            self.affinity[slot] = None;
        }
    }

    /// Adds the CPUs a cpuset change or move lets the workers reach from
    /// now on. `cpus_bound == None` means "any CPU" and stays so: workers
    /// that ran unrestricted may have used any CPU before a later narrowing.
    pub(super) fn widen_bound(&mut self, cpus: Option<&Vec<usize>>, topo: &Topology) {
        if let Some(bound) = &mut self.cpus_bound {
            bound.extend(cpus.cloned().unwrap_or_else(|| topo.cpu_ids()));
        }
    }

    /// Stops every worker and turns the batch into a report entry.
    pub(super) fn finish(mut self) -> CgroupRun {
        self.sample();
        let run_ms = ms_since(self.started);
        let started_ms = self.started.duration_since(self.run_start).as_secs_f64() * 1e3;
        let stopped_ms = ms_since(self.run_start);
        let mut workers: Vec<WorkerReport> = Vec::new();
        let mut setups = Vec::new();
        let mut slot = 0;
        for work in self.works {
            let reports = work.handle.stop_and_collect();
            for _ in 0..reports.len() {
                let affinity = self
                    .affinity
                    .get(slot)
                    .cloned()
                    .flatten()
                    .map(|b| b.into_iter().collect());
                let mut setup =
                    WorkerSetup::new(work.spec.policy.clone(), work.spec.nice, affinity);
                setup.started_ms = Some(started_ms);
                setup.stopped_ms = Some(stopped_ms);
                setups.push(setup);
                slot += 1;
            }
            workers.extend(reports);
        }
        CgroupRun {
            name: self.label,
            cpuset: self.cpus_bound.map(|b| b.into_iter().collect()),
            weight: self.weight.map(u64::from),
            workers,
            setups,
            samples: self.samples,
            run_ms,
        }
    }
}
