//! What each worker reports, and the sentinel for one that could not.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// At most this many migrations are listed with timestamps; `migrations`
/// keeps the full count.
pub const MIGRATION_EVENTS_CAP: usize = 1024;
/// Reservoir size for wake/resume latency samples.
pub const WAKE_LATENCY_CAP: usize = 100_000;
/// Reservoir size for per-iteration cost samples.
pub const ITERATION_COST_CAP: usize = 10_000;

/// How a worker ended, as seen by the controller.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ExitShape {
    /// Exit status of the worker process (thread mode: of the group's host).
    Exited(i32),
    /// Killed by this signal before reporting.
    Signaled(i32),
    /// Still running at the collect deadline; SIGKILLed.
    TimedOut,
    /// waitpid failed.
    WaitFailed(String),
    /// The body panicked (message), or the report could not be read.
    Panicked(String),
}

/// One migration: the worker saw a different CPU than on its last
/// iteration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Migration {
    /// Milliseconds since the worker started its body.
    pub at_ms: f64,
    pub from_cpu: usize,
    pub to_cpu: usize,
}

/// The longest wall-clock gap between two consecutive iteration ends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Gap {
    pub ms: f64,
    /// CPU the worker was on when the gap ended.
    pub cpu: usize,
    /// When the gap ended, ms since the worker started its body.
    pub at_ms: f64,
}

/// Telemetry of one worker. Sentinels (workers that died, hung or wrote
/// garbage) have `completed == false`, the exit shape, and the work units
/// read from the shared counter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkerReport {
    /// pid (Fork mode) or tid (Thread mode).
    pub tid: i32,
    pub group: usize,
    /// Index within the group.
    pub index: usize,
    pub work_type: String,
    pub work_units: u64,
    /// CLOCK_THREAD_CPUTIME_ID over the body.
    pub cpu_time_ns: u64,
    pub wall_time_ns: u64,
    /// wall - cpu.
    pub off_cpu_ns: u64,
    pub migrations: u64,
    /// The first [`MIGRATION_EVENTS_CAP`] migrations.
    pub migration_events: Vec<Migration>,
    pub cpus_used: BTreeSet<usize>,
    pub longest_gap: Option<Gap>,
    /// Reservoir sample (cap [`WAKE_LATENCY_CAP`]) of wake latencies
    /// (waker's stamp to wakee running) or resume latencies (actual minus
    /// requested sleep).
    pub wake_latency_ns: Vec<u64>,
    /// Total latencies observed (the reservoir holds at most the cap).
    pub wake_latency_count: u64,
    /// Reservoir sample (cap [`ITERATION_COST_CAP`]) of iteration costs,
    /// for pure compute types only.
    pub iteration_cost_ns: Vec<u64>,
    /// The body ran until the stop and reported normally.
    pub completed: bool,
    pub exit: ExitShape,
}

impl WorkerReport {
    /// A report for a worker that produced none.
    pub fn sentinel(
        tid: i32,
        group: usize,
        index: usize,
        work_type: &str,
        exit: ExitShape,
    ) -> Self {
        WorkerReport {
            tid,
            group,
            index,
            work_type: work_type.to_string(),
            work_units: 0,
            cpu_time_ns: 0,
            wall_time_ns: 0,
            off_cpu_ns: 0,
            migrations: 0,
            migration_events: Vec::new(),
            cpus_used: BTreeSet::new(),
            longest_gap: None,
            wake_latency_ns: Vec::new(),
            wake_latency_count: 0,
            iteration_cost_ns: Vec::new(),
            completed: false,
            exit,
        }
    }

    /// Work units per second of wall time.
    pub fn rate(&self) -> f64 {
        if self.wall_time_ns == 0 {
            0.0
        } else {
            self.work_units as f64 * 1e9 / self.wall_time_ns as f64
        }
    }
}
