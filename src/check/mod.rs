//! Pass/fail for a run: one entry point, [`evaluate`], takes what a run
//! produced ([`RunFacts`]: worker reports per cgroup, payload reports) and
//! returns the verdicts and the statistics ([`Evaluation`]). Nothing else
//! decides pass/fail; the report ([`crate::report`]) only records.
//!
//! The checks, in report order:
//!
//! | family | check | fails when |
//! | --- | --- | --- |
//! | completion | `workers_completed` | a worker died, hung past the collect deadline, panicked or could not be reaped |
//! | fairness | `not_starved` | a worker made fewer than `min_work_units` work units, or a CPU-bound worker got less than `min_cpu_share` of its fair share |
//! | spread | `fairness_spread` | within a cgroup, CPU-bound workers of one class got CPU at rates further apart than `max_spread` |
//! | progress | `longest_gap` | a worker's progress counter stood still for more than `max_gap_ms` while others advanced, or a CPU-bound worker's own longest gap exceeds it |
//! | isolation | `cpuset_isolation` | a worker ran on a CPU outside its cgroup's cpuset or its declared affinity |
//! | latency | `wake_latency_p99` | the p99 wake latency of a cgroup exceeds `max_wake_p99_us` (skipped without a bound or samples) |
//! | migration | `migration_ratio` | a worker migrated more often than `max_migration_ratio` per work unit or `max_migrations_per_sec` (skipped without a bound) |
//! | share | `share_accuracy` | a CPU-bound worker's CPU time is further than `max_share_error` from the share nice and cgroup weights give it (skipped without a bound) |
//! | payload | `payload:<name>` | an external program run beside the workers exited unexpectedly, missed a metric or bound, its ready marker, or escaped its cgroup |
//! | scheduler | `scheduler_attached` | the scheduler under test did not attach within `attach_timeout`, was ejected during the run, or left sched_ext enabled after its stop |
//! | scheduler | `workers_on_scheduler` | a worker seen while the scheduler was attached was not on sched_ext |
//! | scheduler | `scheduler_events` | a `root/events` counter exceeded its `max_scx_events` bound (skipped without bounds) |
//!
//! The scheduler checks appear only when the run had a scheduler under
//! test; when it never attached, no worker was started and the worker
//! checks are reported as skipped.
//!
//! Workers without a real report (sentinels: died, timed out, panicked) fail
//! `workers_completed` and are left out of every other check, whose details
//! say so. A check named in `thresholds.disabled` is reported as skipped,
//! with what it would have said.
//!
//! | file | what it holds |
//! | --- | --- |
//! | `mod.rs` | [`RunFacts`], [`evaluate`], [`Evaluation`], [`CHECK_NAMES`] |
//! | `outcome.rs` | [`CheckOutcome`] and [`AssertResult`], what every check returns |
//! | `thresholds.rs` | [`Thresholds`], the limits, and their validation |
//! | `input.rs` | [`CheckInput`], [`CgroupRun`], [`WorkerSetup`], [`ProgressSample`]: what the worker checks look at |
//! | `workers.rs` | what the worker checks derive about each worker (allowed CPUs, class, CPU-bound) and shared wording |
//! | `completion.rs` | `workers_completed` |
//! | `fairness.rs` | `not_starved` and the fair share model (nice and cgroup weights) |
//! | `spread.rs` | `fairness_spread` and the classes of comparable workers |
//! | `progress.rs` | `longest_gap` and stall detection over progress samples |
//! | `isolation.rs` | `cpuset_isolation` |
//! | `latency.rs` | `wake_latency_p99` and pooled percentiles |
//! | `migration.rs` | `migration_ratio` |
//! | `share.rs` | `share_accuracy` |
//! | `payload.rs` | `payload:<name>`, one check per payload, and [`judge_payload`] filling a payload report's verdict fields |
//! | `scheduler.rs` | `scheduler_attached`, `workers_on_scheduler`, `scheduler_events` |
//! | `stats.rs` | [`Stats`], the run's figures, computed beside the verdicts |
//! | `host.rs` | marks failures that happened while the host was busy (foreign load on the run's CPUs) |
//!
//! # Adding a check family
//!
//! One file holding its checks (a `NAME` constant per check and a function
//! returning [`CheckOutcome`]s), one line in [`evaluate`] calling it, and,
//! when its facts are new, a field in [`RunFacts`] with a builder method.
//! Add its names to [`CHECK_NAMES`] if `thresholds.disabled` may name them.

mod completion;
mod fairness;
mod host;
mod input;
mod isolation;
mod latency;
mod migration;
mod outcome;
mod payload;
mod progress;
mod scheduler;
mod share;
mod spread;
mod stats;
mod thresholds;
mod workers;

