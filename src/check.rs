//! Checks over worker reports, producing an [`AssertResult`] with details
//! that name every offending worker.
//!
//! The checks, in report order:
//!
//! | check | fails when |
//! | --- | --- |
//! | `workers_completed` | a worker died, hung past the collect deadline, panicked or could not be reaped |
//! | `not_starved` | a worker made fewer than `min_work_units` work units, or a CPU-bound worker got less than `min_cpu_share` of its fair share |
//! | `fairness_spread` | within a cgroup, CPU-bound workers of one class got CPU at rates further apart than `max_spread` |
//! | `longest_gap` | a worker's progress counter stood still for more than `max_gap_ms` while others advanced, or a CPU-bound worker's own longest gap exceeds it |
//! | `cpuset_isolation` | a worker ran on a CPU outside its cgroup's cpuset or its declared affinity |
//! | `wake_latency_p99` | the p99 wake latency of a cgroup exceeds `max_wake_p99_us` (skipped without a bound or samples) |
//! | `migration_ratio` | a worker migrated more often than `max_migration_ratio` per work unit or `max_migrations_per_sec` (skipped without a bound) |
//!
//! Workers without a real report (sentinels: died, timed out, panicked) fail
//! `workers_completed` and are left out of every other check, whose details
//! say so.
//!
//! # Fair share
//!
//! Only CPU-bound work types ([`CPU_BOUND_TYPES`]: they stay runnable all
//! the time) have a fair share; every other type sleeps or blocks by design
//! and is checked for progress only. For a CPU-bound worker `w`:
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
//! fair share).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::error::RunqError;
use crate::topology::format_cpu_list;
use crate::workload::{AffinityIntent, ExitShape, SchedPolicy, WorkerReport, WorkloadConfig};

/// Check names, in report order.
pub const CHECK_NAMES: &[&str] = &[
    "workers_completed",
    "not_starved",
    "fairness_spread",
    "longest_gap",
    "cpuset_isolation",
    "wake_latency_p99",
    "migration_ratio",
];

/// Work types that stay runnable for the whole run, so they have a fair
/// share of CPU and their own longest gap means preemption, not sleep.
pub const CPU_BOUND_TYPES: &[&str] = &[
    "cpu_spin",
    "yield_heavy",
    "cache_pressure",
    "cache_yield",
    "affinity_churn",
    "page_fault_churn",
];

/// Work types whose iterations wait on storage: a slow disk, not the
/// scheduler, stalls them, so their counters are not judged for stalls
/// (they still count as others advancing).
pub const STORAGE_BOUND_TYPES: &[&str] = &["io_sync"];

/// The cgroup weight assumed when none is declared (cgroup v2 scale).
pub const DEFAULT_CGROUP_WEIGHT: u64 = 100;

/// A stall must also be this many times the worker's mean iteration period,
/// so a type whose single iteration sleeps long is not flagged for it.
const STALL_ITERATION_FACTOR: f64 = 4.0;

/// Kernel load weights for nice -20..=19 (`sched_prio_to_weight`).
const NICE_WEIGHTS: [u32; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904,
    3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87,
    70, 56, 45, 36, 29, 23, 18, 15,
];

/// The load weight of a `SCHED_IDLE` task.
const IDLE_WEIGHT: f64 = 3.0;

/// The kernel's load weight for a nice value (clamped to -20..=19).
pub fn nice_weight(nice: i32) -> f64 {
    NICE_WEIGHTS[(nice.clamp(-20, 19) + 20) as usize] as f64
}

