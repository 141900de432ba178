//! The limits the checks apply ([`Thresholds`]) and their validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CHECK_NAMES, SCHEDULER_CHECK_NAMES};
use crate::error::RunqError;

/// Limits the checks apply. Every field has a default (see [`Default`]), so
/// a scenario sets only what it changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Least fraction of its fair CPU share a CPU-bound worker must get.
    pub min_cpu_share: f64,
    /// Largest max/min ratio of CPU rates (CPU time / wall time) within one
    /// class of CPU-bound workers in a cgroup.
    pub max_spread: f64,
    /// Longest time a worker's progress may stand still, in milliseconds.
    pub max_gap_ms: f64,
    /// Bound on the p99 wake latency of each cgroup, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wake_p99_us: Option<f64>,
    /// Bound on migrations per work unit of each worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_migration_ratio: Option<f64>,
    /// Bound on migrations per second of wall time of each worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_migrations_per_sec: Option<f64>,
    /// Least number of work units every worker must complete.
    pub min_work_units: u64,
    /// Bound on how far (a fraction, either way) each CPU-bound worker's
    /// CPU time may be from its weighted fair share (`share_accuracy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_share_error: Option<f64>,
    /// Bounds on sched_ext event counters (`root/events`) over the run,
    /// by name, e.g. `SCX_EV_SELECT_CPU_FALLBACK = 1000`
    /// (`scheduler_events`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub max_scx_events: BTreeMap<String, u64>,
    /// Checks reported as skipped (names from [`CHECK_NAMES`]), for
    /// scenarios that break an assumption on purpose (e.g. cpuset swaps).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disabled: Vec<String>,
}

impl Default for Thresholds {
    /// Defaults chosen to pass on a healthy 2-CPU host that also runs other
    /// work, and to fail on a worker stopped for a quarter of a second:
    /// `min_cpu_share` 0.2, `max_spread` 3.0 (three workers on two CPUs
    /// already give 2.0), `max_gap_ms` 250, `min_work_units` 1, no wake
    /// latency or migration bound.
    fn default() -> Self {
        Thresholds {
            min_cpu_share: 0.2,
            max_spread: 3.0,
            max_gap_ms: 250.0,
            max_wake_p99_us: None,
            max_migration_ratio: None,
            max_migrations_per_sec: None,
            min_work_units: 1,
            max_share_error: None,
            max_scx_events: BTreeMap::new(),
            disabled: Vec::new(),
        }
    }
}

impl Thresholds {
    /// Rejects values no run could meet or that make a check meaningless,
    /// naming the field (`thresholds.<field>`) and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        fn bad(field: &str, value: impl std::fmt::Display, fix: &str) -> anyhow::Error {
            RunqError::bad_input(format!("thresholds.{field}: {value} is invalid; {fix}"))
        }
        if !(self.min_cpu_share.is_finite() && (0.0..=1.0).contains(&self.min_cpu_share)) {
            return Err(bad(
                "min_cpu_share",
                self.min_cpu_share,
                "use a fraction of the fair share between 0.0 and 1.0, e.g. 0.2",
            ));
        }
        if !(self.max_spread.is_finite() && self.max_spread >= 1.0) {
            return Err(bad(
                "max_spread",
                self.max_spread,
                "use a max/min ratio of at least 1.0, e.g. 3.0",
            ));
        }
        if !(self.max_gap_ms.is_finite() && self.max_gap_ms > 0.0) {
            return Err(bad(
                "max_gap_ms",
                self.max_gap_ms,
                "use a positive number of milliseconds, e.g. 250",
            ));
        }
        if let Some(v) = self.max_wake_p99_us {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(
                    "max_wake_p99_us",
                    v,
                    "use a positive number of microseconds, or leave it out for no bound",
                ));
            }
        }
        if let Some(v) = self.max_migration_ratio {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(
                    "max_migration_ratio",
                    v,
                    "use migrations per work unit >= 0, or leave it out for no bound",
                ));
            }
        }
        if let Some(v) = self.max_migrations_per_sec {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(
                    "max_migrations_per_sec",
                    v,
                    "use migrations per second >= 0, or leave it out for no bound",
                ));
            }
        }
        if let Some(v) = self.max_share_error {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(
                    "max_share_error",
                    v,
                    "use a positive fraction of the fair share, e.g. 0.25, or leave it out",
                ));
            }
        }
        for name in self.max_scx_events.keys() {
            if !name.starts_with("SCX_EV_") {
                return Err(bad(
                    "max_scx_events",
                    format!("{name:?}"),
                    "name a counter of /sys/kernel/sched_ext/root/events, e.g. \
                     SCX_EV_SELECT_CPU_FALLBACK",
                ));
            }
        }
        let known = || CHECK_NAMES.iter().chain(SCHEDULER_CHECK_NAMES);
        for name in &self.disabled {
            if !known().any(|n| n == name) {
                let names: Vec<&str> = known().copied().collect();
                return Err(bad(
                    "disabled",
                    format!("{name:?}"),
                    &format!("valid check names: {}", names.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn is_disabled(&self, check: &str) -> bool {
        self.disabled.iter().any(|d| d == check)
    }
}
