//! `share_accuracy`: every CPU-bound worker got the CPU time the kernel's
//! weight tables give it (nice and cgroup weights, the model of
//! [`super::fairness`]), within `max_share_error` (a fraction) either way.
//!
//! `not_starved` only asks for `min_cpu_share` (0.2) of the fair share, so a
//! scheduler that ignores nice values and cgroup weights passes it; this
//! check catches one. It runs when `thresholds.max_share_error` is set (the
//! catalog sets it in its nice and weight scenarios).

use super::fairness::{fair_share, FairShare};
use super::input::CheckInput;
use super::outcome::CheckOutcome;
use super::thresholds::Thresholds;
use super::workers::{unreported_note, Entry};

pub(super) const NAME: &str = "share_accuracy";

pub(super) fn check(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    let Some(limit) = t.max_share_error else {
        return CheckOutcome::skipped(NAME, "no max_share_error set");
    };
    let mut offenders = Vec::new();
    let mut lines = Vec::new();
    let mut worst: Option<f64> = None;
    for e in entries.iter().filter(|e| e.reported) {
        let FairShare::Fair {
            share,
            pool_ns,
            fair_ns,
            ..
        } = fair_share(input, entries, e)
        else {
            continue;
        };
        if fair_ns <= 0.0 {
            continue;
        }
        let ratio = e.report.cpu_time_ns as f64 / fair_ns;
        let error = (ratio - 1.0).abs();
        let line = format!(
            "{}: {:.1} ms CPU, the weights give it {:.1} ms ({:.3} of {:.1} ms): {:.2}x, off by {:.0}%",
            e.label,
            e.report.cpu_time_ns as f64 / 1e6,
            fair_ns / 1e6,
            share,
            pool_ns / 1e6,
            ratio,
            error * 100.0
        );
        if error > limit {
            offenders.push(format!("{line}, more than max_share_error {limit}"));
        } else {
            lines.push(line);
        }
        worst = Some(worst.map_or(error, |w: f64| w.max(error)));
    }
    let Some(worst_error) = worst else {
        return CheckOutcome::skipped(NAME, "no CPU-bound worker with a fair share");
    };
    let checked = offenders.len() + lines.len();
    let passed = offenders.is_empty();
    let summary = format!(
        "{checked} CPU-bound workers against their weighted shares: worst off by {:.0}% (max {:.0}%)",
        worst_error * 100.0,
        limit * 100.0
    );
    let mut out = CheckOutcome::new(NAME, passed, summary);
    out.details = offenders;
    out.details.extend(lines);
    out.details.extend(unreported_note(entries));
    out.measured(Some(worst_error), Some(limit))
}
