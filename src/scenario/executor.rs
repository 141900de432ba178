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

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Context;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use rand::{RngCore, SeedableRng};

use super::dsl::{CgroupDef, HoldSpec, Op, Scenario, Step, WorkSpec};
use super::resolve::{resolve_affinity, resolve_cpuset};
use super::validate::{parent_of, validate, workload_config};
use crate::cgroup::CgroupManager;
use crate::check::{CgroupRun, ProgressSample, WorkerSetup};
use crate::error::RunqError;
use crate::host::{HostNoise, NoiseSampler};
use crate::scheduler::{SchedulerReport, SchedulerRun, SchedulerSpec, EXIT_CAPTURE_TAG};
use crate::snapshot::{CaptureTargets, PeriodicCaptures, SnapshotBridge, SnapshotSection};
use crate::topology::{format_cpu_list, Topology};
use crate::workload::payload::{PayloadHandle, PayloadReport};
use crate::workload::{AffinityIntent, SchedPolicy, WorkerReport, WorkloadHandle};

/// The signal that asked the run to end (0: none), set by the handler that
/// [`install_interrupt_handler`] installs.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_interrupt(signal: libc::c_int) {
    INTERRUPTED.store(signal, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM end a run cleanly: the hold loop notices within
/// one sample interval and the run fails with an environment error after
/// stopping every worker and removing its cgroups. Forked workers inherit
/// the handler, so a Ctrl-C sent to the whole process group leaves them to
/// the controller's prompt stop.
pub fn install_interrupt_handler() -> anyhow::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(note_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is
        // async-signal-safe; no previous handler is relied upon.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing a {signal} handler"))?;
    }
    Ok(())
}

/// The signal (SIGINT or SIGTERM) that arrived since
/// [`install_interrupt_handler`] ran, if any.
pub fn interrupt_signal() -> Option<Signal> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Signal::try_from(signal).ok(),
    }
}

/// Fails when SIGINT or SIGTERM arrived since the handler was installed.
pub fn check_interrupted() -> anyhow::Result<()> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => Ok(()),
        signal => Err(RunqError::environment(format!(
            "interrupted by {}: the workers were stopped and the run's cgroups removed",
            Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.to_string())
        ))),
    }
}

/// Default interval between samples of the iteration counters.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_millis(15);

/// What is live at a step boundary (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BoundaryMode {
    #[default]
    Live,
    Quiescent,
}

/// How to run a scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Seed of the run's RNG (random affinity subsets, worker seeds). `None`
    /// picks one from the clock; the report records it.
    pub seed: Option<u64>,
    /// Replaces the scenario's duration.
    pub duration: Option<Duration>,
    /// Replaces the worker count of every work.
    pub workers: Option<usize>,
    /// Draw a progress bar on stderr when it is a terminal.
    pub progress: bool,
    pub boundary_mode: BoundaryMode,
    pub sample_interval: Duration,
    /// Replaces the scenario's scheduler under test.
    pub scheduler: Option<SchedulerSpec>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            seed: None,
            duration: None,
            workers: None,
            progress: false,
            boundary_mode: BoundaryMode::Live,
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            scheduler: None,
        }
    }
}

impl RunOptions {
    /// The scenario with `duration` and `workers` applied.
    pub fn apply(&self, scenario: &Scenario) -> Scenario {
        let mut s = scenario.clone();
        if let Some(d) = self.duration {
            s.duration = d;
        }
        if let Some(spec) = &self.scheduler {
            s.scheduler = Some(spec.clone());
        }
        if let Some(n) = self.workers {
            for def in &mut s.cgroups {
                for work in &mut def.works {
                    work.workers = n;
                }
            }
            for step in &mut s.steps {
                for op in &mut step.ops {
                    if let Op::Spawn { works, .. } = op {
                        for work in works {
                            work.workers = n;
                        }
                    }
                }
            }
        }
        s
    }

    /// The seed to use: the given one, or one from the clock.
    pub fn resolved_seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ u64::from(std::process::id())
        })
    }
}

/// Live workers of one cgroup at a boundary.
#[derive(Clone, Debug)]
pub struct LiveCgroupView {
    pub cgroup: String,
    pub worker_pids: Vec<i32>,
    pub process_pids: Vec<i32>,
    /// Every hierarchy directory backing the cgroup.
    pub paths: Vec<PathBuf>,
}

