//! Applying one [`Op`] to the live run: cgroups added or removed, cpusets
//! written, cleared or swapped, works spawned or stopped, workers re-pinned
//! or moved, snapshots captured.
//!
//! Separate because each op must keep the batches' records (affinity masks,
//! CPU bounds, weights) true to what the kernel now enforces; that
//! bookkeeping is the whole of this file.

use anyhow::Context;

use super::workers::apply_affinity;
use super::{Executor, StepResult};
use crate::scenario::dsl::Op;
use crate::scenario::resolve::resolve_cpuset;
use crate::topology::format_cpu_list;
use crate::workload::AffinityIntent;

impl Executor<'_> {
    /// Applies one op (at a step's start, and again every `every` of a loop
    /// hold).
    pub(super) fn apply(&mut self, op: &Op, result: &mut StepResult) -> anyhow::Result<()> {
        match op {
            Op::AddCgroup { cgroup } => {
                let def = self
                    .declared(cgroup)
                    .ok_or_else(|| anyhow::anyhow!("add_cgroup: {cgroup} is not declared"))?;
                self.add_cgroup(def, true)
            }
            Op::RemoveCgroup { cgroup } => self.remove_cgroup(cgroup, result),
            Op::SetCpuset { cgroup, cpuset } => {
                let cpus = resolve_cpuset(cpuset, &self.topology)
                    .map_err(|m| anyhow::anyhow!("set_cpuset {cgroup}: {m}"))?;
                self.write_cpuset(cgroup, Some(cpus))
            }
            Op::ClearCpuset { cgroup } => self.write_cpuset(cgroup, None),
            Op::SwapCpusets { a, b } => {
                let cpus_a = self.cgroups.get(a).and_then(|c| c.cpus.clone());
                let cpus_b = self.cgroups.get(b).and_then(|c| c.cpus.clone());
                self.write_cpuset(a, cpus_b)?;
                self.write_cpuset(b, cpus_a)
            }
            Op::Spawn { cgroup, works } => {
                let label = format!("{cgroup}@step{}", self.step_index);
                self.spawn_batch(cgroup, label, works)
            }
            Op::Stop { cgroup } => {
                self.stop_batches(cgroup, false, Some(result));
                Ok(())
            }
            Op::SetAffinity { cgroup, affinity } => self.set_affinity(cgroup, affinity),
            Op::MoveTasks { from, to } => self.move_tasks(from, to),
            Op::CaptureSnapshot { tag } => {
                let targets = self.capture_targets();
                let step = self.step_index + 1;
                if let Some(scheduler) = &mut self.scheduler {
                    scheduler.capture(tag, step);
                }
                self.bridge.capture_scheduler(tag, step, &targets);
                Ok(())
            }
        }
    }

    /// Stops the workers of `cgroup` and its children, then removes them.
    fn remove_cgroup(&mut self, cgroup: &str, result: &mut StepResult) -> anyhow::Result<()> {
        self.stop_batches(cgroup, true, Some(result));
        self.manager()?
            .backend()
            .remove(cgroup)
            .with_context(|| format!("removing cgroup {cgroup}"))?;
        let prefix = format!("{cgroup}/");
        self.cgroups
            .retain(|n, _| n != cgroup && !n.starts_with(&prefix));
        Ok(())
    }

    /// Re-pins every live worker of `cgroup`; `inherit` puts them back on
    /// every CPU.
    fn set_affinity(&mut self, cgroup: &str, affinity: &AffinityIntent) -> anyhow::Result<()> {
        let allowed = self.allowed(cgroup);
        let topo = &self.topology;
        for batch in self.batches.iter_mut().filter(|b| b.cgroup == cgroup) {
            for w in 0..batch.works.len() {
                let work = &batch.works[w];
                let masks = apply_affinity(
                    &work.handle,
                    affinity,
                    work.spec.workers,
                    &allowed,
                    topo,
                    &mut *self.rng,
                )
                .with_context(|| format!("set_affinity on {cgroup}"))?;
                if masks.is_none() {
                    // Inherit: back to every CPU the cgroup allows.
                    for i in 0..work.spec.workers {
                        work.handle.set_affinity(i, &topo.cpu_ids())?;
                    }
                }
                batch.record_masks(w, masks);
            }
        }
        Ok(())
    }

    /// Moves every live worker of `from` into `to`; their batches then
    /// belong to `to` (bound widened, pinned masks forgotten, weight kept
    /// only when both cgroups have the same).
    fn move_tasks(&mut self, from: &str, to: &str) -> anyhow::Result<()> {
        let bound = self.restricted(to);
        let weight = self.weight_of(to);
        let moving: Vec<usize> = (0..self.batches.len())
            .filter(|&i| self.batches[i].cgroup == from)
            .collect();
        for i in moving {
            let pids = self.batches[i].process_pids();
            self.manager()?
                .backend()
                .move_procs(to, &pids)
                .with_context(|| format!("moving the workers of {from} into {to}"))?;
            let batch = &mut self.batches[i];
            batch.cgroup = to.to_owned();
            batch.widen_bound(bound.as_ref(), &self.topology);
            batch.forget_masks();
            if batch.weight != weight {
                batch.weight = None;
            }
        }
        Ok(())
    }

    /// Writes (or clears) a cgroup's cpuset and widens the bound of every
    /// batch that runs under it.
    fn write_cpuset(&mut self, cgroup: &str, cpus: Option<Vec<usize>>) -> anyhow::Result<()> {
        {
            let backend = self.manager()?.backend();
            match &cpus {
                Some(cpus) => backend.set_cpuset(cgroup, cpus, None).with_context(|| {
                    format!(
                        "setting the cpuset of {cgroup} to {}",
                        format_cpu_list(cpus)
                    )
                })?,
                None => backend
                    .clear_cpuset(cgroup)
                    .with_context(|| format!("clearing the cpuset of {cgroup}"))?,
            }
        }
        if let Some(live) = self.cgroups.get_mut(cgroup) {
            live.cpus = cpus;
        }
        let topo = self.topology.clone();
        let prefix = format!("{cgroup}/");
        let affected: Vec<usize> = (0..self.batches.len())
            .filter(|&i| {
                let b = &self.batches[i].cgroup;
                b == cgroup || b.starts_with(&prefix)
            })
            .collect();
        for i in affected {
            let bound = self.restricted(&self.batches[i].cgroup.clone());
            self.batches[i].widen_bound(bound.as_ref(), &topo);
            self.batches[i].forget_masks();
        }
        Ok(())
    }
}
