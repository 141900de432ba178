//! `longest_gap`: no worker's progress counter stood still for longer than
//! `max_gap_ms` while others advanced, and no CPU-bound worker's own
//! longest gap exceeds it.

use super::input::CheckInput;
use super::outcome::CheckOutcome;
use super::thresholds::Thresholds;
use super::workers::{unreported_note, Entry};
use crate::workload::{Demand, WorkType};

pub(super) const NAME: &str = "longest_gap";

/// A stall must also be this many times the worker's mean iteration period,
/// so a type whose single iteration sleeps long is not flagged for it.
const STALL_ITERATION_FACTOR: f64 = 4.0;

/// A stretch of samples over which one worker's counter stood still.
pub(super) struct Stall {
    pub label: String,
    /// The stalled worker's pid or tid.
    pub tid: i32,
    pub counter: u64,
    pub from_ms: f64,
    pub to_ms: f64,
    pub allowance_ms: f64,
    pub others_advanced: bool,
}

/// One worker's samples, in time order, within its lifetime.
struct Series<'a> {
    entry: &'a Entry<'a>,
    points: Vec<(f64, u64)>,
}

fn series<'a>(input: &CheckInput, entries: &'a [Entry<'a>]) -> Vec<Series<'a>> {
    // Sentinels too: a worker stopped until the collect deadline has no
    // report, but its samples still show where it froze.
    entries
        .iter()
        .map(|e| {
            let cg = &input.cgroups[e.cgroup];
            let from = e.setup.started_ms.unwrap_or(f64::NEG_INFINITY);
            let to = e.setup.stopped_ms.unwrap_or(f64::INFINITY);
            let mut points: Vec<(f64, u64)> = cg
                .samples
                .iter()
                .filter(|s| s.at_ms >= from && s.at_ms <= to && s.at_ms.is_finite())
                .filter_map(|s| s.iterations.get(e.index).map(|&n| (s.at_ms, n)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { entry: e, points }
        })
        .collect()
}

fn advanced_within(s: &Series, from_ms: f64, to_ms: f64) -> bool {
    let inside: Vec<u64> = s
        .points
        .iter()
        .filter(|p| p.0 >= from_ms && p.0 <= to_ms)
        .map(|p| p.1)
        .collect();
    inside.windows(2).any(|w| w[1] != w[0])
}

pub(super) fn stalls(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> Vec<Stall> {
    let all = series(input, entries);
    let mut out = Vec::new();
    for (si, s) in all.iter().enumerate() {
        if WorkType::demand_of(&s.entry.report.work_type) == Some(Demand::Storage) {
            continue;
        }
        let cg = &input.cgroups[s.entry.cgroup];
        let units = s.entry.report.work_units;
        let period_ms = if units > 0 {
            s.entry.wall_ns(cg) / 1e6 / units as f64
        } else {
            0.0
        };
        let allowance_ms = t.max_gap_ms.max(STALL_ITERATION_FACTOR * period_ms);
        let mut start = 0;
        while start < s.points.len() {
            let mut end = start;
            while end + 1 < s.points.len() && s.points[end + 1].1 == s.points[start].1 {
                end += 1;
            }
            let (from_ms, counter) = s.points[start];
            let to_ms = s.points[end].0;
            if to_ms - from_ms > allowance_ms {
                let others: Vec<&Series> = all
                    .iter()
                    .enumerate()
                    .filter(|(oi, _)| *oi != si)
                    .map(|(_, o)| o)
                    .collect();
                let others_advanced =
                    others.is_empty() || others.iter().any(|o| advanced_within(o, from_ms, to_ms));
                out.push(Stall {
                    label: s.entry.label.clone(),
                    tid: s.entry.report.tid,
                    counter,
                    from_ms,
                    to_ms,
                    allowance_ms,
                    others_advanced,
                });
            }
            start = end + 1;
        }
    }
    out
}

pub(super) fn check(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    let mut offenders = Vec::new();
    let mut notes = Vec::new();
    let mut worst: Option<f64> = None;
    let mut bump = |v: f64| worst = Some(worst.map_or(v, |w: f64| w.max(v)));

    let sampled_workers = entries
        .iter()
        .filter(|e| {
            input.cgroups[e.cgroup]
                .samples
                .iter()
                .filter(|s| s.iterations.len() > e.index)
                .count()
                >= 2
        })
        .count();
    for st in stalls(input, entries, t) {
        let ms = st.to_ms - st.from_ms;
        let line = format!(
            "{}: counter stuck at {} for {:.1} ms (from {:.1} ms to {:.1} ms into the run; allowed {:.1} ms)",
            st.label, st.counter, ms, st.from_ms, st.to_ms, st.allowance_ms
        );
        if st.others_advanced {
            bump(ms);
            offenders.push(format!("{line} while others advanced"));
        } else {
            notes.push(format!(
                "{line}, but every worker stood still then: the whole run paused, not counted"
            ));
        }
    }
    for e in entries.iter().filter(|e| e.reported && e.cpu_bound) {
        if let Some(gap) = &e.report.longest_gap {
            bump(gap.ms);
            if gap.ms > t.max_gap_ms {
                offenders.push(format!(
                    "{}: own longest gap {:.1} ms on CPU {} at {:.1} ms",
                    e.label, gap.ms, gap.cpu, gap.at_ms
                ));
            }
        }
    }
    if sampled_workers == 0 && worst.is_none() {
        let mut out = CheckOutcome::skipped(
            NAME,
            "no progress samples and no CPU-bound worker's own gap to look at",
        );
        out.details.extend(unreported_note(entries));
        return out;
    }
    let mut summary = format!(
        "{sampled_workers} of {} workers sampled; longest stall {} (max {} ms)",
        entries.len(),
        worst.map_or("none".to_string(), |w| format!("{w:.1} ms")),
        t.max_gap_ms
    );
    if sampled_workers == 0 {
        summary.push_str("; no progress samples, own gaps only");
    }
    let mut out = CheckOutcome::new(NAME, offenders.is_empty(), summary);
    out.details = offenders;
    out.details.extend(notes);
    out.measured(worst, Some(t.max_gap_ms))
}