/// What one finished step did.
#[derive(Clone, Debug, Default)]
pub struct StepResult {
    pub index: usize,
    pub elapsed_ms: f64,
    /// Iterations each live cgroup's workers made during the step's hold
    /// (summed over its workers).
    pub iterations: BTreeMap<String, u64>,
    /// Batches stopped during or at the end of this step, with reports.
    pub collected: Vec<CgroupRun>,
}

/// A step boundary, as hooks see it.
pub struct Boundary<'a> {
    /// The step about to run (`steps.len()` after the last one).
    pub index: usize,
    pub mode: BoundaryMode,
    /// The run's RNG: draw choices from it so explored runs replay.
    pub rng: &'a mut dyn RngCore,
    /// The plan. Hooks may rewrite `steps[index..]` or push steps; the plan
    /// is validated again before it continues (bad input stops the run).
    pub steps: &'a mut Vec<Step>,
    /// The step that just finished (`None` before the first).
    pub previous: Option<&'a StepResult>,
    /// Live workers (empty in `Quiescent` mode).
    pub live: Vec<LiveCgroupView>,
}

/// Callbacks at step boundaries (exploration, tests).
pub trait ExecutorHooks {
    fn at_boundary(&mut self, boundary: &mut Boundary<'_>) -> anyhow::Result<()> {
        let _ = boundary;
        Ok(())
    }
}

/// Hooks that do nothing.
pub struct NoHooks;
impl ExecutorHooks for NoHooks {}

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

struct LiveWork {
    spec: WorkSpec,
    handle: WorkloadHandle,
}

struct Batch {
    cgroup: String,
    label: String,
    works: Vec<LiveWork>,
    /// The run's start: samples and setups use ms since then.
    run_start: Instant,
    started: Instant,
    samples: Vec<ProgressSample>,
    /// Per worker: union of the masks it was pinned to, `None` once it was
    /// unpinned or its cgroup's cpuset changed (a v1 cpuset resets masks).
    affinity: Vec<Option<BTreeSet<usize>>>,
    pinned: Vec<bool>,
    weight: Option<u32>,
    /// Union of every CPU set the batch's cgroups allowed while it ran
    /// (`None`: never restricted).
    cpus_bound: Option<BTreeSet<usize>>,
    iterations_at_step_start: u64,
}

impl Batch {
    fn worker_pids(&self) -> Vec<i32> {
        self.works
            .iter()
            .flat_map(|w| w.handle.worker_pids())
            .collect()
    }

    fn process_pids(&self) -> Vec<i32> {
        self.works
            .iter()
            .flat_map(|w| w.handle.process_pids())
            .collect()
    }

    fn iterations(&self) -> Vec<u64> {
        self.works
            .iter()
            .flat_map(|w| w.handle.snapshot_iterations())
            .collect()
    }

    fn sample(&mut self) {
        let iterations = self.iterations();
        self.samples.push(ProgressSample {
            at_ms: ms_since(self.run_start),
            iterations,
        });
    }

    /// Index of the first worker of work `w` within the batch.
    fn offset(&self, w: usize) -> usize {
        self.works[..w].iter().map(|x| x.spec.workers).sum()
    }

    /// Records masks given to the workers of work `w`.
    fn record_masks(&mut self, w: usize, masks: Option<Vec<Vec<usize>>>) {
        let offset = self.offset(w);
        let count = self.works[w].spec.workers;
        for i in 0..count {
            let slot = offset + i;
            match &masks {
                Some(masks) => {
                    let mask = &masks[i % masks.len()];
                    if self.pinned[slot] {
                        if let Some(bound) = &mut self.affinity[slot] {
                            bound.extend(mask.iter().copied());
                        }
                    } else {
                        self.pinned[slot] = true;
                        self.affinity[slot] = Some(mask.iter().copied().collect());
                    }
                }
                None => {
                    if self.pinned[slot] {
                        self.affinity[slot] = None;
                    }
                }
            }
        }
    }

    /// The kernel may have reset every mask (cpuset change or move).
    fn forget_masks(&mut self) {
        for slot in 0..self.affinity.len() {
            self.affinity[slot] = None;
        }
    }

    /// Adds the CPUs a cpuset change or move lets the workers reach from
    /// now on. `cpus_bound == None` means "any CPU" and stays so: workers
    /// that ran unrestricted may have used any CPU before a later narrowing.
    fn widen_bound(&mut self, cpus: Option<&Vec<usize>>, topo: &Topology) {
        if let Some(bound) = &mut self.cpus_bound {
            bound.extend(cpus.cloned().unwrap_or_else(|| topo.cpu_ids()));
        }
    }

