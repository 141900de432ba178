//! `not_starved`: every worker made progress, and every CPU-bound worker got
//! at least `min_cpu_share` of its fair share of CPU.
//!
//! # Fair share
//!
//! Only CPU-bound work types (whose [`crate::workload::Demand`] is `Cpu`:
//! they stay runnable all the time) have a fair share; every other type
//! sleeps or blocks by design and is checked for progress only. For a
//! CPU-bound worker `w`:
//!
//! - its allowed CPUs `A` are its declared affinity intersected with its
//!   cgroup's cpuset (either alone when the other is absent; all CPUs when
//!   neither is declared);
//! - its contenders are the CPU-bound workers (any cgroup, `w` included)
//!   whose allowed CPUs overlap `A` and whose lifetimes (from the setups'
//!   `started_ms`/`stopped_ms`) overlap its own; one present for part of
//!   its life weighs that part, and brings that part of its CPU time;
//! - if a real-time (`fifo`/`rr`) contender shares its CPUs, a normal worker
//!   has no fair share (real-time throttling decides it) and a real-time
//!   worker is governed by priority: both are checked for progress and gaps
//!   only;
//! - otherwise its share is two-level, like the group scheduler: its
//!   cgroup's weight over the summed weights of the cgroups with contenders,
//!   times its own nice weight (the kernel's table, nice 0 = 1024,
//!   `SCHED_IDLE` = 3) over the summed weights of the contenders in its
//!   cgroup;
//! - its fair CPU time is that share of the CPU time the contenders got
//!   together, at most its wall time (one worker uses one CPU).
//!
//! Measuring against what the contenders actually got, not against
//! `wall x CPUs`, keeps load from outside the run (other processes on a
//! shared host) from counting as starvation; a worker that got far less
//! than its peers under the same load is still caught. When allowed sets
//! overlap only partly, contenders' time on CPUs outside `A` also counts in
//! the pool, so the figure is approximate there (it errs towards a larger

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::input::{CheckInput, PolicyClass};
use super::outcome::CheckOutcome;
use super::thresholds::Thresholds;
use super::workers::{format_set, unreported_note, Entry};

pub(super) const NAME: &str = "not_starved";

/// The cgroup weight assumed when none is declared (cgroup v2 scale).
pub const DEFAULT_CGROUP_WEIGHT: u64 = crate::cgroup::WEIGHT_DEFAULT as u64;

/// Kernel load weights for nice -20..=19 (`sched_prio_to_weight`).
const NICE_WEIGHTS: [u32; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904,
    3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87,
    70, 56, 45, 36, 29, 23, 18, 15,
];

/// The load weight of a `SCHED_IDLE` task.
pub(super) const IDLE_WEIGHT: f64 = 3.0;

/// The kernel's load weight for a nice value (clamped to -20..=19).
pub fn nice_weight(nice: i32) -> f64 {
    NICE_WEIGHTS[(nice.clamp(-20, 19) + 20) as usize] as f64
}

/// Why a worker has no fair share to check, or its fair fraction of wall
/// time.
pub(super) enum FairShare {
    Fair {
        /// Its part of what the contenders got together.
        share: f64,
        /// CPU time the contenders (it included) got, in ns.
        pool_ns: f64,
        /// Its fair CPU time: its share of the pool, at most its wall time
        /// (one worker cannot use more than one CPU). Zero when its
        /// contenders got no CPU.
        fair_ns: f64,
        contenders: usize,
    },
    Exempt(&'static str),
}

pub(super) fn fair_share(input: &CheckInput, entries: &[Entry], e: &Entry) -> FairShare {
    if !e.cpu_bound {
        return FairShare::Exempt("sleeps or blocks by design: progress only");
    }
    if e.class == PolicyClass::RealTime {
        return FairShare::Exempt("real-time policy, priority decides: progress only");
    }
    let contenders: Vec<&Entry> = entries
        .iter()
        .filter(|o| o.reported && o.cpu_bound && !o.allowed.is_disjoint(&e.allowed))
        .collect();
    if contenders.iter().any(|o| o.class == PolicyClass::RealTime) {
        return FairShare::Exempt("shares CPUs with a real-time worker: progress only");
    }
    // Contenders that lived only part of its life count for that part:
    // `present` is the fraction of its life they were there, `overlap` the
    // fraction of their own life spent beside it (their CPU in the pool).
    let life = |o: &Entry| match (o.setup.started_ms, o.setup.stopped_ms) {
        (Some(s), Some(e)) if e > s => Some((s, e)),
        _ => None,
    };
    let mine = life(e);
    let mut present = Vec::new();
    for o in contenders {
        let (p, f) = match (mine, life(o)) {
            (Some((s1, e1)), Some((s2, e2))) => {
                let both = (e1.min(e2) - s1.max(s2)).max(0.0);
                (both / (e1 - s1), both / (e2 - s2))
            }
            _ => (1.0, 1.0),
        };
        if p > 0.0 {
            present.push((o, p, f));
        }
    }
    let cg_weight = |ci: usize| {
        input.cgroups[ci]
            .weight
            .unwrap_or(DEFAULT_CGROUP_WEIGHT)
            .max(1) as f64
    };
    let mut cgroups: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (o, p, _) in &present {
        let slot = cgroups
            .entry(cgroup_identity(&input.cgroups[o.cgroup].name))
            .or_insert((0.0, 0.0));
        slot.0 = slot.0.max(cg_weight(o.cgroup) * p);
        if cgroup_identity(&input.cgroups[o.cgroup].name)
            == cgroup_identity(&input.cgroups[e.cgroup].name)
        {
            slot.1 += o.weight() * p;
        }
    }
    let total_cg: f64 = cgroups.values().map(|v| v.0).sum();
    let own = cgroups[cgroup_identity(&input.cgroups[e.cgroup].name)];
    let share = own.0 / total_cg * e.weight() / own.1;
    let pool_ns: f64 = present
        .iter()
        .map(|(o, _, f)| o.report.cpu_time_ns as f64 * f)
        .sum();
    FairShare::Fair {
        share,
        pool_ns,
        fair_ns: (share * pool_ns).min(e.wall_ns(&input.cgroups[e.cgroup])),
        contenders: present.len(),
    }
}

/// A CPU-bound worker's CPU time against its fair CPU time (the model in
/// the module docs), for figures outside the check (regression metrics).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerShare {
    /// Index into [`CheckInput::cgroups`].
    pub cgroup: usize,
    /// Index into that cgroup's workers.
    pub worker: usize,
    pub cpu_ns: f64,
    pub fair_ns: f64,
}

