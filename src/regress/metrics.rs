//! The fixed set of metrics a run is compared by, each with a unit and a
//! direction, computed from a [`RunReport`].
//!
//! Names: a run-wide metric is its key (`work_units_per_sec`); a cgroup's
//! is `<cgroup>/<key>`; a scheduler event counter is
//! `scheduler/<counter>_per_sec`; host noise is `host/<key>` and is
//! context only (shown, never judged). A metric a run cannot have (wake
//! latencies of pure spinners, a fair share without CPU-bound workers) is
//! absent, not zero.
//!
//! | key | unit | better | what |
//! | --- | --- | --- | --- |
//! | `work_units_per_sec` | units/s | higher | work units per second of each worker's wall time, summed |
//! | `cpu_util` | CPUs | higher | CPU time the workers got per second of the run (cgroup: of its run) |
//! | `cpu_share_of_fair` | x fair | higher | CPU time over fair CPU time (see `check::fairness`), mean over CPU-bound workers |
//! | `worst_cpu_share_of_fair` | x fair | higher | the same, of the worst worker (run-wide only) |
//! | `fairness_spread` | max/min | lower | worst max/min CPU rate within a class of comparable workers |
//! | `longest_gap_ms` | ms | lower | longest stall of a progress counter or a CPU-bound worker's own gap |
//! | `wake_p50_us`, `wake_p99_us` | us | lower | wake/resume latency percentiles, reservoirs pooled by their counts |
//! | `migrations_per_sec` | /s | lower | CPU migrations per second |
//! | `scheduler/<counter>_per_sec` | /s | lower | the scheduler's event counters (fallbacks, errors, ...) when the report has them |
//! | `host/foreign_share` | share | context | CPU time others took on the run's CPUs during holds (see `host::noise`) |
//! | `host/run_delay_ms_per_sec` | ms/s | context | time the workers waited runnable, per second of hold |

use serde::{Deserialize, Serialize};

use crate::check::{pooled_percentile, worker_shares, CheckInput};
use crate::report::RunReport;

/// Which way a metric gets better.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    HigherIsBetter,
    LowerIsBetter,
    /// Describes the conditions, not the scheduler: never a verdict.
    Context,
}

impl Direction {
    /// An arrow for tables: the way that is better.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::HigherIsBetter => "^",
            Direction::LowerIsBetter => "v",
            Direction::Context => "~",
        }
    }
}

/// One metric of one run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MetricValue {
    pub name: String,
    pub unit: String,
    pub direction: Direction,
    pub value: f64,
}

struct Sink(Vec<MetricValue>);

