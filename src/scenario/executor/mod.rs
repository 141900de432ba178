//! Runs a scenario on the host: cgroups, workers, steps, holds, captures,
//! then checks.
//!
//! The controller stays single-threaded: sampling the workers' iteration
//! counters (every [`RunOptions::sample_interval`]), the progress bar,
//! periodic captures and loop holds all run from the hold loop on the main
//! thread.
//!
//! Workers are spawned in *batches*: the works of a cgroup when it is
//! created, or the works of one `spawn` op. A batch is spawned parked,
//! moved into its cgroup (whole processes through `cgroup.procs`; thread
//! workers live in one host process per work, which moves with its
//! threads), pinned when its work has an affinity intent, then started.
//! Each batch becomes one `CgroupRun` of the report: its workers share a
//! lifetime, so fair shares and progress samples line up.
//!
//! # Step boundaries
//! [`ExecutorHooks::at_boundary`] is called before every step and once after
//! the last. What is live there depends on [`BoundaryMode`]:
//! - `Live` (normal runs): cgroups exist and workers keep running across the
//!   boundary; the hook sees their pids and cgroup directories.
//! - `Quiescent` (exploration): every worker was stopped and collected and
//!   every cgroup removed before the hook runs, so no child process, cgroup,
//!   pipe or shared mapping of the run exists: the process may fork there.
//!   The next step re-creates the live cgroups (under a root named after the
//!   process that continues, so forked timelines never share cgroups) and
//!   re-spawns the works that were running, with their declared affinity.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`execute`] / [`execute_with`], [`Execution`], the `Executor`'s state and the phases around the steps (start, collect) |
//! | `interrupt.rs` | the SIGINT/SIGTERM handler: [`install_interrupt_handler`], [`interrupt_signal`], [`check_interrupted`] |
//! | `options.rs` | [`RunOptions`] and how they change a scenario |
//! | `hooks.rs` | what step-boundary hooks see: [`BoundaryMode`], [`Boundary`], [`LiveCgroupView`], [`StepResult`], [`ExecutorHooks`], [`NoHooks`] |
//! | `scheduler.rs` | the scheduler under test during a run: starting it, watching it from the hold loop, showing it the workers |
//! | `cgroups.rs` | the run's cgroups: the manager, creating a declared cgroup, the CPUs a cgroup allows |
//! | `batch.rs` | one batch of workers: its samples, affinity record and CPU bound, and its `CgroupRun` when it stops |
//! | `workers.rs` | spawning a batch into its cgroup (parked, moved, pinned, started) and stopping batches |
//! | `payloads.rs` | starting, ticking and collecting the scenario's payloads |
//! | `steps.rs` | the steps: boundaries and their hooks, quiescing and reviving for exploration, per-step results |
//! | `ops.rs` | applying one [`Op`](crate::scenario::Op) to the live run |
//! | `hold.rs` | a step's hold: sampling, periodic captures, loop ops, noise, the progress bar |
//!
//! The `Executor` is declared here, above the files that implement its
//! parts, so its fields stay private to this folder.

mod batch;
mod cgroups;
mod hold;
mod hooks;
mod interrupt;
mod ops;
mod options;
mod payloads;
mod scheduler;
mod steps;
mod workers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};

use super::dsl::{CgroupDef, HoldSpec, Scenario, Step, WorkSpec};
use super::validate::validate;
use crate::cgroup::CgroupManager;
use crate::check::CgroupRun;
use crate::host::{HostNoise, NoiseSampler};
use crate::scheduler::{SchedulerReport, SchedulerRun};
use crate::snapshot::{PeriodicCaptures, SnapshotBridge, SnapshotSection};
use crate::topology::Topology;
use crate::workload::payload::{PayloadHandle, PayloadReport};
use batch::Batch;
use cgroups::LiveCgroup;
use scheduler::start_scheduler;

pub use hooks::{Boundary, BoundaryMode, ExecutorHooks, LiveCgroupView, NoHooks, StepResult};
pub use interrupt::{check_interrupted, install_interrupt_handler, interrupt_signal};
pub use options::{RunOptions, DEFAULT_SAMPLE_INTERVAL};

/// Everything a run measured, before checks.
#[derive(Debug)]
pub struct Execution {
    pub scenario: Scenario,
    pub seed: u64,
    pub topology: Topology,
    pub cgroup_runs: Vec<CgroupRun>,
    pub captures: SnapshotSection,
    pub duration_ms: f64,
    pub cgroup_root: String,
    /// One report per payload of the scenario, in declaration order.
    pub payloads: Vec<PayloadReport>,
    /// Foreign load on the run's CPUs during the holds.
    pub noise: HostNoise,
    /// The scheduler under test, when the scenario names one.
    pub scheduler: Option<SchedulerReport>,
}

