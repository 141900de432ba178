//! The scheduler under test during a run: starting it before anything else
//! exists, watching it from the hold loop (ejections trigger a capture),
//! and showing it which threads are the workers.
//!
//! Separate because the scheduler is optional and its checks touch every
//! phase: keeping them here leaves the phases free of scheduler details.

use super::batch::Batch;
use super::{BoundaryMode, Executor, RunOptions};
use crate::error::RunqError;
use crate::scenario::dsl::Scenario;
use crate::scheduler::{SchedulerRun, EXIT_CAPTURE_TAG};
use crate::workload::SchedPolicy;

/// Starts the scenario's scheduler under test, if it names one, and waits
/// for it to attach. Bad input and a kernel that cannot run it fail here,
/// before any cgroup or worker exists.
pub(super) fn start_scheduler(
    scenario: &Scenario,
    opts: &RunOptions,
) -> anyhow::Result<Option<SchedulerRun>> {
    let Some(spec) = &scenario.scheduler else {
        return Ok(None);
    };
    if opts.boundary_mode == BoundaryMode::Quiescent {
        return Err(RunqError::bad_input(format!(
            "scheduler {}: exploration forks the controller, which cannot share a scheduler \
             under test; remove [scheduler] or use `runq run`",
            spec.binary
        )));
    }
    let pre = crate::scheduler::preflight(spec, &scenario.name)?;
    Ok(Some(SchedulerRun::start(spec, pre)?))
}

/// The worker threads of a batch, each with whether its policy is
/// SCHED_EXT (for schedulers that do not take every task).
fn batch_tids(batch: &Batch) -> Vec<(i32, bool)> {
    batch
        .works
        .iter()
        .flat_map(|w| {
            let ext = w.spec.policy == SchedPolicy::Ext;
            w.handle
                .worker_pids()
                .into_iter()
                .map(move |tid| (tid, ext))
        })
        .collect()
}

impl Executor<'_> {
    /// A last look at a batch's workers while the scheduler runs them.
    pub(super) fn observe_before_stop(&mut self, batch: &Batch) {
        if let Some(scheduler) = &mut self.scheduler {
            scheduler.observe_workers(&batch.label, &batch_tids(batch), true);
        }
    }

    /// One look at the scheduler from the hold loop: on an ejection, a
    /// capture tagged [`EXIT_CAPTURE_TAG`]; then the workers' classes.
    pub(super) fn watch_scheduler(&mut self) {
        let step = self.step_index + 1;
        let Some(scheduler) = &mut self.scheduler else {
            return;
        };
        if scheduler.tick(step) {
            scheduler.capture(EXIT_CAPTURE_TAG, step);
            let targets = self.capture_targets();
            self.bridge
                .capture_scheduler(EXIT_CAPTURE_TAG, step, &targets);
        }
        if let Some(scheduler) = &mut self.scheduler {
            for batch in &self.batches {
                scheduler.observe_workers(&batch.label, &batch_tids(batch), false);
            }
        }
    }
}