/// Limits the checks apply. Every field has a default (see [`Default`]), so
/// a scenario sets only what it changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Least fraction of its fair CPU share a CPU-bound worker must get.
    pub min_cpu_share: f64,
    /// Largest max/min ratio of CPU rates (CPU time / wall time) within one
    /// class of CPU-bound workers in a cgroup.
    pub max_spread: f64,
    /// Longest time a worker's progress may stand still, in milliseconds.
    pub max_gap_ms: f64,
    /// Bound on the p99 wake latency of each cgroup, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wake_p99_us: Option<f64>,
    /// Bound on migrations per work unit of each worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_migration_ratio: Option<f64>,
    /// Bound on migrations per second of wall time of each worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_migrations_per_sec: Option<f64>,
    /// Least number of work units every worker must complete.
    pub min_work_units: u64,
    /// Checks reported as skipped (names from [`CHECK_NAMES`]), for
    /// scenarios that break an assumption on purpose (e.g. cpuset swaps).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disabled: Vec<String>,
}

impl Default for Thresholds {
    /// Defaults chosen to pass on a healthy 2-CPU host that also runs other
    /// work, and to fail on a worker stopped for a quarter of a second:
    /// `min_cpu_share` 0.2, `max_spread` 3.0 (three workers on two CPUs
    /// already give 2.0), `max_gap_ms` 250, `min_work_units` 1, no wake
    /// latency or migration bound.
    fn default() -> Self {
        Thresholds {
            min_cpu_share: 0.2,
            max_spread: 3.0,
            max_gap_ms: 250.0,
            max_wake_p99_us: None,
            max_migration_ratio: None,
            max_migrations_per_sec: None,
            min_work_units: 1,
            disabled: Vec::new(),
        }
    }
}