/// The fair CPU time of every reported CPU-bound worker that has one
/// (exempt workers and those whose contenders got no CPU are left out).
pub fn worker_shares(input: &CheckInput) -> Vec<WorkerShare> {
    let entries = super::workers::entries(input);
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.reported) {
        if let FairShare::Fair { fair_ns, .. } = fair_share(input, &entries, e) {
            if fair_ns > 0.0 {
                out.push(WorkerShare {
                    cgroup: e.cgroup,
                    worker: e.index,
                    cpu_ns: e.report.cpu_time_ns as f64,
                    fair_ns,
                });
            }
        }
    }
    out
}

/// The cgroup a [`CgroupRun`](super::CgroupRun) belongs to: its name up to an `@`, so
/// batches spawned into one cgroup later (`cg0@step2`) share its weight.
pub fn cgroup_identity(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// The CPU a worker got as a fraction of its fair share, with the line
/// that explains the figure; or why its share is not checked.
fn share_ratio(input: &CheckInput, entries: &[Entry], e: &Entry) -> Result<(f64, String), String> {
    let (share, pool_ns, fair_ns, contenders) = match fair_share(input, entries, e) {
        FairShare::Exempt(why) => return Err(format!("{}: {why}", e.label)),
        FairShare::Fair {
            share,
            pool_ns,
            fair_ns,
            contenders,
        } => (share, pool_ns, fair_ns, contenders),
    };
    if fair_ns <= 0.0 {
        return Err(format!(
            "{}: its contenders got no CPU at all, share not checked",
            e.label
        ));
    }
    let ratio = e.report.cpu_time_ns as f64 / fair_ns;
    let line = format!(
        "{}: {:.1} ms CPU of a fair {:.1} ms ({:.3} of the {:.1} ms its {} contenders on CPUs {} got) = {:.2} of fair",
        e.label,
        e.report.cpu_time_ns as f64 / 1e6,
        fair_ns / 1e6,
        share,
        pool_ns / 1e6,
        contenders,
        format_set(&e.allowed),
        ratio
    );
    Ok((ratio, line))
}

pub(super) fn check(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    let mut offenders = Vec::new();
    let mut notes = Vec::new();
    let mut worst: Option<(f64, String)> = None;
    let mut progressed = 0;
    let mut share_checked = 0;
    for e in entries.iter().filter(|e| e.reported) {
        if e.report.work_units < t.min_work_units {
            offenders.push(format!(
                "{}: made {} work units, fewer than min_work_units {}",
                e.label, e.report.work_units, t.min_work_units
            ));
        } else {
            progressed += 1;
        }
        match share_ratio(input, entries, e) {
            Err(note) => notes.push(note),
            Ok((ratio, line)) => {
                share_checked += 1;
                if ratio < t.min_cpu_share {
                    offenders.push(format!("{line}, below min_cpu_share {}", t.min_cpu_share));
                }
                if worst.as_ref().is_none_or(|(w, _)| ratio < *w) {
                    worst = Some((ratio, line));
                }
            }
        }
    }
    let reported = entries.iter().filter(|e| e.reported).count();
    let passed = offenders.is_empty();
    let mut summary = format!("{progressed} of {reported} workers made progress");
    match &worst {
        Some((ratio, _)) => {
            let _ = write!(
                summary,
                "; {share_checked} CPU-bound, worst {ratio:.2} of fair share (min {})",
                t.min_cpu_share
            );
        }
        None => summary.push_str("; no CPU-bound worker, shares not checked"),
    }
    let mut out = CheckOutcome::new(NAME, passed && reported > 0, summary);
    if reported == 0 {
        out.summary = "no worker reported".into();
    }
    out.details = offenders;
    if passed {
        if let Some((_, line)) = &worst {
            out.details.push(format!("worst: {line}"));
        }
    }
    out.details.extend(notes);
    out.details.extend(unreported_note(entries));
    out.measured(
        worst.map(|(r, _)| r),
        Some(t.min_cpu_share).filter(|_| share_checked > 0),
    )
}