pub use fairness::{
    cgroup_identity, nice_weight, worker_shares, WorkerShare, DEFAULT_CGROUP_WEIGHT,
};
pub use input::{CgroupRun, CheckInput, ProgressSample, WorkerSetup};
pub use latency::pooled_percentile;
pub use outcome::{AssertResult, CheckOutcome};
pub use payload::{judge as judge_payload, verdict as payload_verdict, PayloadVerdict};
pub use stats::{CgroupStats, Stats};
pub use thresholds::Thresholds;
pub use workers::describe_exit;

use crate::host::HostNoise;
use crate::scheduler::SchedulerReport;
use crate::workload::payload::PayloadReport;

/// Names of the checks every run reports, in report order (payloads' and
/// the scheduler's come after); `thresholds.disabled` may name them.
pub const CHECK_NAMES: &[&str] = &[
    completion::NAME,
    fairness::NAME,
    spread::NAME,
    progress::NAME,
    isolation::NAME,
    latency::NAME,
    migration::NAME,
    share::NAME,
];

/// Names of the checks a run with a scheduler under test adds after the
/// others (and its payloads'); `thresholds.disabled` may name them too.
pub const SCHEDULER_CHECK_NAMES: &[&str] = &[
    scheduler::ATTACHED,
    scheduler::ON_SCHEDULER,
    scheduler::EVENTS,
];

/// Everything a run produced that the checks judge. It borrows, so the
/// caller hands the same data to the report afterwards. Build it with
/// [`RunFacts::new`] and the methods after it (fields may be added).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RunFacts<'a> {
    /// Worker reports per cgroup, with setups and progress samples.
    pub workers: &'a CheckInput,
    /// Reports of the external programs run beside the workers.
    pub payloads: &'a [PayloadReport],
    /// Foreign load on the run's CPUs during the holds, when sampled.
    pub noise: Option<&'a HostNoise>,
    /// The scheduler under test, if the run had one.
    pub scheduler: Option<&'a SchedulerReport>,
}

impl<'a> RunFacts<'a> {
    /// The facts of a run that produced worker reports only.
    pub fn new(workers: &'a CheckInput) -> Self {
        RunFacts {
            workers,
            payloads: &[],
            noise: None,
            scheduler: None,
        }
    }

    /// Adds the host noise sampled during the holds.
    pub fn noise(mut self, noise: &'a HostNoise) -> Self {
        self.noise = Some(noise);
        self
    }

    /// Adds the scheduler under test's report.
    pub fn scheduler(mut self, scheduler: Option<&'a SchedulerReport>) -> Self {
        self.scheduler = scheduler;
        self
    }

    /// Adds the payloads' reports.
    pub fn payloads(mut self, payloads: &'a [PayloadReport]) -> Self {
        self.payloads = payloads;
        self
    }
}

/// The verdicts and the statistics of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub checks: AssertResult,
    pub stats: Stats,
}

/// Judges a run: every check family over its facts, then the statistics.
pub fn evaluate(facts: &RunFacts, t: &Thresholds) -> Evaluation {
    let input = facts.workers;
    let entries = workers::entries(input);
    let mut checks = vec![
        completion::check(&entries),
        fairness::check(input, &entries, t),
        spread::check(input, &entries, t),
        progress::check(input, &entries, t),
        isolation::check(input, &entries),
        latency::check(input, &entries, t),
        migration::check(input, &entries, t),
        share::check(input, &entries, t),
    ];
    if let Some(report) = facts.scheduler.filter(|r| r.attach_failure.is_some()) {
        let why = format!("no worker was started: {} never attached", report.binary);
        for c in &mut checks {
            *c = CheckOutcome::skipped(&c.name, why.clone());
        }
    }
    checks.extend(payload::checks(facts.payloads));
    if let Some(report) = facts.scheduler {
        checks.extend(scheduler::checks(report, t));
    }
    for c in &mut checks {
        if t.is_disabled(&c.name) {
            *c = CheckOutcome::skipped(
                &c.name,
                format!(
                    "disabled by thresholds.disabled (would have said: {})",
                    c.summary
                ),
            );
        }
    }
    host::annotate(&mut checks, facts.noise, input, &entries, t);
    Evaluation {
        checks: AssertResult::from_checks(checks),
        stats: stats::compute(input, &entries, t),
    }
}

/// The verdicts of [`evaluate`] for a run that produced worker reports
/// only (exploration judges each step this way).
pub fn run_checks(input: &CheckInput, t: &Thresholds) -> AssertResult {
    evaluate(&RunFacts::new(input), t).checks
}
