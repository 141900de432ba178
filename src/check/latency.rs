//! `wake_latency_p99`: the p99 wake latency of each cgroup stays within
//! `max_wake_p99_us` (skipped without a bound or samples).

use super::input::CheckInput;
use super::outcome::CheckOutcome;
use super::thresholds::Thresholds;
use super::workers::{unreported_note, Entry};
use crate::workload::WorkerReport;

pub(super) const NAME: &str = "wake_latency_p99";

/// A percentile of reservoir samples pooled from several workers, each
/// sample weighted by how many events it stands for (count / kept).
pub fn pooled_percentile<'a>(
    reports: impl IntoIterator<Item = &'a WorkerReport>,
    pct: f64,
) -> Option<u64> {
    let mut weighted: Vec<(u64, f64)> = Vec::new();
    for r in reports {
        if r.wake_latency_ns.is_empty() {
            continue;
        }
        let kept = r.wake_latency_ns.len() as f64;
        let weight = (r.wake_latency_count as f64 / kept).max(1.0);
        weighted.extend(r.wake_latency_ns.iter().map(|&v| (v, weight)));
    }
    if weighted.is_empty() {
        return None;
    }
    weighted.sort_by_key(|p| p.0);
    let total: f64 = weighted.iter().map(|p| p.1).sum();
    let target = total * (pct / 100.0).clamp(0.0, 1.0);
    let mut cumulative = 0.0;
    for (v, w) in &weighted {
        cumulative += w;
        if cumulative >= target {
            return Some(*v);
        }
    }
    weighted.last().map(|p| p.0)
}

pub(super) fn check(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    let per_cg: Vec<(String, u64, usize)> = input
        .cgroups
        .iter()
        .enumerate()
        .filter_map(|(ci, cg)| {
            let reports: Vec<&WorkerReport> = entries
                .iter()
                .filter(|e| e.cgroup == ci && e.reported)
                .map(|e| e.report)
                .collect();
            let sampled = reports
                .iter()
                .filter(|r| !r.wake_latency_ns.is_empty())
                .count();
            pooled_percentile(reports, 99.0).map(|p| (cg.name.clone(), p, sampled))
        })
        .collect();
    let Some(bound_us) = t.max_wake_p99_us else {
        let mut out = CheckOutcome::skipped(NAME, "no bound set (thresholds.max_wake_p99_us)");
        for (name, p99, n) in &per_cg {
            out.details.push(format!(
                "{name}: p99 {:.1} us over {n} sampled workers",
                *p99 as f64 / 1e3
            ));
        }
        return out;
    };
    if per_cg.is_empty() {
        return CheckOutcome::skipped(NAME, "no worker recorded wake latencies");
    }
    let worst_us = per_cg
        .iter()
        .map(|p| p.1 as f64 / 1e3)
        .fold(0.0_f64, f64::max);
    let mut out = CheckOutcome::new(
        NAME,
        worst_us <= bound_us,
        format!(
            "{} cgroups sampled, worst p99 {worst_us:.1} us (max {bound_us} us)",
            per_cg.len()
        ),
    );
    for (name, p99, n) in &per_cg {
        let us = *p99 as f64 / 1e3;
        let verdict = if us > bound_us { "over" } else { "within" };
        out.details.push(format!(
            "{name}: p99 {us:.1} us over {n} sampled workers, {verdict} the bound"
        ));
    }
    for e in entries.iter().filter(|e| e.reported) {
        if let Some(p) = pooled_percentile([e.report], 99.0) {
            let us = p as f64 / 1e3;
            if us > bound_us {
                out.details.push(format!(
                    "{}: own p99 {us:.1} us over {} wakes",
                    e.label, e.report.wake_latency_count
                ));
            }
        }
    }
    out.details.extend(unreported_note(entries));
    out.measured(Some(worst_us), Some(bound_us))
}
