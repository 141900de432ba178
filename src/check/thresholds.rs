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
        // (field, value (None: no bound set), what a valid finite value is, fix)
        type Rule = (&'static str, Option<f64>, fn(f64) -> bool, &'static str);
        let rules: [Rule; 7] = [
            (
                "min_cpu_share",
                Some(self.min_cpu_share),
                |v| (0.0..=1.0).contains(&v),
                "use a fraction of the fair share between 0.0 and 1.0, e.g. 0.2",
            ),
            (
                "max_spread",
                Some(self.max_spread),
                |v| v >= 1.0,
                "use a max/min ratio of at least 1.0, e.g. 3.0",
            ),
            (
                "max_gap_ms",
                Some(self.max_gap_ms),
                |v| v > 0.0,
                "use a positive number of milliseconds, e.g. 250",
            ),
            (
                "max_wake_p99_us",
                self.max_wake_p99_us,
                |v| v > 0.0,
                "use a positive number of microseconds, or leave it out for no bound",
            ),
            (
                "max_migration_ratio",
                self.max_migration_ratio,
                |v| v >= 0.0,
                "use migrations per work unit >= 0, or leave it out for no bound",
            ),
            (
                "max_migrations_per_sec",
                self.max_migrations_per_sec,
                |v| v >= 0.0,
                "use migrations per second >= 0, or leave it out for no bound",
            ),
            (
                "max_share_error",
                self.max_share_error,
                |v| v > 0.0,
                "use a positive fraction of the fair share, e.g. 0.25, or leave it out",
            ),
        ];
        for (field, value, valid, fix) in rules {
            if let Some(v) = value {
                if !(v.is_finite() && valid(v)) {
                    return Err(bad_threshold(field, v, fix));
                }
            }
        }
        self.validate_names()
    }

    /// The names in `max_scx_events` and `disabled` exist.
    fn validate_names(&self) -> anyhow::Result<()> {
        for name in self.max_scx_events.keys() {
            if !name.starts_with("SCX_EV_") {
                return Err(bad_threshold(
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
                return Err(bad_threshold(
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

fn bad_threshold(field: &str, value: impl std::fmt::Display, fix: &str) -> anyhow::Error {
    RunqError::bad_input(format!("thresholds.{field}: {value} is invalid; {fix}"))
}