impl Sink {
    fn put(&mut self, name: String, unit: &str, direction: Direction, value: Option<f64>) {
        if let Some(value) = value.filter(|v| v.is_finite()) {
            self.0.push(MetricValue {
                name,
                unit: unit.to_string(),
                direction,
                value,
            });
        }
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Every metric of a run, run-wide ones first, then per cgroup in report
/// order, then scheduler counters and host context.
pub fn metrics_of(report: &RunReport) -> Vec<MetricValue> {
    let input = CheckInput {
        cgroups: report.cgroups.clone(),
        num_cpus: report.topology.num_cpus,
        duration_ms: report.duration_ms,
    };
    let shares = worker_shares(&input);
    let mut out = Sink(Vec::new());
    run_metrics(&mut out, report, &shares);
    for ci in 0..report.cgroups.len() {
        cgroup_metrics(&mut out, report, ci, &shares);
    }
    scheduler_metrics(&mut out, report);
    host_metrics(&mut out, report);
    out.0
}

/// Throughput, CPU use, shares, gaps, wake latencies and migrations over
/// every worker of the run.
fn run_metrics(out: &mut Sink, report: &RunReport, shares: &[crate::check::WorkerShare]) {
    use Direction::*;
    let ratio = |s: &crate::check::WorkerShare| s.cpu_ns / s.fair_ns;
    let seconds = report.duration_ms / 1e3;
    let reported = || {
        report
            .cgroups
            .iter()
            .flat_map(|c| &c.workers)
            .filter(|w| w.completed)
    };
    out.put(
        "work_units_per_sec".into(),
        "units/s",
        HigherIsBetter,
        Some(reported().map(|w| w.rate()).sum()),
    );
    out.put(
        "cpu_util".into(),
        "CPUs",
        HigherIsBetter,
        (seconds > 0.0)
            .then(|| reported().map(|w| w.cpu_time_ns as f64).sum::<f64>() / 1e9 / seconds),
    );
    let all: Vec<f64> = shares.iter().map(ratio).collect();
    out.put(
        "cpu_share_of_fair".into(),
        "x fair",
        HigherIsBetter,
        mean(&all),
    );
    out.put(
        "worst_cpu_share_of_fair".into(),
        "x fair",
        HigherIsBetter,
        all.iter().copied().reduce(f64::min),
    );
    out.put(
        "fairness_spread".into(),
        "max/min",
        LowerIsBetter,
        report.stats.worst_spread,
    );
    out.put(
        "longest_gap_ms".into(),
        "ms",
        LowerIsBetter,
        report.stats.worst_gap_ms,
    );
    let wakes = |pct| pooled_percentile(reported(), pct).map(|ns| ns as f64 / 1e3);
    out.put("wake_p50_us".into(), "us", LowerIsBetter, wakes(50.0));
    out.put("wake_p99_us".into(), "us", LowerIsBetter, wakes(99.0));
    out.put(
        "migrations_per_sec".into(),
        "/s",
        LowerIsBetter,
        (seconds > 0.0).then(|| report.stats.migrations as f64 / seconds),
    );
}

/// What else ran on the host: context, never judged.
fn host_metrics(out: &mut Sink, report: &RunReport) {
    use Direction::*;
    if let Some(n) = &report.noise {
        out.put(
            "host/foreign_share".into(),
            "share",
            Context,
            Some(n.foreign_share),
        );
        out.put(
            "host/run_delay_ms_per_sec".into(),
            "ms/s",
            Context,
            (n.held_ms > 0.0).then(|| n.workers_run_delay_ms / (n.held_ms / 1e3)),
        );
    }
}

fn cgroup_metrics(
    out: &mut Sink,
    report: &RunReport,
    ci: usize,
    shares: &[crate::check::WorkerShare],
) {
    use Direction::*;
    let cg = &report.cgroups[ci];
    let name = |key: &str| format!("{}/{key}", cg.name);
    let reported: Vec<_> = cg.workers.iter().filter(|w| w.completed).collect();
    let seconds = cg.run_ms / 1e3;
    let stats = report.stats.per_cgroup.iter().find(|s| s.name == cg.name);
    out.put(
        name("work_units_per_sec"),
        "units/s",
        HigherIsBetter,
        Some(reported.iter().map(|w| w.rate()).sum()),
    );
    out.put(
        name("cpu_util"),
        "CPUs",
        HigherIsBetter,
        (seconds > 0.0)
            .then(|| reported.iter().map(|w| w.cpu_time_ns as f64).sum::<f64>() / 1e9 / seconds),
    );
    let mine: Vec<f64> = shares
        .iter()
        .filter(|s| s.cgroup == ci)
        .map(|s| s.cpu_ns / s.fair_ns)
        .collect();
    out.put(
        name("cpu_share_of_fair"),
        "x fair",
        HigherIsBetter,
        mean(&mine),
    );
    out.put(
        name("fairness_spread"),
        "max/min",
        LowerIsBetter,
        stats.and_then(|s| s.spread),
    );
    out.put(
        name("longest_gap_ms"),
        "ms",
        LowerIsBetter,
        stats.and_then(|s| s.worst_gap_ms),
    );
    let wakes = |pct| pooled_percentile(reported.iter().copied(), pct).map(|ns| ns as f64 / 1e3);
    out.put(name("wake_p50_us"), "us", LowerIsBetter, wakes(50.0));
    out.put(name("wake_p99_us"), "us", LowerIsBetter, wakes(99.0));
    out.put(
        name("migrations_per_sec"),
        "/s",
        LowerIsBetter,
        (seconds > 0.0)
            .then(|| cg.workers.iter().map(|w| w.migrations).sum::<u64>() as f64 / seconds),
    );
}

/// Event counters of the scheduler under test, per second of the run.
fn scheduler_metrics(out: &mut Sink, report: &RunReport) {
    let seconds = report.duration_ms / 1e3;
    if seconds <= 0.0 {
        return;
    }
    let Ok(value) = serde_json::to_value(report) else {
        return;
    };
    for (name, count) in scheduler_counters(&value) {
        out.put(
            format!("scheduler/{name}_per_sec"),
            "/s",
            Direction::LowerIsBetter,
            Some(count / seconds),
        );
    }
}

/// The scheduler's event counters over the run from a report as JSON
/// (`scheduler.events.total`, a map of counter name to count), sorted by
/// name; empty when the report has no scheduler or no counters.
pub fn scheduler_counters(report: &serde_json::Value) -> Vec<(String, f64)> {
    let Some(total) = report
        .pointer("/scheduler/events/total")
        .and_then(|t| t.as_object())
    else {
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = total
        .iter()
        .filter_map(|(k, v)| v.as_f64().map(|n| (k.clone(), n)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_counters_come_from_the_run_total() {
        let report = serde_json::json!({"scheduler": {"events": {"total": {
            "SCX_EV_SELECT_CPU_FALLBACK": 12, "SCX_EV_BYPASS_DURATION": 3.5, "note": "x"
        }}}});
        assert_eq!(
            scheduler_counters(&report),
            vec![
                ("SCX_EV_BYPASS_DURATION".to_string(), 3.5),
                ("SCX_EV_SELECT_CPU_FALLBACK".to_string(), 12.0)
            ]
        );
        assert!(scheduler_counters(&serde_json::json!({"scheduler": null})).is_empty());
    }
}
