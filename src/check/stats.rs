//! The run's statistics: figures per cgroup and for the whole run (CPUs
//! used, migrations, spread, longest stall, p99 wake latency, work done).
//! They are computed beside the verdicts from the same derived workers, so
//! a figure and the check judging it always agree.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::input::CheckInput;
use super::latency::pooled_percentile;
use super::progress::stalls;
use super::spread;
use super::thresholds::Thresholds;
use super::workers::Entry;

/// One cgroup's figures.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CgroupStats {
    pub name: String,
    pub workers: usize,
    /// CPUs its workers ran on.
    pub cpus_used: Vec<usize>,
    pub migrations: u64,
    /// Worst max/min CPU rate among its comparable workers.
    pub spread: Option<f64>,
    /// Longest own gap among its workers, in milliseconds.
    pub worst_gap_ms: Option<f64>,
    pub p99_wake_us: Option<f64>,
    /// Work units of all its workers.
    pub iterations: u64,
    pub cpu_time_ms: f64,
}

/// Figures of a whole run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Stats {
    pub workers: usize,
    /// Number of distinct CPUs the workers ran on.
    pub cpus: usize,
    pub cpus_used: Vec<usize>,
    pub migrations: u64,
    pub worst_spread: Option<f64>,
    /// Longest stall seen in the progress samples or in a CPU-bound
    /// worker's own gaps, in milliseconds.
    pub worst_gap_ms: Option<f64>,
    /// p99 wake latency over every sampled wake of the run.
    pub p99_wake_us: Option<f64>,
    /// Work units of all workers.
    pub iterations: u64,
    pub per_cgroup: Vec<CgroupStats>,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Computes the figures of a run.
pub(super) fn compute(input: &CheckInput, entries: &[Entry], thresholds: &Thresholds) -> Stats {
    let classes = spread::classes(input, entries);
    let mut per_cgroup = Vec::new();
    let mut all_cpus = BTreeSet::new();
    for cg in &input.cgroups {
        let cpus: BTreeSet<usize> = cg
            .workers
            .iter()
            .flat_map(|w| w.cpus_used.iter().copied())
            .collect();
        all_cpus.extend(cpus.iter().copied());
        let spread = classes
            .iter()
            .filter(|c| c.cgroup == cg.name)
            .map(|c| c.spread)
            .reduce(f64::max);
        per_cgroup.push(CgroupStats {
            name: cg.name.clone(),
            workers: cg.workers.len(),
            cpus_used: cpus.into_iter().collect(),
            migrations: cg.workers.iter().map(|w| w.migrations).sum(),
            spread: spread.and_then(finite),
            worst_gap_ms: cg
                .workers
                .iter()
                .filter_map(|w| w.longest_gap.as_ref().map(|g| g.ms))
                .reduce(f64::max),
            p99_wake_us: pooled_percentile(&cg.workers, 99.0).map(|ns| ns as f64 / 1e3),
            iterations: cg.workers.iter().map(|w| w.work_units).sum(),
            cpu_time_ms: cg.workers.iter().map(|w| w.cpu_time_ns as f64).sum::<f64>() / 1e6,
        });
    }
    Stats {
        workers: per_cgroup.iter().map(|c| c.workers).sum(),
        cpus: all_cpus.len(),
        cpus_used: all_cpus.into_iter().collect(),
        migrations: per_cgroup.iter().map(|c| c.migrations).sum(),
        worst_spread: classes
            .iter()
            .map(|c| c.spread)
            .reduce(f64::max)
            .and_then(finite),
        worst_gap_ms: worst_gap_ms(input, entries, thresholds),
        p99_wake_us: pooled_percentile(input.cgroups.iter().flat_map(|c| &c.workers), 99.0)
            .map(|ns| ns as f64 / 1e3),
        iterations: per_cgroup.iter().map(|c| c.iterations).sum(),
        per_cgroup,
    }
}

/// The longest stall the samples show for any worker whose others advanced,
/// and the longest own gap of any CPU-bound worker (for statistics).
fn worst_gap_ms(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> Option<f64> {
    let sampled = stalls(
        input,
        entries,
        &Thresholds {
            max_gap_ms: f64::MIN_POSITIVE,
            ..t.clone()
        },
    )
    .into_iter()
    .filter(|s| s.others_advanced)
    .map(|s| s.to_ms - s.from_ms);
    let own = entries
        .iter()
        .filter(|e| e.reported && e.cpu_bound)
        .filter_map(|e| e.report.longest_gap.as_ref().map(|g| g.ms));
    sampled.chain(own).reduce(f64::max)
}
