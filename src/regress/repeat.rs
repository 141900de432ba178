//! `runq run SCENARIO --repeat N`: the scenario run N times, each with
//! fresh cgroups and workers and its own recorded seed, gathered in one
//! versioned document ([`RepeatReport`]) with every run's report, the
//! checks' pass counts and a [`Summary`] of every metric.

use std::fmt::Write as _;
use std::io::IsTerminal;

use serde::{Deserialize, Serialize};

use super::metrics::{metrics_of, Direction};
use super::stats::Summary;
use crate::error::{EXIT_CHECK_FAILED, EXIT_ENVIRONMENT, EXIT_OK};
use crate::host::HostContext;
use crate::report::RunReport;
use crate::scenario::{run_scenario, RunOptions, Scenario};

/// Bumped whenever a field of [`RepeatReport`] changes meaning or
/// disappears; readers refuse other versions.
pub const REPEAT_SCHEMA_VERSION: u32 = 1;

/// The `kind` field that tells a repeated run's document from a single
/// run's report.
pub const REPEAT_KIND: &str = "repeat";

/// How often one check passed over the runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CheckTally {
    pub name: String,
    pub passed: usize,
    pub failed: usize,
    /// Skipped runs (counted in `passed` too, as a skipped check passes).
    pub skipped: usize,
    /// Failures while the host was busy (see `check::host`).
    pub failed_on_busy_host: usize,
}

/// One metric over the runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MetricSeries {
    pub name: String,
    pub unit: String,
    pub direction: Direction,
    /// `values[i]` is run i's value; `None` when that run did not have it.
    pub values: Vec<Option<f64>>,
    pub summary: Option<Summary>,
}

impl MetricSeries {
    /// The values the runs had.
    pub fn present(&self) -> Vec<f64> {
        self.values.iter().flatten().copied().collect()
    }
}

/// The document `runq run --repeat N --json FILE` writes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RepeatReport {
    pub schema_version: u32,
    /// Always [`REPEAT_KIND`].
    pub kind: String,
    pub scenario: String,
    pub repeat: usize,
    /// `seeds[i]` is run i's seed (`runq run --seed` reruns it).
    pub seeds: Vec<u64>,
    /// The machine (of the first run).
    pub host: HostContext,
    pub runs_passed: usize,
    pub runs_failed_on_busy_host: usize,
    pub checks: Vec<CheckTally>,
    pub metrics: Vec<MetricSeries>,
    pub runs: Vec<RunReport>,
}

/// Every metric over `runs`, in first-seen order.
pub fn metric_series(runs: &[RunReport]) -> Vec<MetricSeries> {
    let mut series: Vec<MetricSeries> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        for m in metrics_of(run) {
            let slot = match series.iter().position(|s| s.name == m.name) {
                Some(p) => p,
                None => {
                    series.push(MetricSeries {
                        name: m.name.clone(),
                        unit: m.unit.clone(),
                        direction: m.direction,
                        values: vec![None; runs.len()],
                        summary: None,
                    });
                    series.len() - 1
                }
            };
            series[slot].values[i] = Some(m.value);
        }
    }
    for s in &mut series {
        s.summary = Summary::of(&s.present());
    }
    series
}

fn tally(runs: &[RunReport]) -> Vec<CheckTally> {
    let mut out: Vec<CheckTally> = Vec::new();
    for c in runs.iter().flat_map(|r| &r.checks.checks) {
        let slot = match out.iter().position(|t| t.name == c.name) {
            Some(p) => p,
            None => {
                out.push(CheckTally {
                    name: c.name.clone(),
                    passed: 0,
                    failed: 0,
                    skipped: 0,
                    failed_on_busy_host: 0,
                });
                out.len() - 1
            }
        };
        let t = &mut out[slot];
        if c.passed {
            t.passed += 1;
        } else {
            t.failed += 1;
        }
        t.skipped += usize::from(c.skipped);
        t.failed_on_busy_host += usize::from(!c.passed && c.host_busy.is_some());
    }
    out
}

