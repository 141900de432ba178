//! `runq compare A.json B.json`: per metric, A's and B's medians, the
//! change, a bootstrap confidence interval of the change, a Mann-Whitney p
//! value and a verdict; warnings when the two were measured under
//! different conditions.
//!
//! # Verdicts
//! - `not enough runs`: with these run counts even a complete separation
//!   of A and B could not reach `p < alpha` ([`min_p_value`]); nothing is
//!   guessed.
//! - `regressed` / `improved`: `p < alpha` and the median moved the worse
//!   / better way (the metric's [`Direction`]) by more than
//!   `max_regression` (relative; a change from a median of 0 counts as
//!   beyond any bound).
//! - `unchanged`: otherwise (a significant move within the bound says so
//!   in its note).
//! - `context` metrics (host noise) are shown, never judged; a metric only
//!   one side has is `missing`.
//!
//! Each metric is tested on its own at `alpha`, without a correction for
//! the number of metrics: with 30 metrics at 0.01 about one comparison in
//! four of identical setups flags something by chance before the bound
//! is applied. `max_regression` is what keeps that from becoming noise.
//! The exit code is 1 when any metric regressed, else 0.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::load::Document;
use super::metrics::Direction;
use super::repeat::{figure, metric_series, MetricSeries};
use super::stats::{bootstrap_change, mann_whitney, median, min_p_value, Change, Summary};
use crate::error::{EXIT_CHECK_FAILED, EXIT_OK};

/// Bumped whenever a field of [`Comparison`] changes meaning or
/// disappears.
pub const COMPARISON_SCHEMA_VERSION: u32 = 1;

/// How `compare` judges.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CompareOptions {
    /// Significance level of the rank test; the interval is at `1 - alpha`.
    pub alpha: f64,
    /// Largest relative change the worse way that is not a regression
    /// (0.05 = 5%).
    pub max_regression: f64,
    /// Seed of the bootstrap resampling (each metric mixes in its name).
    pub seed: u64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            alpha: 0.01,
            max_regression: 0.05,
            seed: 0x5eed,
        }
    }
}

/// A metric's verdict.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Regressed,
    Improved,
    Unchanged,
    NotEnoughRuns,
    Context,
    Missing,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Regressed => "regressed",
            Verdict::Improved => "improved",
            Verdict::Unchanged => "unchanged",
            Verdict::NotEnoughRuns => "not enough runs",
            Verdict::Context => "context",
            Verdict::Missing => "missing",
        }
    }
}

/// One metric compared.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MetricComparison {
    pub name: String,
    pub unit: String,
    pub direction: Direction,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub a_summary: Option<Summary>,
    pub b_summary: Option<Summary>,
    /// B's median against A's.
    pub change: Option<Change>,
    /// Bootstrap interval of the change at `1 - alpha`.
    pub interval: Option<(f64, f64)>,
    pub p_value: Option<f64>,
    /// The p value is exact (else the normal approximation).
    pub exact: Option<bool>,
    pub verdict: Verdict,
    pub note: String,
}

/// One side of a comparison.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Side {
    pub label: String,
    pub scenario: String,
    pub runs: usize,
}

/// The result of `runq compare` (written by `--json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Comparison {
    pub schema_version: u32,
    pub a: Side,
    pub b: Side,
    pub options: CompareOptions,
    /// Differences in conditions that move the numbers.
    pub warnings: Vec<String>,
    pub metrics: Vec<MetricComparison>,
    pub regressed: Vec<String>,
    pub improved: Vec<String>,
    pub exit_code: i32,
}

/// FNV-1a of a name, to give each metric its own bootstrap stream.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Fewest runs per side for which a verdict at `alpha` is possible.
pub fn runs_needed(alpha: f64) -> usize {
    (1..=1000)
        .find(|&n| min_p_value(n, n) < alpha)
        .unwrap_or(1000)
}

fn judge(
    name: &str,
    a: Option<&MetricSeries>,
    b: Option<&MetricSeries>,
    opts: &CompareOptions,
) -> MetricComparison {
    let template = a.or(b).expect("a metric of one side at least");
    let values = |s: Option<&MetricSeries>| s.map(MetricSeries::present).unwrap_or_default();
    judge_values(
        name,
        &template.unit,
        template.direction,
        values(a),
        values(b),
        opts,
    )
}