/// Runs `scenario` with a seeded RNG and no hooks.
pub fn execute(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<Execution> {
    let seed = opts.resolved_seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    execute_with(scenario, opts, seed, &mut rng, &mut NoHooks)
}

/// Runs `scenario` drawing every choice from `rng` and calling `hooks` at
/// step boundaries. `seed` is only recorded in the report.
///
/// The run's phases, in order: `Executor::new` (nothing exists yet),
/// `Executor::start` (cgroups, workers, payloads), `Executor::run_steps`
/// (boundaries, ops, holds; samples are taken during holds),
/// `Executor::collect` (payloads and workers stopped, cgroups removed),
/// then the [`Execution`] is assembled from what was collected.
pub fn execute_with(
    scenario: &Scenario,
    opts: &RunOptions,
    seed: u64,
    rng: &mut dyn RngCore,
    hooks: &mut dyn ExecutorHooks,
) -> anyhow::Result<Execution> {
    let topology = Topology::host()?;
    let mut scenario = opts.apply(scenario);
    validate(&scenario, &topology)?;
    let declared_steps = std::mem::take(&mut scenario.steps);
    // No steps: hold the initial state for the whole run.
    let mut steps = if declared_steps.is_empty() {
        vec![Step::hold(HoldSpec::Fraction(1.0))]
    } else {
        declared_steps.clone()
    };
    let scheduler = start_scheduler(&scenario, opts)?;
    if scheduler.as_ref().is_some_and(|s| !s.attached()) {
        // Workers are never started under a scheduler that did not attach.
        scenario.steps = declared_steps;
        return Ok(Execution {
            scenario,
            seed,
            topology,
            cgroup_runs: Vec::new(),
            captures: SnapshotSection::default(),
            duration_ms: 0.0,
            cgroup_root: String::new(),
            payloads: Vec::new(),
            // Nothing ran, so nothing was sampled.
            noise: NoiseSampler::new(Instant::now()).finish(),
            scheduler: scheduler.map(|s| s.finish(0)),
        });
    }

    let mut ex = Executor::new(&scenario, opts, topology.clone(), rng);
    ex.scheduler = scheduler;
    if let Some(scheduler) = &mut ex.scheduler {
        scheduler.set_origin(ex.run_start);
    }
    let started = Instant::now();
    ex.start(&scenario, &steps)?;
    ex.run_steps(&scenario, &mut steps, hooks)?;
    ex.collect()?;
    let duration_ms = ms_since(started);
    let last_step = ex.step_index + 1;
    let scheduler = ex.scheduler.take().map(|s| s.finish(last_step));

    scenario.steps = if declared_steps.is_empty() {
        Vec::new()
    } else {
        steps
    };
    Ok(Execution {
        scenario,
        seed,
        topology,
        cgroup_runs: std::mem::take(&mut ex.finished),
        captures: ex.bridge.drain(),
        duration_ms,
        cgroup_root: ex.cgroup_root.clone(),
        payloads: std::mem::take(&mut ex.payload_reports),
        noise: std::mem::replace(&mut ex.noise, NoiseSampler::new(Instant::now())).finish(),
        scheduler,
    })
}

// Field order matters: batches (workers) drop before the manager (cgroups).
struct Executor<'r> {
    batches: Vec<Batch>,
    /// Running payloads (dropping one kills its tree, before the cgroups go).
    payloads: Vec<PayloadHandle>,
    payload_reports: Vec<PayloadReport>,
    manager: Option<CgroupManager>,
    cgroups: BTreeMap<String, LiveCgroup>,
    declared: BTreeMap<String, CgroupDef>,
    finished: Vec<CgroupRun>,
    /// Quiescent mode: what to re-spawn at the next step.
    resume: Vec<(String, String, Vec<WorkSpec>)>,
    bridge: SnapshotBridge,
    periodic: Option<PeriodicCaptures>,
    topology: Topology,
    rng: &'r mut dyn RngCore,
    opts: RunOptions,
    total: Duration,
    progress: Option<indicatif::ProgressBar>,
    run_start: Instant,
    step_index: usize,
    /// Milliseconds held in finished steps (progress position).
    held_ms: u64,
    cgroup_root: String,
    noise: NoiseSampler,
    /// The scheduler under test: last, so it outlives every worker.
    scheduler: Option<SchedulerRun>,
}

impl<'r> Executor<'r> {
    /// An executor for `scenario`: nothing is created yet.
    fn new(
        scenario: &Scenario,
        opts: &RunOptions,
        topology: Topology,
        rng: &'r mut dyn RngCore,
    ) -> Self {
        Executor {
            batches: Vec::new(),
            payloads: Vec::new(),
            payload_reports: Vec::new(),
            manager: None,
            cgroups: BTreeMap::new(),
            declared: scenario
                .cgroups
                .iter()
                .map(|d| (d.name.clone(), d.clone()))
                .collect(),
            finished: Vec::new(),
            resume: Vec::new(),
            bridge: SnapshotBridge::new(),
            periodic: scenario
                .periodic_capture_ms
                .map(|ms| PeriodicCaptures::new(Duration::from_millis(ms), Instant::now())),
            topology,
            rng,
            opts: opts.clone(),
            total: scenario.duration,
            progress: None,
            run_start: Instant::now(),
            step_index: 0,
            held_ms: 0,
            cgroup_root: String::new(),
            noise: NoiseSampler::new(Instant::now()),
            scheduler: None,
        }
    }

    /// Creates the run root and the initial cgroups with their workers,
    /// starts the payloads and the progress bar.
    fn start(&mut self, scenario: &Scenario, steps: &[Step]) -> anyhow::Result<()> {
        self.open_manager()?;
        for def in scenario.cgroups.iter().filter(|d| !d.deferred) {
            self.add_cgroup(def.clone(), true)?;
        }
        self.start_payloads(&scenario.payloads)?;
        self.start_progress(steps, scenario);
        Ok(())
    }

    /// The end of the run: payloads and workers stopped and collected, the
    /// progress bar cleared, every cgroup removed.
    fn collect(&mut self) -> anyhow::Result<()> {
        self.collect_payloads();
        self.stop_everything();
        if let Some(pb) = self.progress.take() {
            pb.finish_and_clear();
        }
        self.close_manager()
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