    /// Stops every worker and turns the batch into a report entry.
    fn finish(mut self) -> CgroupRun {
        self.sample();
        let run_ms = ms_since(self.started);
        let started_ms = self.started.duration_since(self.run_start).as_secs_f64() * 1e3;
        let stopped_ms = ms_since(self.run_start);
        let mut workers: Vec<WorkerReport> = Vec::new();
        let mut setups = Vec::new();
        let mut slot = 0;
        for work in self.works {
            let reports = work.handle.stop_and_collect();
            for _ in 0..reports.len() {
                let affinity = self
                    .affinity
                    .get(slot)
                    .cloned()
                    .flatten()
                    .map(|b| b.into_iter().collect());
                let mut setup =
                    WorkerSetup::new(work.spec.policy.clone(), work.spec.nice, affinity);
                setup.started_ms = Some(started_ms);
                setup.stopped_ms = Some(stopped_ms);
                setups.push(setup);
                slot += 1;
            }
            workers.extend(reports);
        }
        CgroupRun {
            name: self.label,
            cpuset: self.cpus_bound.map(|b| b.into_iter().collect()),
            weight: self.weight.map(u64::from),
            workers,
            setups,
            samples: self.samples,
            run_ms,
        }
    }
}

struct LiveCgroup {
    def: CgroupDef,
    /// The cpuset written to the cgroup, if any.
    cpus: Option<Vec<usize>>,
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
/// The run's phases, in order: [`Executor::new`] (nothing exists yet),
/// [`Executor::start`] (cgroups, workers, payloads), [`Executor::run_steps`]
/// (boundaries, ops, holds; samples are taken during holds),
/// [`Executor::collect`] (payloads and workers stopped, cgroups removed),
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

/// Starts the scenario's scheduler under test, if it names one, and waits
/// for it to attach. Bad input and a kernel that cannot run it fail here,
/// before any cgroup or worker exists.
fn start_scheduler(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<Option<SchedulerRun>> {
    let Some(spec) = &scenario.scheduler else {
        return Ok(None);
    };
    if opts.boundary_mode == BoundaryMode::Quiescent {
        return Err(RunqError::bad_input(format!(
            "scheduler {}: exploration forks the controller, which cannot share a scheduler \
             under test; remove [scheduler] or use `runq run`",
            spec.binary
        )));
    }
    let pre = crate::scheduler::preflight(spec, &scenario.name)?;
    Ok(Some(SchedulerRun::start(spec, pre)?))
}

/// The worker threads of a batch, each with whether its policy is
/// SCHED_EXT (for schedulers that do not take every task).
fn batch_tids(batch: &Batch) -> Vec<(i32, bool)> {
    batch
        .works
        .iter()
        .flat_map(|w| {
            let ext = w.spec.policy == SchedPolicy::Ext;
            w.handle
                .worker_pids()
                .into_iter()
                .map(move |tid| (tid, ext))
        })
        .collect()
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

    /// Every step, each after its boundary, then the boundary after the
    /// last; hooks may rewrite the steps still to come.
    fn run_steps(
        &mut self,
        scenario: &Scenario,
        steps: &mut Vec<Step>,
        hooks: &mut dyn ExecutorHooks,
    ) -> anyhow::Result<()> {
        let mut previous: Option<StepResult> = None;
        let mut index = 0;
        loop {
            self.boundary(scenario, index, steps, previous.as_mut(), hooks)?;
            if index >= steps.len() {
                return Ok(());
            }
            if self.opts.boundary_mode == BoundaryMode::Quiescent && index > 0 {
                self.revive()?;
            }
            previous = Some(self.run_step(index, &steps[index].clone())?);
            index += 1;
        }
    }

    /// The boundary before step `index`: quiesce (exploration), then the
    /// hook, then validate the plan again if the hook changed it.
    fn boundary(
        &mut self,
        scenario: &Scenario,
        index: usize,
        steps: &mut Vec<Step>,
        mut previous: Option<&mut StepResult>,
        hooks: &mut dyn ExecutorHooks,
    ) -> anyhow::Result<()> {
        if self.opts.boundary_mode == BoundaryMode::Quiescent && index > 0 {
            self.quiesce(previous.as_deref_mut())?;
        }
        let before = steps.clone();
        let mut boundary = Boundary {
            index,
            mode: self.opts.boundary_mode,
            live: self.live_views(),
            rng: &mut *self.rng,
            steps,
            previous: previous.as_deref(),
        };
        hooks.at_boundary(&mut boundary)?;
        // A boundary may have waited long (exploration waits for forked
        // timelines there): no new step starts after an interrupt.
        check_interrupted()?;
        if *steps != before {
            let mut check = scenario.clone();
            check.steps = steps.clone();
            validate(&check, &self.topology).context("a hook changed the steps")?;
        }
        Ok(())
    }

    /// One step: its ops, then its hold.
    fn run_step(&mut self, index: usize, step: &Step) -> anyhow::Result<StepResult> {
        self.step_index = index;
        let step_started = Instant::now();
        let mut result = StepResult {
            index,
            ..StepResult::default()
        };
        self.mark_step_start();
        if let Some(scheduler) = &mut self.scheduler {
            scheduler.step_started();
        }
        for op in &step.ops {
            self.apply(op, &mut result)?;
        }
        self.hold(step, &mut result)?;
        if let Some(scheduler) = &mut self.scheduler {
            scheduler.step_finished(index + 1);
        }
        result.elapsed_ms = ms_since(step_started);
        result.iterations = self.step_iterations();
        Ok(result)
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

    fn open_manager(&mut self) -> anyhow::Result<()> {
        let manager = CgroupManager::detect()?;
        self.cgroup_root = manager.root_name().to_owned();
        self.manager = Some(manager);
        Ok(())
    }

    fn close_manager(&mut self) -> anyhow::Result<()> {
        if let Some(mut manager) = self.manager.take() {
            manager.teardown().context("removing the run's cgroups")?;
        }
        Ok(())
    }

    fn manager(&self) -> anyhow::Result<&CgroupManager> {
        self.manager
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no cgroup manager at this point of the run"))
    }

    /// CPUs a cgroup allows: its cpuset, else its parent's, else all.
    fn allowed(&self, name: &str) -> Vec<usize> {
        let mut cur = Some(name);
        while let Some(n) = cur {
            if let Some(cpus) = self.cgroups.get(n).and_then(|c| c.cpus.clone()) {
                return cpus;
            }
            cur = parent_of(n);
        }
        self.topology.cpu_ids()
    }

    fn restricted(&self, name: &str) -> Option<Vec<usize>> {
        let mut cur = Some(name);
        while let Some(n) = cur {
            if let Some(cpus) = self.cgroups.get(n).and_then(|c| c.cpus.clone()) {
                return Some(cpus);
            }
            cur = parent_of(n);
        }
        None
    }

    fn start_progress(&mut self, steps: &[Step], scenario: &Scenario) {
        if !self.opts.progress || !std::io::stderr().is_terminal() {
            return;
        }
        let total_ms: u128 = steps
            .iter()
            .map(|s| s.hold.length(scenario.duration).as_millis())
            .sum();
        let pb = indicatif::ProgressBar::new(total_ms as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ms {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(scenario.name.clone());
        self.progress = Some(pb);
    }

    /// Creates a cgroup (cpuset, weight) and spawns its works.
    fn add_cgroup(&mut self, def: CgroupDef, with_works: bool) -> anyhow::Result<()> {
        let cpus = match &def.cpuset {
            Some(spec) => Some(
                resolve_cpuset(spec, &self.topology)
                    .map_err(|m| anyhow::anyhow!("cgroup {}: {m}", def.name))?,
            ),
            None => None,
        };
        {
            let backend = self.manager()?.backend();
            backend
                .create(&def.name)
                .with_context(|| format!("creating cgroup {}", def.name))?;
            if let Some(cpus) = &cpus {
                backend
                    .set_cpuset(&def.name, cpus, None)
                    .with_context(|| format!("setting the cpuset of {}", def.name))?;
            }
            if let Some(weight) = def.weight {
                backend
                    .set_weight(&def.name, weight)
                    .with_context(|| format!("setting the weight of {}", def.name))?;
            }
        }
        let name = def.name.clone();
        let works = def.works.clone();
        self.cgroups.insert(name.clone(), LiveCgroup { def, cpus });
        if with_works && !works.is_empty() {
            self.spawn_batch(&name, name.clone(), &works)?;
        }
        Ok(())
    }

    /// Spawns `works` parked, moves them into `cgroup`, pins, starts.
    fn spawn_batch(
        &mut self,
        cgroup: &str,
        label: String,
        works: &[WorkSpec],
    ) -> anyhow::Result<()> {
        let allowed = self.allowed(cgroup);
        let total: usize = works.iter().map(|w| w.workers).sum();
        let mut batch = Batch {
            cgroup: cgroup.to_owned(),
            label,
            works: Vec::new(),
            run_start: self.run_start,
            started: Instant::now(),
            samples: Vec::new(),
            affinity: vec![None; total],
            pinned: vec![false; total],
            weight: self.weight_of(cgroup),
            cpus_bound: None,
            iterations_at_step_start: 0,
        };
        batch.cpus_bound = self
            .restricted(cgroup)
            .map(|cpus| cpus.into_iter().collect());
        for spec in works {
            let config = workload_config(spec, self.rng.next_u64());
            let handle = WorkloadHandle::spawn(&config)
                .with_context(|| format!("spawning {} workers in {cgroup}", spec.work.name()))?;
            // Owned by the batch at once so an error below still reaps it.
            batch.works.push(LiveWork {
                spec: spec.clone(),
                handle,
            });
            let w = batch.works.len() - 1;
            let work = &batch.works[w];
            if matches!(
                spec.policy,
                SchedPolicy::Fifo(_) | SchedPolicy::RoundRobin(_)
            ) {
                self.manager()?
                    .backend()
                    .grant_rt_runtime(cgroup, crate::cgroup::RT_CGROUP_BUDGETS_US)?;
            }
            self.manager()?
                .backend()
                .move_procs(cgroup, &work.handle.process_pids())
                .with_context(|| format!("moving {} workers into {cgroup}", spec.work.name()))?;
            // After the move: a v1 cpuset resets the mask on attach.
            let masks = apply_affinity(
                &work.handle,
                &spec.affinity,
                spec.workers,
                &allowed,
                &self.topology,
                &mut *self.rng,
            )
            .with_context(|| format!("pinning {} workers in {cgroup}", spec.work.name()))?;
            batch.record_masks(w, masks);
        }
        for work in &mut batch.works {
            work.handle.start()?;
        }
        batch.started = Instant::now();
        self.batches.push(batch);
        Ok(())
    }

    /// Stops the batches of `cgroup` (and of its children if `nested`).
    fn stop_batches(&mut self, cgroup: &str, nested: bool, result: Option<&mut StepResult>) {
        let prefix = format!("{cgroup}/");
        let (stop, keep): (Vec<Batch>, Vec<Batch>) = std::mem::take(&mut self.batches)
            .into_iter()
            .partition(|b| b.cgroup == cgroup || (nested && b.cgroup.starts_with(&prefix)));
        self.batches = keep;
        let mut collected = Vec::new();
        for batch in stop {
            self.observe_before_stop(&batch);
            let run = batch.finish();
            collected.push(run.clone());
            self.finished.push(run);
        }
        if let Some(result) = result {
            result.collected.extend(collected);
        }
    }

    /// Starts every payload in its cgroup (the run root when it names none).
    fn start_payloads(
        &mut self,
        specs: &[crate::workload::payload::PayloadSpec],
    ) -> anyhow::Result<()> {
        for spec in specs {
            let rel = spec.cgroup.clone().unwrap_or_default();
            let handle = PayloadHandle::spawn_in(spec, self.manager()?.backend(), &rel)
                .with_context(|| format!("starting payload {}", spec.name))?;
            self.payloads.push(handle);
        }
        Ok(())
    }

    /// Lets each payload make progress: drains its output, samples its tree.
    fn tick_payloads(&mut self) {
        for payload in &mut self.payloads {
            payload.tick(Duration::ZERO);
        }
    }

    /// Reports every payload: finished ones as they ended, running ones
    /// after stopping them.
    fn collect_payloads(&mut self) {
        for payload in std::mem::take(&mut self.payloads) {
            self.payload_reports.push(payload.stop_and_collect());
        }
    }

    fn stop_everything(&mut self) {
        for batch in std::mem::take(&mut self.batches) {
            self.observe_before_stop(&batch);
            self.finished.push(batch.finish());
        }
    }

    /// A last look at a batch's workers while the scheduler runs them.
    fn observe_before_stop(&mut self, batch: &Batch) {
        if let Some(scheduler) = &mut self.scheduler {
            scheduler.observe_workers(&batch.label, &batch_tids(batch), true);
        }
    }

    /// One look at the scheduler from the hold loop: on an ejection, a
    /// capture tagged [`EXIT_CAPTURE_TAG`]; then the workers' classes.
    fn watch_scheduler(&mut self) {
        let step = self.step_index + 1;
        let Some(scheduler) = &mut self.scheduler else {
            return;
        };
        if scheduler.tick(step) {
            scheduler.capture(EXIT_CAPTURE_TAG, step);
            let targets = self.capture_targets();
            self.bridge
                .capture_scheduler(EXIT_CAPTURE_TAG, step, &targets);
        }
        if let Some(scheduler) = &mut self.scheduler {
            for batch in &self.batches {
                scheduler.observe_workers(&batch.label, &batch_tids(batch), false);
            }
        }
    }

    /// Applies one op (at a step's start, and again every `every` of a loop
    /// hold).
    fn apply(&mut self, op: &Op, result: &mut StepResult) -> anyhow::Result<()> {
        match op {
            Op::AddCgroup { cgroup } => {
                let def = self
                    .declared(cgroup)
                    .ok_or_else(|| anyhow::anyhow!("add_cgroup: {cgroup} is not declared"))?;
                self.add_cgroup(def, true)
            }
            Op::RemoveCgroup { cgroup } => self.remove_cgroup(cgroup, result),
            Op::SetCpuset { cgroup, cpuset } => {
                let cpus = resolve_cpuset(cpuset, &self.topology)
                    .map_err(|m| anyhow::anyhow!("set_cpuset {cgroup}: {m}"))?;
                self.write_cpuset(cgroup, Some(cpus))
            }
            Op::ClearCpuset { cgroup } => self.write_cpuset(cgroup, None),
            Op::SwapCpusets { a, b } => {
                let cpus_a = self.cgroups.get(a).and_then(|c| c.cpus.clone());
                let cpus_b = self.cgroups.get(b).and_then(|c| c.cpus.clone());
                self.write_cpuset(a, cpus_b)?;
                self.write_cpuset(b, cpus_a)
            }
            Op::Spawn { cgroup, works } => {
                let label = format!("{cgroup}@step{}", self.step_index);
                self.spawn_batch(cgroup, label, works)
            }
            Op::Stop { cgroup } => {
                self.stop_batches(cgroup, false, Some(result));
                Ok(())
            }
            Op::SetAffinity { cgroup, affinity } => self.set_affinity(cgroup, affinity),
            Op::MoveTasks { from, to } => self.move_tasks(from, to),
            Op::CaptureSnapshot { tag } => {
                let targets = self.capture_targets();
                let step = self.step_index + 1;
                if let Some(scheduler) = &mut self.scheduler {
                    scheduler.capture(tag, step);
                }
                self.bridge.capture_scheduler(tag, step, &targets);
                Ok(())
            }
        }
    }

    /// Stops the workers of `cgroup` and its children, then removes them.
    fn remove_cgroup(&mut self, cgroup: &str, result: &mut StepResult) -> anyhow::Result<()> {
        self.stop_batches(cgroup, true, Some(result));
        self.manager()?
            .backend()
            .remove(cgroup)
            .with_context(|| format!("removing cgroup {cgroup}"))?;
        let prefix = format!("{cgroup}/");
        self.cgroups
            .retain(|n, _| n != cgroup && !n.starts_with(&prefix));
        Ok(())
    }

    /// Re-pins every live worker of `cgroup`; `inherit` puts them back on
    /// every CPU.
    fn set_affinity(&mut self, cgroup: &str, affinity: &AffinityIntent) -> anyhow::Result<()> {
        let allowed = self.allowed(cgroup);
        let topo = &self.topology;
        for batch in self.batches.iter_mut().filter(|b| b.cgroup == cgroup) {
            for w in 0..batch.works.len() {
                let work = &batch.works[w];
                let masks = apply_affinity(
                    &work.handle,
                    affinity,
                    work.spec.workers,
                    &allowed,
                    topo,
                    &mut *self.rng,
                )
                .with_context(|| format!("set_affinity on {cgroup}"))?;
                if masks.is_none() {
                    // Inherit: back to every CPU the cgroup allows.
                    for i in 0..work.spec.workers {
                        work.handle.set_affinity(i, &topo.cpu_ids())?;
                    }
                }
                batch.record_masks(w, masks);
            }
        }
        Ok(())
    }

    /// Moves every live worker of `from` into `to`; their batches then
    /// belong to `to` (bound widened, pinned masks forgotten, weight kept
    /// only when both cgroups have the same).
    fn move_tasks(&mut self, from: &str, to: &str) -> anyhow::Result<()> {
        let bound = self.restricted(to);
        let weight = self.weight_of(to);
        let moving: Vec<usize> = (0..self.batches.len())
            .filter(|&i| self.batches[i].cgroup == from)
            .collect();
        for i in moving {
            let pids = self.batches[i].process_pids();
            self.manager()?
                .backend()
                .move_procs(to, &pids)
                .with_context(|| format!("moving the workers of {from} into {to}"))?;
            let batch = &mut self.batches[i];
            batch.cgroup = to.to_owned();
            batch.widen_bound(bound.as_ref(), &self.topology);
            batch.forget_masks();
            if batch.weight != weight {
                batch.weight = None;
            }
        }
        Ok(())
    }

    fn weight_of(&self, name: &str) -> Option<u32> {
        self.cgroups.get(name).and_then(|c| c.def.weight)
    }

    fn declared(&self, name: &str) -> Option<CgroupDef> {
        self.declared.get(name).cloned()
    }

    /// Writes (or clears) a cgroup's cpuset and widens the bound of every
    /// batch that runs under it.
    fn write_cpuset(&mut self, cgroup: &str, cpus: Option<Vec<usize>>) -> anyhow::Result<()> {
        {
            let backend = self.manager()?.backend();
            match &cpus {
                Some(cpus) => backend.set_cpuset(cgroup, cpus, None).with_context(|| {
                    format!(
                        "setting the cpuset of {cgroup} to {}",
                        format_cpu_list(cpus)
                    )
                })?,
                None => backend
                    .clear_cpuset(cgroup)
                    .with_context(|| format!("clearing the cpuset of {cgroup}"))?,
            }
        }
        if let Some(live) = self.cgroups.get_mut(cgroup) {
            live.cpus = cpus;
        }
        let topo = self.topology.clone();
        let prefix = format!("{cgroup}/");
        let affected: Vec<usize> = (0..self.batches.len())
            .filter(|&i| {
                let b = &self.batches[i].cgroup;
                b == cgroup || b.starts_with(&prefix)
            })
            .collect();
        for i in affected {
            let bound = self.restricted(&self.batches[i].cgroup.clone());
            self.batches[i].widen_bound(bound.as_ref(), &topo);
            self.batches[i].forget_masks();
        }
        Ok(())
    }

    fn capture_targets(&self) -> CaptureTargets {
        let mut targets = CaptureTargets::default();
        for batch in &self.batches {
            targets.worker_pids.extend(batch.worker_pids());
        }
        if let Some(manager) = &self.manager {
            for name in self.cgroups.keys() {
                targets.cgroup_dirs.extend(manager.backend().paths(name));
            }
        }
        targets
    }

    fn live_views(&self) -> Vec<LiveCgroupView> {
        let mut views = Vec::new();
        for name in self.cgroups.keys() {
            let batches: Vec<&Batch> = self.batches.iter().filter(|b| &b.cgroup == name).collect();
            views.push(LiveCgroupView {
                cgroup: name.clone(),
                worker_pids: batches.iter().flat_map(|b| b.worker_pids()).collect(),
                process_pids: batches.iter().flat_map(|b| b.process_pids()).collect(),
                paths: self
                    .manager
                    .as_ref()
                    .map(|m| m.backend().paths(name))
                    .unwrap_or_default(),
            });
        }
        views
    }

    fn mark_step_start(&mut self) {
        for batch in &mut self.batches {
            batch.iterations_at_step_start = batch.iterations().iter().sum();
        }
    }

    fn step_iterations(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for batch in &self.batches {
            let now: u64 = batch.iterations().iter().sum();
            *out.entry(batch.cgroup.clone()).or_default() +=
                now.saturating_sub(batch.iterations_at_step_start);
        }
        out
    }

    /// The hold: sample, capture, loop ops, progress, until the step ends.
    fn hold(&mut self, step: &Step, result: &mut StepResult) -> anyhow::Result<()> {
        let start = Instant::now();
        let end = start + step.hold.length(self.total);
        let interval = self.opts.sample_interval.max(Duration::from_millis(1));
        let mut next_sample = start;
        let loop_every = match &step.hold {
            HoldSpec::Loop { every, .. } => Some(*every),
            _ => None,
        };
        let mut next_loop = loop_every.map(|every| start + every);
        self.noise.begin(&self.run_cpus(), &self.worker_tids());
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            check_interrupted()?;
            self.tick_payloads();
            self.noise.tick(&self.worker_tids(), false);
            self.watch_scheduler();
            if now >= next_sample {
                for batch in &mut self.batches {
                    batch.sample();
                }
                while next_sample <= now {
                    next_sample += interval;
                }
            }
            if let Some(periodic) = &mut self.periodic {
                if let Some(tag) = periodic.due(now, &mut self.bridge) {
                    if let Some(scheduler) = &mut self.scheduler {
                        scheduler.capture(&tag, self.step_index + 1);
                    }
                    let targets = self.capture_targets();
                    self.bridge
                        .capture_scheduler(&tag, self.step_index + 1, &targets);
                }
            }
            if let (Some(due), Some(every)) = (next_loop, loop_every) {
                if now >= due {
                    for op in &step.ops {
                        self.apply(op, result)?;
                    }
                    next_loop = Some(due.max(now) + every);
                }
            }
            if let Some(pb) = &self.progress {
                pb.set_position(self.held_ms + start.elapsed().as_millis() as u64);
                pb.set_message(format!("step {}", self.step_index + 1));
            }
            let mut wake = next_sample.min(end);
            if let Some(due) = next_loop {
                wake = wake.min(due);
            }
            if let Some(periodic) = &self.periodic {
                wake = wake.min(Instant::now() + periodic.time_until_due(Instant::now()));
            }
            let now = Instant::now();
            if wake > now {
                std::thread::sleep(wake - now);
            }
        }
        self.noise.end(&self.worker_tids());
        self.held_ms += start.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Every live worker's pid or tid (noise sampling).
    fn worker_tids(&self) -> Vec<i32> {
        self.batches.iter().flat_map(Batch::worker_pids).collect()
    }

    /// The CPUs the live workers may use: every CPU unless each batch is
    /// bound to a cpuset.
    fn run_cpus(&self) -> Vec<usize> {
        let mut cpus = BTreeSet::new();
        for batch in &self.batches {
            match &batch.cpus_bound {
                Some(bound) => cpus.extend(bound.iter().copied()),
                None => return self.topology.cpu_ids(),
            }
        }
        if cpus.is_empty() {
            return self.topology.cpu_ids();
        }
        cpus.into_iter().collect()
    }

    /// Quiescent boundary: collect every worker, remove every cgroup.
    fn quiesce(&mut self, previous: Option<&mut StepResult>) -> anyhow::Result<()> {
        self.resume.clear();
        // Payloads do not survive a quiescent boundary (their cgroups go).
        self.collect_payloads();
        let mut collected = Vec::new();
        for batch in std::mem::take(&mut self.batches) {
            let specs = batch.works.iter().map(|w| w.spec.clone()).collect();
            self.resume
                .push((batch.cgroup.clone(), batch.label.clone(), specs));
            let run = batch.finish();
            collected.push(run.clone());
            self.finished.push(run);
        }
        if let Some(previous) = previous {
            previous.collected.extend(collected);
        }
        self.close_manager()
    }

    /// After a quiescent boundary: re-create cgroups and re-spawn works.
    fn revive(&mut self) -> anyhow::Result<()> {
        self.open_manager()?;
        let live: Vec<(String, Option<Vec<usize>>, CgroupDef)> = self
            .cgroups
            .iter()
            .map(|(n, c)| (n.clone(), c.cpus.clone(), c.def.clone()))
            .collect();
        // BTreeMap order puts "a" before "a/b": parents first.
        for (name, cpus, def) in live {
            let backend = self.manager()?.backend();
            backend.create(&name)?;
            if let Some(cpus) = &cpus {
                backend.set_cpuset(&name, cpus, None)?;
            }
            if let Some(weight) = def.weight {
                backend.set_weight(&name, weight)?;
            }
        }
        for (cgroup, label, specs) in std::mem::take(&mut self.resume) {
            self.spawn_batch(&cgroup, label, &specs)?;
        }
        Ok(())
    }
}

/// Pins the workers of one handle; returns the masks given (None: left).
fn apply_affinity(
    handle: &WorkloadHandle,
    intent: &AffinityIntent,
    workers: usize,
    allowed: &[usize],
    topo: &Topology,
    rng: &mut dyn RngCore,
) -> anyhow::Result<Option<Vec<Vec<usize>>>> {
    let masks = resolve_affinity(intent, workers, allowed, topo, rng)
        .map_err(|m| anyhow::anyhow!("{m}"))?;
    if let Some(masks) = &masks {
        for (worker, mask) in masks.iter().enumerate() {
            handle.set_affinity(worker, mask)?;
        }
    }
    Ok(masks)
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}
