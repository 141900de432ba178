//! Per-worker measurements taken inside the worker: CPU clock, current CPU
//! each iteration (migrations, CPUs used), longest gap between iteration
//! ends, and reservoir-sampled latencies and iteration costs.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::report::{
    ExitShape, Gap, Migration, WorkerReport, ITERATION_COST_CAP, MIGRATION_EVENTS_CAP,
    WAKE_LATENCY_CAP,
};

/// CLOCK_MONOTONIC in ns.
pub fn mono_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// CPU time of the calling thread in ns.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(ClockId::CLOCK_THREAD_CPUTIME_ID)
}

fn clock_ns(clock: ClockId) -> u64 {
    // Cannot fail for the clocks used here.
    let ts = clock_gettime(clock).unwrap_or(TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// The CPU the calling thread runs on (vDSO/rseq, cheap).
pub fn current_cpu() -> usize {
    nix::sched::sched_getcpu().unwrap_or(0)
}

/// Algorithm R reservoir: keeps a uniform sample of at most `cap` values
/// and the total count.
pub struct Reservoir {
    cap: usize,
    pub samples: Vec<u64>,
    pub count: u64,
}

impl Reservoir {
    pub fn new(cap: usize) -> Self {
        Reservoir {
            cap,
            samples: Vec::new(),
            count: 0,
        }
    }

    pub fn add(&mut self, value: u64, rng: &mut StdRng) {
        self.count += 1;
        if self.samples.len() < self.cap {
            self.samples.push(value);
        } else {
            let j = rng.gen_range(0..self.count);
            if (j as usize) < self.cap {
                self.samples[j as usize] = value;
            }
        }
    }
}

pub struct Telemetry<'a> {
    counter: &'a AtomicU64,
    rng: StdRng,
    start_ns: u64,
    start_cpu_ns: u64,
    last_end_ns: u64,
    last_cpu: usize,
    pure_compute: bool,
    pub units: u64,
    iterations: u64,
    migrations: u64,
    migration_events: Vec<Migration>,
    cpus_used: BTreeSet<usize>,
    longest_gap: Option<Gap>,
    wake: Reservoir,
    cost: Reservoir,
}

impl<'a> Telemetry<'a> {
    /// Start measuring now. `counter` is the worker's shared iteration
    /// counter.
    pub fn start(counter: &'a AtomicU64, seed: u64, pure_compute: bool) -> Self {
        let now = mono_ns();
        let cpu = current_cpu();
        let mut cpus_used = BTreeSet::new();
        cpus_used.insert(cpu);
        Telemetry {
            counter,
            rng: StdRng::seed_from_u64(seed),
            start_ns: now,
            start_cpu_ns: thread_cpu_ns(),
            last_end_ns: now,
            last_cpu: cpu,
            pure_compute,
            units: 0,
            iterations: 0,
            migrations: 0,
            migration_events: Vec::new(),
            cpus_used,
            longest_gap: None,
            wake: Reservoir::new(WAKE_LATENCY_CAP),
            cost: Reservoir::new(ITERATION_COST_CAP),
        }
    }

    /// One iteration ended, having done `units` of work.
    #[inline]
    pub fn tick(&mut self, units: u64) {
        let now = mono_ns();
        let cpu = current_cpu();
        self.units += units;
        self.iterations += 1;
        self.counter.store(self.iterations, Ordering::Relaxed);
        let gap = now.saturating_sub(self.last_end_ns);
        self.last_end_ns = now;
        if cpu != self.last_cpu {
            self.migrations += 1;
            if self.migration_events.len() < MIGRATION_EVENTS_CAP {
                self.migration_events.push(Migration {
                    at_ms: (now - self.start_ns) as f64 / 1e6,
                    from_cpu: self.last_cpu,
                    to_cpu: cpu,
                });
            }
            self.cpus_used.insert(cpu);
            self.last_cpu = cpu;
        }
        let gap_ms = gap as f64 / 1e6;
        if self.longest_gap.as_ref().is_none_or(|g| gap_ms > g.ms) {
            self.longest_gap = Some(Gap {
                ms: gap_ms,
                cpu,
                at_ms: (now - self.start_ns) as f64 / 1e6,
            });
        }
        if self.pure_compute {
            self.cost.add(gap, &mut self.rng);
        }
    }

    /// A wake or resume latency.
    #[inline]
    pub fn latency(&mut self, ns: u64) {
        self.wake.add(ns, &mut self.rng);
    }

    /// A requested sleep of `ns` is not a scheduler gap: only the
    /// overshoot counts towards the gap that ends with the next tick.
    pub fn credit_sleep(&mut self, ns: u64) {
        self.last_end_ns += ns;
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    pub fn into_report(
        self,
        tid: i32,
        group: usize,
        index: usize,
        work_type: &str,
        units_override: Option<u64>,
    ) -> WorkerReport {
        let wall = mono_ns().saturating_sub(self.start_ns);
        let cpu = thread_cpu_ns().saturating_sub(self.start_cpu_ns);
        WorkerReport {
            tid,
            group,
            index,
            work_type: work_type.to_string(),
            work_units: units_override.unwrap_or(self.units),
            cpu_time_ns: cpu,
            wall_time_ns: wall,
            off_cpu_ns: wall.saturating_sub(cpu),
            migrations: self.migrations,
            migration_events: self.migration_events,
            cpus_used: self.cpus_used,
            longest_gap: self.longest_gap,
            wake_latency_ns: self.wake.samples,
            wake_latency_count: self.wake.count,
            iteration_cost_ns: self.cost.samples,
            completed: true,
            exit: ExitShape::Exited(0),
        }
    }
}