impl Thresholds {
    /// Rejects values no run could meet or that make a check meaningless,
    /// naming the field (`thresholds.<field>`) and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        fn bad(field: &str, value: impl std::fmt::Display, fix: &str) -> anyhow::Error {
            RunqError::bad_input(format!("thresholds.{field}: {value} is invalid; {fix}"))
        }
        if !(self.min_cpu_share.is_finite() && (0.0..=1.0).contains(&self.min_cpu_share)) {
            return Err(bad(
                "min_cpu_share",
                self.min_cpu_share,
                "use a fraction of the fair share between 0.0 and 1.0, e.g. 0.2",
            ));
        }
        if !(self.max_spread.is_finite() && self.max_spread >= 1.0) {
            return Err(bad(
                "max_spread",
                self.max_spread,
                "use a max/min ratio of at least 1.0, e.g. 3.0",
            ));
        }
        if !(self.max_gap_ms.is_finite() && self.max_gap_ms > 0.0) {
            return Err(bad(
                "max_gap_ms",
                self.max_gap_ms,
                "use a positive number of milliseconds, e.g. 250",
            ));
        }
        if let Some(v) = self.max_wake_p99_us {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(
                    "max_wake_p99_us",
                    v,
                    "use a positive number of microseconds, or leave it out for no bound",
                ));
            }
        }
        if let Some(v) = self.max_migration_ratio {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(
                    "max_migration_ratio",
                    v,
                    "use migrations per work unit >= 0, or leave it out for no bound",
                ));
            }
        }
        if let Some(v) = self.max_migrations_per_sec {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(
                    "max_migrations_per_sec",
                    v,
                    "use migrations per second >= 0, or leave it out for no bound",
                ));
            }
        }
        for name in &self.disabled {
            if !CHECK_NAMES.contains(&name.as_str()) {
                return Err(bad(
                    "disabled",
                    format!("{name:?}"),
                    &format!("valid check names: {}", CHECK_NAMES.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn is_disabled(&self, check: &str) -> bool {
        self.disabled.iter().any(|d| d == check)
    }
}

/// How a worker was set up, beyond what its report says. All optional: a
/// missing setup means policy `normal`, nice 0, no affinity, alive for the
/// whole run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSetup {
    /// Scheduling policy: `normal`, `batch`, `idle`, `fifo` or `rr`
    /// (a priority suffix such as `fifo(50)` is allowed).
    pub policy: String,
    pub nice: i32,
    /// The CPUs the worker was pinned to, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Vec<usize>>,
    /// When the worker was started, in the samples' clock (ms since the
    /// run's start); samples before it are ignored for this worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<f64>,
    /// When the worker was stopped; samples after it are ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_ms: Option<f64>,
}

impl Default for WorkerSetup {
    fn default() -> Self {
        WorkerSetup {
            policy: "normal".to_string(),
            nice: 0,
            affinity: None,
            started_ms: None,
            stopped_ms: None,
        }
    }
}

impl WorkerSetup {
    /// A setup with a policy label, nice value and optional affinity.
    pub fn new(policy: &str, nice: i32, affinity: Option<Vec<usize>>) -> Self {
        WorkerSetup {
            policy: policy.to_string(),
            nice,
            affinity,
            ..Default::default()
        }
    }

    /// A setup from the workload engine's policy type.
    pub fn from_policy(policy: &SchedPolicy, nice: i32, affinity: Option<Vec<usize>>) -> Self {
        Self::new(&policy_label(policy), nice, affinity)
    }

    /// One setup per worker of a workload, in report order. Only exact
    /// affinities are recorded; the others are resolved per worker by the
    /// workload engine, so isolation is then judged by the cpuset alone.
    pub fn for_config(config: &WorkloadConfig) -> Vec<WorkerSetup> {
        config
            .groups()
            .iter()
            .flat_map(|g| {
                let affinity = match &g.affinity {
                    AffinityIntent::Exact(cpus) => Some(cpus.clone()),
                    _ => None,
                };
                std::iter::repeat_n(Self::from_policy(&g.policy, g.nice, affinity), g.workers)
            })
            .collect()
    }

    fn policy_class(&self) -> PolicyClass {
        let p = self.policy.to_ascii_lowercase();
        if p.starts_with("fifo") || p.starts_with("rr") || p.starts_with("round_robin") {
            PolicyClass::RealTime
        } else if p.starts_with("idle") {
            PolicyClass::Idle
        } else {
            PolicyClass::Fair
        }
    }

    /// The policy without a priority suffix, lower case.
    fn policy_name(&self) -> String {
        let p = self.policy.to_ascii_lowercase();
        let end = p.find(['(', ':', ' ']).unwrap_or(p.len());
        p[..end].to_string()
    }
}

/// The label [`WorkerSetup::policy`] uses for a policy, e.g. `fifo(50)`.
pub fn policy_label(policy: &SchedPolicy) -> String {
    match policy {
        SchedPolicy::Normal => "normal".into(),
        SchedPolicy::Batch => "batch".into(),
        SchedPolicy::Idle => "idle".into(),
        SchedPolicy::Fifo(p) => format!("fifo({p})"),
        SchedPolicy::RoundRobin(p) => format!("rr({p})"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PolicyClass {
    Fair,
    Idle,
    RealTime,
}

/// The progress counters of a cgroup's workers at one moment of a hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProgressSample {
    /// Milliseconds since the run's start.
    pub at_ms: f64,
    /// `iterations[i]` is the counter of `workers[i]` of the cgroup; a
    /// shorter vector means the later workers did not exist yet.
    pub iterations: Vec<u64>,
}

/// One cgroup's part of a run: its workers' reports and what was sampled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CgroupRun {
    pub name: String,
    /// The cpuset the workers ran under: the union of every cpuset the
    /// cgroup had while they were in it; `None` when unrestricted. An empty
    /// set inherits the parent's CPUs and is not checked.
    pub cpuset: Option<Vec<usize>>,
    /// CPU weight on the cgroup v2 scale (1..10000); `None` = 100. Runs
    /// named `<cgroup>@<batch>` belong to `<cgroup>` for weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
    pub workers: Vec<WorkerReport>,
    /// `setups[i]` describes `workers[i]`; may be shorter (defaults apply).
    #[serde(default)]
    pub setups: Vec<WorkerSetup>,
    #[serde(default)]
    pub samples: Vec<ProgressSample>,
    /// How long the cgroup's workers ran, in milliseconds.
    pub run_ms: f64,
}

/// Everything the checks look at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CheckInput {
    pub cgroups: Vec<CgroupRun>,
    /// Online CPUs of the machine (the allowed set when nothing restricts).
    pub num_cpus: usize,
    /// The planned run duration, in milliseconds.
    pub duration_ms: f64,
}

/// The result of one check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CheckOutcome {
    pub name: String,
    pub passed: bool,
    /// Nothing to check (no bound set, no samples, disabled); counts as
    /// passed.
    #[serde(default)]
    pub skipped: bool,
    pub summary: String,
    /// One line per offender (on failure) or per notable fact.
    pub details: Vec<String>,
    /// The measured figure the limit applies to (worst case), if any.
    pub value: Option<f64>,
    pub limit: Option<f64>,
}

impl CheckOutcome {
    fn new(name: &str, passed: bool, summary: String) -> Self {
        CheckOutcome {
            name: name.to_string(),
            passed,
            skipped: false,
            summary,
            details: Vec::new(),
            value: None,
            limit: None,
        }
    }

    /// A check that had nothing to look at.
    pub fn skipped(name: &str, why: impl Into<String>) -> Self {
        CheckOutcome {
            skipped: true,
            ..CheckOutcome::new(name, true, why.into())
        }
    }

    fn measured(mut self, value: Option<f64>, limit: Option<f64>) -> Self {
        self.value = value.filter(|v| v.is_finite());
        self.limit = limit;
        self
    }

    /// `PASS`, `FAIL` or `SKIP`.
    pub fn verdict(&self) -> &'static str {
        match (self.passed, self.skipped) {
            (_, true) => "SKIP",
            (true, false) => "PASS",
            (false, false) => "FAIL",
        }
    }
}

/// All check results; `passed` is true when every check passed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AssertResult {
    pub passed: bool,
    pub checks: Vec<CheckOutcome>,
}

