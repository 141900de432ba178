//! The steps: each boundary (quiesce for exploration, the hook, validation
//! of a changed plan), each step's ops and hold, and what the step did.
//! Also the views of the live run that hooks and captures see.
//!
//! Separate because the boundary protocol (live or quiescent, revival of
//! cgroups and works afterwards) is the executor's contract with
//! exploration, and is easier to check on its own.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;

use super::batch::Batch;
use super::{
    check_interrupted, ms_since, Boundary, BoundaryMode, Executor, ExecutorHooks, LiveCgroupView,
    StepResult,
};
use crate::scenario::dsl::{CgroupDef, Scenario, Step};
use crate::scenario::validate::validate;
use crate::snapshot::CaptureTargets;

impl Executor<'_> {
    /// Every step, each after its boundary, then the boundary after the
    /// last; hooks may rewrite the steps still to come.
    pub(super) fn run_steps(
        &mut self,
        scenario: &Scenario,
        steps: &mut Vec<Step>,
        hooks: &mut dyn ExecutorHooks,
    ) -> anyhow::Result<()> {
        let mut previous: Option<StepResult> = None;
        let mut index = 0;
        loop {
            self.boundary(scenario, index, steps, previous.as_mut(), hooks)?;
            if index >= steps.len() {
                return Ok(());
            }
            if self.opts.boundary_mode == BoundaryMode::Quiescent && index > 0 {
                self.revive()?;
            }
            previous = Some(self.run_step(index, &steps[index].clone())?);
            index += 1;
        }
    }

    /// The boundary before step `index`: quiesce (exploration), then the
    /// hook, then validate the plan again if the hook changed it.
    fn boundary(
        &mut self,
        scenario: &Scenario,
        index: usize,
        steps: &mut Vec<Step>,
        mut previous: Option<&mut StepResult>,
        hooks: &mut dyn ExecutorHooks,
    ) -> anyhow::Result<()> {
        if self.opts.boundary_mode == BoundaryMode::Quiescent && index > 0 {
            self.quiesce(previous.as_deref_mut())?;
        }
        let before = steps.clone();
        let mut boundary = Boundary {
            index,
            mode: self.opts.boundary_mode,
            live: self.live_views(),
            rng: &mut *self.rng,
            steps,
            previous: previous.as_deref(),
        };
        hooks.at_boundary(&mut boundary)?;
        // A boundary may have waited long (exploration waits for forked
        // timelines there): no new step starts after an interrupt.
        check_interrupted()?;
        if *steps != before {
            let mut check = scenario.clone();
            check.steps = steps.clone();
            validate(&check, &self.topology).context("a hook changed the steps")?;
        }
        Ok(())
    }

    /// One step: its ops, then its hold.
    fn run_step(&mut self, index: usize, step: &Step) -> anyhow::Result<StepResult> {
        self.step_index = index;
        let step_started = Instant::now();
        let mut result = StepResult {
            index,
            ..StepResult::default()
        };
        self.mark_step_start();
        if let Some(scheduler) = &mut self.scheduler {
            scheduler.step_started();
        }
        for op in &step.ops {
            self.apply(op, &mut result)?;
        }
        self.hold(step, &mut result)?;
        if let Some(scheduler) = &mut self.scheduler {
            scheduler.step_finished(index + 1);
        }
        result.elapsed_ms = ms_since(step_started);
        result.iterations = self.step_iterations();
        Ok(result)
    }

    pub(super) fn capture_targets(&self) -> CaptureTargets {
        let mut targets = CaptureTargets::default();
        for batch in &self.batches {
            targets.worker_pids.extend(batch.worker_pids());
        }
        if let Some(manager) = &self.manager {
            for name in self.cgroups.keys() {
                targets.cgroup_dirs.extend(manager.backend().paths(name));
            }
        }
        targets
    }

    fn live_views(&self) -> Vec<LiveCgroupView> {
        let mut views = Vec::new();
        for name in self.cgroups.keys() {
            let batches: Vec<&Batch> = self.batches.iter().filter(|b| &b.cgroup == name).collect();
            views.push(LiveCgroupView {
                cgroup: name.clone(),
                worker_pids: batches.iter().flat_map(|b| b.worker_pids()).collect(),
                process_pids: batches.iter().flat_map(|b| b.process_pids()).collect(),
                paths: self
                    .manager
                    .as_ref()
                    .map(|m| m.backend().paths(name))
                    .unwrap_or_default(),
            });
        }
        views
    }

    fn mark_step_start(&mut self) {
        for batch in &mut self.batches {
            batch.iterations_at_step_start = batch.iterations().iter().sum();
        }
    }

    fn step_iterations(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for batch in &self.batches {
            let now: u64 = batch.iterations().iter().sum();
            *out.entry(batch.cgroup.clone()).or_default() +=
                now.saturating_sub(batch.iterations_at_step_start);
        }
        out
    }

    /// Quiescent boundary: collect every worker, remove every cgroup.
    fn quiesce(&mut self, previous: Option<&mut StepResult>) -> anyhow::Result<()> {
        self.resume.clear();
        // Payloads do not survive a quiescent boundary (their cgroups go).
        self.collect_payloads();
        let mut collected = Vec::new();
        for batch in std::mem::take(&mut self.batches) {
            let specs = batch.works.iter().map(|w| w.spec.clone()).collect();
            self.resume
                .push((batch.cgroup.clone(), batch.label.clone(), specs));
            let run = batch.finish();
            collected.push(run.clone());
            self.finished.push(run);
        }
        if let Some(previous) = previous {
            previous.collected.extend(collected);
        }
        self.close_manager()
    }

    /// After a quiescent boundary: re-create cgroups and re-spawn works.
    fn revive(&mut self) -> anyhow::Result<()> {
        self.open_manager()?;
        let live: Vec<(String, Option<Vec<usize>>, CgroupDef)> = self
            .cgroups
            .iter()
            .map(|(n, c)| (n.clone(), c.cpus.clone(), c.def.clone()))
            .collect();
        // BTreeMap order puts "a" before "a/b": parents first.
        for (name, cpus, def) in live {
            let backend = self.manager()?.backend();
            backend.create(&name)?;
            if let Some(cpus) = &cpus {
                backend.set_cpuset(&name, cpus, None)?;
            }
            if let Some(weight) = def.weight {
                backend.set_weight(&name, weight)?;
            }
        }
        for (cgroup, label, specs) in std::mem::take(&mut self.resume) {
            self.spawn_batch(&cgroup, label, &specs)?;
        }
        Ok(())
    }
}
