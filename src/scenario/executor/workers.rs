//! Spawning a batch of workers into its cgroup (parked, moved, pinned, then
//! started) and stopping batches into report entries.
//!
//! Separate because the order of spawning is what makes a batch's workers
//! land in the right cgroup with the right masks (a v1 cpuset resets masks
//! on attach), and both cgroup creation and the `spawn` op rely on it.

use std::time::Instant;

use anyhow::Context;
use rand::RngCore;

use super::batch::{Batch, LiveWork};
use super::{Executor, StepResult};
use crate::scenario::dsl::WorkSpec;
use crate::scenario::resolve::resolve_affinity;
use crate::scenario::validate::workload_config;
use crate::topology::Topology;
use crate::workload::{AffinityIntent, SchedPolicy, WorkloadHandle};

impl Executor<'_> {
    /// Spawns `works` parked, moves them into `cgroup`, pins, starts.
    pub(super) fn spawn_batch(
        &mut self,
        cgroup: &str,
        label: String,
        works: &[WorkSpec],
    ) -> anyhow::Result<()> {
        let allowed = self.allowed(cgroup);
        let total: usize = works.iter().map(|w| w.workers).sum();
        let mut batch = Batch {
            cgroup: cgroup.to_owned(),
            label,
            works: Vec::new(),
            run_start: self.run_start,
            started: Instant::now(),
            samples: Vec::new(),
            affinity: vec![None; total],
            pinned: vec![false; total],
            weight: self.weight_of(cgroup),
            cpus_bound: None,
            iterations_at_step_start: 0,
        };
        batch.cpus_bound = self
            .restricted(cgroup)
            .map(|cpus| cpus.into_iter().collect());
        for spec in works {
            let config = workload_config(spec, self.rng.next_u64());
            let handle = WorkloadHandle::spawn(&config)
                .with_context(|| format!("spawning {} workers in {cgroup}", spec.work.name()))?;
            // Owned by the batch at once so an error below still reaps it.
            batch.works.push(LiveWork {
                spec: spec.clone(),
                handle,
            });
            let w = batch.works.len() - 1;
            let work = &batch.works[w];
            if matches!(
                spec.policy,
                SchedPolicy::Fifo(_) | SchedPolicy::RoundRobin(_)
            ) {
                self.manager()?
                    .backend()
                    .grant_rt_runtime(cgroup, crate::cgroup::RT_CGROUP_BUDGETS_US)?;
            }
            self.manager()?
                .backend()
                .move_procs(cgroup, &work.handle.process_pids())
                .with_context(|| format!("moving {} workers into {cgroup}", spec.work.name()))?;
            // After the move: a v1 cpuset resets the mask on attach.
            let masks = apply_affinity(
                &work.handle,
                &spec.affinity,
                spec.workers,
                &allowed,
                &self.topology,
                &mut *self.rng,
            )
            .with_context(|| format!("pinning {} workers in {cgroup}", spec.work.name()))?;
            batch.record_masks(w, masks);
        }
        for work in &mut batch.works {
            work.handle.start()?;
        }
        batch.started = Instant::now();
        self.batches.push(batch);
        Ok(())
    }

    /// Stops the batches of `cgroup` (and of its children if `nested`).
    pub(super) fn stop_batches(
        &mut self,
        cgroup: &str,
        nested: bool,
        result: Option<&mut StepResult>,
    ) {
        let prefix = format!("{cgroup}/");
        let (stop, keep): (Vec<Batch>, Vec<Batch>) = std::mem::take(&mut self.batches)
            .into_iter()
            .partition(|b| b.cgroup == cgroup || (nested && b.cgroup.starts_with(&prefix)));
        self.batches = keep;
        let mut collected = Vec::new();
        for batch in stop {
            self.observe_before_stop(&batch);
            let run = batch.finish();
            collected.push(run.clone());
            self.finished.push(run);
        }
        if let Some(result) = result {
            result.collected.extend(collected);
        }
    }

    pub(super) fn stop_everything(&mut self) {
        for batch in std::mem::take(&mut self.batches) {
            self.observe_before_stop(&batch);
            self.finished.push(batch.finish());
        }
    }
}

/// Pins the workers of one handle; returns the masks given (None: left).
pub(super) fn apply_affinity(
    handle: &WorkloadHandle,
    intent: &AffinityIntent,
    workers: usize,
    allowed: &[usize],
    topo: &Topology,
    rng: &mut dyn RngCore,
) -> anyhow::Result<Option<Vec<Vec<usize>>>> {
    let masks = resolve_affinity(intent, workers, allowed, topo, rng)
        .map_err(|m| anyhow::anyhow!("{m}"))?;
    if let Some(masks) = &masks {
        for (worker, mask) in masks.iter().enumerate() {
            handle.set_affinity(worker, mask)?;
        }
    }
    Ok(masks)
}