/// The verdict on one metric from A's and B's values (see the module
/// docs).
pub fn judge_values(
    name: &str,
    unit: &str,
    direction: Direction,
    av: Vec<f64>,
    bv: Vec<f64>,
    opts: &CompareOptions,
) -> MetricComparison {
    let mut out = MetricComparison {
        name: name.to_string(),
        unit: unit.to_string(),
        direction,
        a_summary: Summary::of(&av),
        b_summary: Summary::of(&bv),
        change: None,
        interval: None,
        p_value: None,
        exact: None,
        verdict: Verdict::Unchanged,
        note: String::new(),
        a: av,
        b: bv,
    };
    let (na, nb) = (out.a.len(), out.b.len());
    if na == 0 || nb == 0 {
        out.verdict = Verdict::Missing;
        out.note = format!("only in {}", if na == 0 { "B" } else { "A" });
        return out;
    }
    let change = Change::between(median(&out.a), median(&out.b));
    out.change = Some(change);
    if out.direction == Direction::Context {
        out.verdict = Verdict::Context;
        return out;
    }
    if min_p_value(na, nb) >= opts.alpha {
        out.verdict = Verdict::NotEnoughRuns;
        out.note = format!(
            "{na} vs {nb} runs cannot reach p < {}; run at least {} each",
            opts.alpha,
            runs_needed(opts.alpha)
        );
        return out;
    }
    let test = mann_whitney(&out.a, &out.b).expect("both sides have values");
    out.p_value = Some(test.p_value);
    out.exact = Some(test.exact);
    out.interval = bootstrap_change(&out.a, &out.b, 1.0 - opts.alpha, opts.seed ^ fnv1a(name));
    let worse = match out.direction {
        Direction::HigherIsBetter => change.value() < 0.0,
        _ => change.value() > 0.0,
    };
    let beyond = match change {
        Change::Relative(v) => v.abs() > opts.max_regression,
        Change::Absolute(v) => v != 0.0,
    };
    let significant = test.p_value < opts.alpha;
    out.verdict = match (significant, beyond, worse) {
        (true, true, true) => Verdict::Regressed,
        (true, true, false) => Verdict::Improved,
        _ => Verdict::Unchanged,
    };
    if significant && !beyond {
        out.note = format!("significant, within {:.0}%", opts.max_regression * 100.0);
    }
    out
}

/// What differs between the conditions of A and B.
fn warnings(a: &Document, b: &Document) -> Vec<String> {
    let mut out = Vec::new();
    let (ra, rb) = (&a.runs()[0], &b.runs()[0]);
    if a.scenario() != b.scenario() {
        out.push(format!(
            "different scenarios: A ran {}, B ran {}",
            a.scenario(),
            b.scenario()
        ));
    }
    if ra.topology.spec != rb.topology.spec {
        out.push(format!(
            "topology: A {} vs B {}",
            ra.topology.spec, rb.topology.spec
        ));
    }
    for d in ra.host.differences(&rb.host) {
        out.push(format!("host context, {}: A {} vs B {}", d.field, d.a, d.b));
    }
    let duration =
        |d: &Document| median(&d.runs().iter().map(|r| r.duration_ms).collect::<Vec<_>>());
    let (da, db) = (duration(a), duration(b));
    if (da - db).abs() > 0.1 * da.max(db) {
        out.push(format!(
            "run length: A {:.2} s vs B {:.2} s (rates and gaps depend on it)",
            da / 1e3,
            db / 1e3
        ));
    }
    for (side, d) in [("A", a), ("B", b)] {
        let busy: Vec<f64> = d
            .runs()
            .iter()
            .filter_map(|r| r.noise.as_ref().filter(|n| n.busy).map(|n| n.foreign_share))
            .collect();
        if !busy.is_empty() {
            out.push(format!(
                "{side}: {} of {} runs on a busy host (others took up to {:.0}% of the run's CPUs)",
                busy.len(),
                d.runs().len(),
                busy.iter().copied().fold(0.0, f64::max) * 100.0
            ));
        }
    }
    out
}

