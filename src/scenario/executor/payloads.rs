//! The scenario's payloads (real programs run beside the workers): started
//! in their cgroups, ticked from the hold loop, stopped and reported.
//!
//! Separate because payloads have their own lifecycle: they outlive steps
//! but not a quiescent boundary, and stop before the workers at the end.

use std::time::Duration;

use anyhow::Context;

use super::Executor;
use crate::workload::payload::PayloadHandle;

impl Executor<'_> {
    /// Starts every payload in its cgroup (the run root when it names none).
    pub(super) fn start_payloads(
        &mut self,
        specs: &[crate::workload::payload::PayloadSpec],
    ) -> anyhow::Result<()> {
        for spec in specs {
            let rel = spec.cgroup.clone().unwrap_or_default();
            let handle = PayloadHandle::spawn_in(spec, self.manager()?.backend(), &rel)
                .with_context(|| format!("starting payload {}", spec.name))?;
            self.payloads.push(handle);
        }
        Ok(())
    }

    /// Lets each payload make progress: drains its output, samples its tree.
    pub(super) fn tick_payloads(&mut self) {
        for payload in &mut self.payloads {
            payload.tick(Duration::ZERO);
        }
    }

    /// Reports every payload: finished ones as they ended, running ones
    /// after stopping them.
    pub(super) fn collect_payloads(&mut self) {
        for payload in std::mem::take(&mut self.payloads) {
            self.payload_reports.push(payload.stop_and_collect());
        }
    }
}