impl AssertResult {
    /// Builds a result from outcomes.
    pub fn from_checks(checks: Vec<CheckOutcome>) -> Self {
        AssertResult {
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }

    /// Adds an outcome (e.g. a payload's own check) and updates `passed`.
    pub fn push(&mut self, outcome: CheckOutcome) {
        self.passed &= outcome.passed;
        self.checks.push(outcome);
    }

    /// The outcome of a check by name.
    pub fn get(&self, name: &str) -> Option<&CheckOutcome> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &CheckOutcome> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

/// A worker with what the checks derive about it.
struct Entry<'a> {
    cgroup: usize,
    index: usize,
    report: &'a WorkerReport,
    setup: WorkerSetup,
    label: String,
    /// The CPUs it may run on (affinity ∩ cpuset, or all CPUs).
    allowed: BTreeSet<usize>,
    /// It has a real report (not a sentinel).
    reported: bool,
    cpu_bound: bool,
    class: PolicyClass,
}

impl Entry<'_> {
    fn wall_ns(&self, cgroup: &CgroupRun) -> f64 {
        if self.report.wall_time_ns > 0 {
            self.report.wall_time_ns as f64
        } else {
            cgroup.run_ms.max(0.0) * 1e6
        }
    }

    fn weight(&self) -> f64 {
        match self.class {
            PolicyClass::Idle => IDLE_WEIGHT,
            _ => nice_weight(self.setup.nice),
        }
    }

    /// CPU time over wall time.
    fn cpu_rate(&self, cgroup: &CgroupRun) -> f64 {
        let wall = self.wall_ns(cgroup);
        if wall > 0.0 {
            self.report.cpu_time_ns as f64 / wall
        } else {
            0.0
        }
    }
}

/// A cgroup's declared cpuset when it restricts anything.
fn declared_cpuset(cgroup: &CgroupRun) -> Option<BTreeSet<usize>> {
    cgroup
        .cpuset
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().copied().collect())
}