/// Compares B against A.
pub fn compare(
    a: &Document,
    a_label: &str,
    b: &Document,
    b_label: &str,
    opts: &CompareOptions,
) -> Comparison {
    let (ma, mb) = (metric_series(a.runs()), metric_series(b.runs()));
    let mut names: Vec<&str> = ma.iter().map(|m| m.name.as_str()).collect();
    for m in &mb {
        if !names.contains(&m.name.as_str()) {
            names.push(&m.name);
        }
    }
    let metrics: Vec<MetricComparison> = names
        .iter()
        .map(|name| {
            judge(
                name,
                ma.iter().find(|m| m.name == *name),
                mb.iter().find(|m| m.name == *name),
                opts,
            )
        })
        .collect();
    let with = |v: Verdict| -> Vec<String> {
        metrics
            .iter()
            .filter(|m| m.verdict == v)
            .map(|m| m.name.clone())
            .collect()
    };
    let regressed = with(Verdict::Regressed);
    let improved = with(Verdict::Improved);
    let mut warnings = warnings(a, b);
    if metrics.iter().any(|m| m.verdict == Verdict::NotEnoughRuns) {
        warnings.push(format!(
            "too few runs for a verdict at alpha {}: A has {}, B has {}; the rank test needs at least {} on each side (runq run --repeat N)",
            opts.alpha,
            a.runs().len(),
            b.runs().len(),
            runs_needed(opts.alpha)
        ));
    }
    Comparison {
        schema_version: COMPARISON_SCHEMA_VERSION,
        a: side(a, a_label),
        b: side(b, b_label),
        options: opts.clone(),
        warnings,
        exit_code: if regressed.is_empty() {
            EXIT_OK
        } else {
            EXIT_CHECK_FAILED
        },
        metrics,
        regressed,
        improved,
    }
}

fn side(d: &Document, label: &str) -> Side {
    Side {
        label: label.to_string(),
        scenario: d.scenario().to_string(),
        runs: d.runs().len(),
    }
}

impl MetricComparison {
    /// The change as text: `+3.1%`, or a plain difference from 0.
    pub fn change_text(&self) -> String {
        change_text(self.change)
    }

    /// The bootstrap interval as text, `-` when there is none.
    pub fn interval_text(&self) -> String {
        interval_text(self)
    }

    /// A's and B's medians as text, `-` for a side without values.
    pub fn median_texts(&self) -> (String, String) {
        let median = |s: &Option<Summary>| s.as_ref().map_or("-".into(), |s| figure(s.median));
        (median(&self.a_summary), median(&self.b_summary))
    }

    /// The p value as text, `-` when no test ran.
    pub fn p_text(&self) -> String {
        self.p_value.map_or("-".into(), |p| format!("{p:.4}"))
    }

    /// The verdict with its note, if any, in parentheses.
    pub fn verdict_text(&self) -> String {
        if self.note.is_empty() {
            self.verdict.label().to_string()
        } else {
            format!("{} ({})", self.verdict.label(), self.note)
        }
    }
}

fn change_text(c: Option<Change>) -> String {
    match c {
        Some(Change::Relative(v)) => format!("{:+.1}%", v * 100.0),
        Some(Change::Absolute(v)) => format!("{:+}", figure(v)),
        None => "-".into(),
    }
}

fn interval_text(m: &MetricComparison) -> String {
    match (m.interval, m.change) {
        (Some((lo, hi)), Some(Change::Relative(_))) => {
            format!("{:+.1}%..{:+.1}%", lo * 100.0, hi * 100.0)
        }
        (Some((lo, hi)), _) => format!("{}..{}", figure(lo), figure(hi)),
        _ => "-".into(),
    }
}

impl Comparison {
    /// The table `runq compare` prints.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "A: {} ({}, {} run{})\nB: {} ({}, {} run{})",
            self.a.label,
            self.a.scenario,
            self.a.runs,
            if self.a.runs == 1 { "" } else { "s" },
            self.b.label,
            self.b.scenario,
            self.b.runs,
            if self.b.runs == 1 { "" } else { "s" }
        );
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let width = self
            .metrics
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(0)
            .max("metric".len());
        let level = format!("{}% CI", figure((1.0 - self.options.alpha) * 100.0));
        let _ = writeln!(
            out,
            "\n  {:width$}  {:>7}  {:>10}  {:>10}  {:>8}  {:>19}  {:>8}  verdict",
            "metric", "unit", "A median", "B median", "change", level, "p"
        );
        for m in &self.metrics {
            let (a_median, b_median) = m.median_texts();
            let _ = writeln!(
                out,
                "{} {:width$}  {:>7}  {:>10}  {:>10}  {:>8}  {:>19}  {:>8}  {}",
                m.direction.arrow(),
                m.name,
                m.unit,
                a_median,
                b_median,
                m.change_text(),
                m.interval_text(),
                m.p_text(),
                m.verdict_text()
            );
        }
        let bound = format!(
            "beyond {:.0}% at alpha {}",
            self.options.max_regression * 100.0,
            self.options.alpha
        );
        let _ = writeln!(
            out,
            "\n{}",
            if self.regressed.is_empty() {
                format!("no metric regressed {bound}")
            } else {
                format!("REGRESSED {bound}: {}", self.regressed.join(", "))
            }
        );
        if !self.improved.is_empty() {
            let _ = writeln!(out, "improved {bound}: {}", self.improved.join(", "));
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a comparison always serializes")
    }
}
