//! `fairness_spread`: within a cgroup, comparable CPU-bound workers (same
//! work type, policy, nice and allowed CPUs) got CPU at similar rates.

use std::collections::BTreeMap;

use super::input::{CheckInput, PolicyClass};
use super::outcome::CheckOutcome;
use super::thresholds::Thresholds;
use super::workers::{format_set, plural, unreported_note, Entry};

pub(super) const NAME: &str = "fairness_spread";

/// A class of comparable workers in one cgroup and its CPU-rate spread.
pub(super) struct SpreadClass {
    pub cgroup: String,
    pub key: String,
    pub workers: usize,
    /// max/min CPU rate; infinite when a worker got no CPU.
    pub spread: f64,
    pub max_label: String,
    pub max_rate: f64,
    pub min_label: String,
    pub min_rate: f64,
}

pub(super) fn classes(input: &CheckInput, entries: &[Entry]) -> Vec<SpreadClass> {
    let mut classes: BTreeMap<(usize, String), Vec<&Entry>> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.reported && e.cpu_bound && e.class != PolicyClass::RealTime)
    {
        let key = format!(
            "{} {} nice {} on CPUs {}",
            e.report.work_type,
            e.setup.policy.name(),
            e.setup.nice,
            format_set(&e.allowed)
        );
        classes.entry((e.cgroup, key)).or_default().push(e);
    }
    let mut out = Vec::new();
    for ((ci, key), members) in classes {
        if members.len() < 2 {
            continue;
        }
        let cg = &input.cgroups[ci];
        let rated: Vec<(f64, &Entry)> = members.iter().map(|e| (e.cpu_rate(cg), *e)).collect();
        let (max_rate, max_e) = rated
            .iter()
            .copied()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("two members");
        let (min_rate, min_e) = rated
            .iter()
            .copied()
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .expect("two members");
        let spread = if min_rate > 0.0 {
            max_rate / min_rate
        } else if max_rate > 0.0 {
            f64::INFINITY
        } else {
            1.0
        };
        out.push(SpreadClass {
            cgroup: cg.name.clone(),
            key,
            workers: members.len(),
            spread,
            max_label: max_e.label.clone(),
            max_rate,
            min_label: min_e.label.clone(),
            min_rate,
        });
    }
    out
}

pub(super) fn check(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    let classes = classes(input, entries);
    if classes.is_empty() {
        let mut out = CheckOutcome::skipped(
            NAME,
            "no cgroup has two comparable CPU-bound workers (same type, policy, nice and CPUs)",
        );
        out.details.extend(unreported_note(entries));
        return out;
    }
    let worst = classes
        .iter()
        .map(|c| c.spread)
        .fold(1.0_f64, |a, b| a.max(b));
    let bad: Vec<&SpreadClass> = classes.iter().filter(|c| c.spread > t.max_spread).collect();
    let spread_text = |s: f64| {
        if s.is_finite() {
            format!("{s:.2}")
        } else {
            "unbounded".to_string()
        }
    };
    let mut out = CheckOutcome::new(
        NAME,
        bad.is_empty(),
        format!(
            "{} compared, worst max/min CPU rate {} (max {})",
            plural(classes.len(), "class", "classes"),
            spread_text(worst),
            t.max_spread
        ),
    );
    for c in &classes {
        let line = format!(
            "{}: {} x {}: spread {} = {} at {:.3} CPU / {} at {:.3} CPU",
            c.cgroup,
            c.workers,
            c.key,
            spread_text(c.spread),
            c.max_label,
            c.max_rate,
            c.min_label,
            c.min_rate
        );
        if c.spread > t.max_spread {
            out.details
                .insert(0, format!("{line}; least served: {}", c.min_label));
        } else {
            out.details.push(line);
        }
    }
    out.details.extend(unreported_note(entries));
    out.measured(Some(worst), Some(t.max_spread))
}