fn entries(input: &CheckInput) -> Vec<Entry<'_>> {
    let all: BTreeSet<usize> = (0..input.num_cpus.max(1)).collect();
    let mut out = Vec::new();
    for (ci, cg) in input.cgroups.iter().enumerate() {
        let cpuset = declared_cpuset(cg);
        for (wi, report) in cg.workers.iter().enumerate() {
            let setup = cg.setups.get(wi).cloned().unwrap_or_default();
            let affinity: Option<BTreeSet<usize>> = setup
                .affinity
                .as_ref()
                .filter(|a| !a.is_empty())
                .map(|a| a.iter().copied().collect());
            let allowed = match (&cpuset, &affinity) {
                (Some(c), Some(a)) => {
                    let both: BTreeSet<usize> = c.intersection(a).copied().collect();
                    if both.is_empty() {
                        a.clone()
                    } else {
                        both
                    }
                }
                (Some(c), None) => c.clone(),
                (None, Some(a)) => a.clone(),
                (None, None) => all.clone(),
            };
            let label = format!(
                "{} worker {} (tid {}, {})",
                cg.name, wi, report.tid, report.work_type
            );
            let class = setup.policy_class();
            out.push(Entry {
                cgroup: ci,
                index: wi,
                report,
                cpu_bound: CPU_BOUND_TYPES.contains(&report.work_type.as_str()),
                reported: report.completed,
                setup,
                label,
                allowed,
                class,
            });
        }
    }
    out
}

/// Words for an exit shape.
pub fn describe_exit(exit: &ExitShape) -> String {
    match exit {
        ExitShape::Exited(code) => format!("exited with code {code}"),
        ExitShape::Signaled(sig) => {
            let name = nix::sys::signal::Signal::try_from(*sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| "unknown".to_string());
            format!("killed by signal {sig} ({name})")
        }
        ExitShape::TimedOut => "timed out: no report before the collect deadline, killed".into(),
        ExitShape::WaitFailed(msg) => format!("could not be reaped: {msg}"),
        ExitShape::Panicked(msg) => format!("panicked: {msg}"),
    }
}

/// Runs every check over the input.
pub fn run_checks(input: &CheckInput, t: &Thresholds) -> AssertResult {
    let entries = entries(input);
    let mut checks = vec![
        check_completed(&entries),
        check_not_starved(input, &entries, t),
        check_spread(input, &entries, t),
        check_gaps(input, &entries, t),
        check_isolation(input, &entries),
        check_wake_latency(input, &entries, t),
        check_migrations(input, &entries, t),
    ];
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
    AssertResult::from_checks(checks)
}

fn unreported_note(entries: &[Entry]) -> Option<String> {
    let n = entries.iter().filter(|e| !e.reported).count();
    (n > 0).then(|| format!("{n} worker(s) without a report left out (see workers_completed)"))
}

fn check_completed(entries: &[Entry]) -> CheckOutcome {
    const NAME: &str = "workers_completed";
    let bad: Vec<&Entry> = entries
        .iter()
        .filter(|e| !(e.report.completed && e.report.exit == ExitShape::Exited(0)))
        .collect();
    if entries.is_empty() {
        return CheckOutcome::new(NAME, false, "no worker ran".into())
            .measured(Some(0.0), Some(1.0));
    }
    let mut out = if bad.is_empty() {
        CheckOutcome::new(
            NAME,
            true,
            format!("all {} workers completed and reported", entries.len()),
        )
    } else {
        CheckOutcome::new(
            NAME,
            false,
            format!(
                "{} of {} workers did not complete",
                bad.len(),
                entries.len()
            ),
        )
    };
    for e in &bad {
        let state = if e.report.completed {
            "reported, then"
        } else {
            "no report:"
        };
        out.details.push(format!(
            "{}: {state} {}",
            e.label,
            describe_exit(&e.report.exit)
        ));
    }
    out.measured(Some(bad.len() as f64), Some(0.0))
}