impl RepeatReport {
    /// Gathers finished runs of one scenario.
    pub fn from_runs(runs: Vec<RunReport>) -> RepeatReport {
        RepeatReport {
            schema_version: REPEAT_SCHEMA_VERSION,
            kind: REPEAT_KIND.to_string(),
            scenario: runs.first().map(|r| r.scenario.clone()).unwrap_or_default(),
            repeat: runs.len(),
            seeds: runs.iter().map(|r| r.seed).collect(),
            host: runs.first().map(|r| r.host.clone()).unwrap_or_default(),
            runs_passed: runs.iter().filter(|r| r.checks.passed).count(),
            runs_failed_on_busy_host: runs.iter().filter(|r| r.failed_on_busy_host()).count(),
            checks: tally(&runs),
            metrics: metric_series(&runs),
            runs,
        }
    }

    /// 0 when every run passed every check, else 1; with `strict_host`, 3
    /// when every failed run failed only while the host was busy.
    pub fn exit_code(&self, strict_host: bool) -> i32 {
        let failed = self.repeat - self.runs_passed;
        if failed == 0 {
            EXIT_OK
        } else if strict_host && self.runs_failed_on_busy_host == failed {
            EXIT_ENVIRONMENT
        } else {
            EXIT_CHECK_FAILED
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a repeat report always serializes")
    }

    /// Per-check pass counts, then a summary line per metric.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {}: {} runs, {} passed every check{}",
            self.scenario,
            self.repeat,
            self.runs_passed,
            if self.runs_failed_on_busy_host > 0 {
                format!(
                    ", {} failed while the host was busy",
                    self.runs_failed_on_busy_host
                )
            } else {
                String::new()
            }
        );
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            let _ = write!(
                out,
                "  {:width$}  passed {}/{}",
                c.name, c.passed, self.repeat
            );
            if c.skipped > 0 {
                let _ = write!(out, " ({} skipped)", c.skipped);
            }
            if c.failed_on_busy_host > 0 {
                let _ = write!(out, ", {} failure(s) on a busy host", c.failed_on_busy_host);
            }
            out.push('\n');
        }
        out.push_str(&render_metric_table(&self.metrics));
        out
    }
}

fn render_metric_table(metrics: &[MetricSeries]) -> String {
    let mut out = String::new();
    let width = metrics
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(0)
        .max("metric".len());
    let _ = writeln!(
        out,
        "\n  {:width$}  {:>7}  {:>12}  {:>25}  {:>25}  {:>6}",
        "metric", "unit", "median", "quartiles", "min..max", "CV"
    );
    for m in metrics {
        let Some(s) = &m.summary else { continue };
        let _ = writeln!(
            out,
            "{} {:width$}  {:>7}  {:>12}  {:>25}  {:>25}  {:>6}",
            m.direction.arrow(),
            m.name,
            m.unit,
            figure(s.median),
            format!("{}..{}", figure(s.q1), figure(s.q3)),
            format!("{}..{}", figure(s.min), figure(s.max)),
            s.cv.map_or("-".to_string(), |cv| format!("{:.1}%", cv * 100.0))
        );
    }
    let _ = writeln!(
        out,
        "  (^ higher is better, v lower is better, ~ context only)"
    );
    out
}

/// A figure with about four significant digits.
pub fn figure(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}

/// Runs `scenario` `n` times with fresh cgroups and workers. Run i uses
/// seed `opts.seed + i` (a clock seed when none is given); `each` sees
/// every finished run (to print its line). A progress bar over the runs is
/// drawn on stderr when `progress` and stderr is a terminal.
pub fn run_repeated(
    scenario: &Scenario,
    opts: &RunOptions,
    n: usize,
    progress: bool,
    mut each: impl FnMut(usize, &RunReport),
) -> anyhow::Result<RepeatReport> {
    let base = opts.resolved_seed();
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(n as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} run {pos}/{len} {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        let run_opts = RunOptions {
            seed: Some(base.wrapping_add(i as u64)),
            progress: false,
            ..opts.clone()
        };
        let report = run_scenario(scenario, &run_opts)?;
        if let Some(pb) = &bar {
            pb.suspend(|| each(i, &report));
            pb.inc(1);
        } else {
            each(i, &report);
        }
        runs.push(report);
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    Ok(RepeatReport::from_runs(runs))
}