/// Why a worker has no fair share to check, or its fair fraction of wall
/// time.
enum FairShare {
    Fair {
        /// Its part of what the contenders got together.
        share: f64,
        /// CPU time the contenders (it included) got, in ns.
        pool_ns: f64,
        contenders: usize,
    },
    Exempt(&'static str),
}

fn fair_share(input: &CheckInput, entries: &[Entry], e: &Entry) -> FairShare {
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
    FairShare::Fair {
        share: own.0 / total_cg * e.weight() / own.1,
        pool_ns: present
            .iter()
            .map(|(o, _, f)| o.report.cpu_time_ns as f64 * f)
            .sum(),
        contenders: present.len(),
    }
}

/// The cgroup a [`CgroupRun`] belongs to: its name up to an `@`, so
/// batches spawned into one cgroup later (`cg0@step2`) share its weight.
pub fn cgroup_identity(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

fn check_not_starved(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    const NAME: &str = "not_starved";
    let mut offenders = Vec::new();
    let mut notes = Vec::new();
    let mut worst: Option<(f64, String)> = None;
    let mut progressed = 0;
    let mut share_checked = 0;
    for e in entries.iter().filter(|e| e.reported) {
        let cg = &input.cgroups[e.cgroup];
        if e.report.work_units < t.min_work_units {
            offenders.push(format!(
                "{}: made {} work units, fewer than min_work_units {}",
                e.label, e.report.work_units, t.min_work_units
            ));
        } else {
            progressed += 1;
        }
        match fair_share(input, entries, e) {
            FairShare::Exempt(why) => notes.push(format!("{}: {why}", e.label)),
            FairShare::Fair {
                share,
                pool_ns,
                contenders,
            } => {
                // One worker cannot use more than one CPU for its wall time.
                let fair_ns = (share * pool_ns).min(e.wall_ns(cg));
                if fair_ns <= 0.0 {
                    notes.push(format!(
                        "{}: its contenders got no CPU at all, share not checked",
                        e.label
                    ));
                    continue;
                }
                share_checked += 1;
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

/// A class of comparable workers in one cgroup and its CPU-rate spread.
pub(crate) struct SpreadClass {
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

fn spread_classes_of(input: &CheckInput, entries: &[Entry]) -> Vec<SpreadClass> {
    let mut classes: BTreeMap<(usize, String), Vec<&Entry>> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.reported && e.cpu_bound && e.class != PolicyClass::RealTime)
    {
        let key = format!(
            "{} {} nice {} on CPUs {}",
            e.report.work_type,
            e.setup.policy_name(),
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

/// The spread classes of an input (for the report's statistics).
pub(crate) fn spread_classes(input: &CheckInput) -> Vec<SpreadClass> {
    spread_classes_of(input, &entries(input))
}

fn check_spread(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    const NAME: &str = "fairness_spread";
    let classes = spread_classes_of(input, entries);
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

/// A stretch of samples over which one worker's counter stood still.
pub(crate) struct Stall {
    pub label: String,
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

fn stalls(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> Vec<Stall> {
    let all = series(input, entries);
    let mut out = Vec::new();
    for (si, s) in all.iter().enumerate() {
        if STORAGE_BOUND_TYPES.contains(&s.entry.report.work_type.as_str()) {
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

fn check_gaps(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    const NAME: &str = "longest_gap";
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

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn format_set(cpus: &BTreeSet<usize>) -> String {
    if cpus.is_empty() {
        return "none".to_string();
    }
    format_cpu_list(&cpus.iter().copied().collect::<Vec<_>>())
}

fn check_isolation(input: &CheckInput, entries: &[Entry]) -> CheckOutcome {
    const NAME: &str = "cpuset_isolation";
    let mut offenders = Vec::new();
    let mut notes = Vec::new();
    let mut checked = 0;
    for (ci, cg) in input.cgroups.iter().enumerate() {
        if matches!(&cg.cpuset, Some(c) if c.is_empty()) && !cg.workers.is_empty() {
            notes.push(format!(
                "{}: empty cpuset (inherits its parent's CPUs): not checked",
                cg.name
            ));
        }
        let cpuset = declared_cpuset(cg);
        for e in entries.iter().filter(|e| e.cgroup == ci && e.reported) {
            let affinity: Option<BTreeSet<usize>> = e
                .setup
                .affinity
                .as_ref()
                .filter(|a| !a.is_empty())
                .map(|a| a.iter().copied().collect());
            if cpuset.is_none() && affinity.is_none() {
                continue;
            }
            checked += 1;
            if let Some(c) = &cpuset {
                let outside: BTreeSet<usize> = e.report.cpus_used.difference(c).copied().collect();
                if !outside.is_empty() {
                    offenders.push(format!(
                        "{}: ran on CPUs {} outside cpuset {} of {}",
                        e.label,
                        format_set(&outside),
                        format_set(c),
                        cg.name
                    ));
                }
            }
            if let Some(a) = &affinity {
                let outside: BTreeSet<usize> = e.report.cpus_used.difference(a).copied().collect();
                if !outside.is_empty() {
                    offenders.push(format!(
                        "{}: ran on CPUs {} outside its affinity {}",
                        e.label,
                        format_set(&outside),
                        format_set(a)
                    ));
                }
            }
        }
    }
    if checked == 0 {
        let mut out =
            CheckOutcome::skipped(NAME, "no worker ran under a cpuset or a declared affinity");
        out.details = notes;
        out.details.extend(unreported_note(entries));
        return out;
    }
    let violations = offenders.len();
    let mut out = CheckOutcome::new(
        NAME,
        violations == 0,
        if violations == 0 {
            format!("{checked} restricted workers stayed on their CPUs")
        } else {
            format!("{violations} violation(s) among {checked} restricted workers")
        },
    );
    out.details = offenders;
    out.details.extend(notes);
    out.details.extend(unreported_note(entries));
    out.measured(Some(violations as f64), Some(0.0))
}

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

fn check_wake_latency(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    const NAME: &str = "wake_latency_p99";
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

fn check_migrations(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    const NAME: &str = "migration_ratio";
    let total: u64 = entries
        .iter()
        .filter(|e| e.reported)
        .map(|e| e.report.migrations)
        .sum();
    if t.max_migration_ratio.is_none() && t.max_migrations_per_sec.is_none() {
        return CheckOutcome::skipped(
            NAME,
            format!(
                "no bound set (thresholds.max_migration_ratio, max_migrations_per_sec); {total} migrations in all"
            ),
        );
    }
    let mut offenders = Vec::new();
    let mut worst_ratio: f64 = 0.0;
    let mut worst_rate: f64 = 0.0;
    for e in entries.iter().filter(|e| e.reported) {
        let cg = &input.cgroups[e.cgroup];
        let m = e.report.migrations as f64;
        let ratio = m / e.report.work_units.max(1) as f64;
        let secs = e.wall_ns(cg) / 1e9;
        let rate = if secs > 0.0 { m / secs } else { 0.0 };
        worst_ratio = worst_ratio.max(ratio);
        worst_rate = worst_rate.max(rate);
        if let Some(max) = t.max_migration_ratio {
            if ratio > max {
                offenders.push(format!(
                    "{}: {} migrations over {} work units = {ratio:.4} per unit (max {max})",
                    e.label, e.report.migrations, e.report.work_units
                ));
            }
        }
        if let Some(max) = t.max_migrations_per_sec {
            if rate > max {
                offenders.push(format!(
                    "{}: {} migrations in {secs:.2} s = {rate:.1}/s (max {max}/s)",
                    e.label, e.report.migrations
                ));
            }
        }
    }
    let mut out = CheckOutcome::new(
        NAME,
        offenders.is_empty(),
        format!("{total} migrations; worst {worst_ratio:.4} per work unit, {worst_rate:.1}/s"),
    );
    out.details = offenders;
    out.details.extend(unreported_note(entries));
    let (value, limit) = match t.max_migration_ratio {
        Some(max) => (worst_ratio, max),
        None => (worst_rate, t.max_migrations_per_sec.unwrap_or_default()),
    };
    out.measured(Some(value), Some(limit))
}

/// The longest stall the samples show for any worker whose others advanced,
/// and the longest own gap of any CPU-bound worker (for statistics).
pub(crate) fn worst_gap_ms(input: &CheckInput, t: &Thresholds) -> Option<f64> {
    let entries = entries(input);
    let sampled = stalls(
        input,
        &entries,
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
