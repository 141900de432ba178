//! The multi-seed driver, replay and reports.
//!
//! [`explore`] runs root seeds `root_seed, root_seed + 1, ...`, each as a
//! forked root timeline (so a crash or `_exit` never takes the driver
//! down), until every `sometimes` has fired, the first bug is found (when
//! `stop_at_first_bug`), the energy is spent or the seeds run out. Each
//! timeline, root or forked, costs one unit of energy, so the timelines
//! started never exceed the budget. [`replay`] reruns one recipe in this
//! process without forking.
//!
//! # Interrupts
//! Each root timeline runs in its own process group (every timeline it
//! forks, and their workers, inherit it). When SIGINT or SIGTERM reaches
//! the driver (the handler of [`crate::scenario::install_interrupt_handler`]
//! notes it), the driver sends the same signal to the root's group, starts
//! no new root and waits: every timeline notes the signal too, stops
//! forking, stops its workers and removes its cgroups at its next hold or
//! boundary, and leaves with exit 3. A terminal's Ctrl-C thus reaches the
//! timelines once, through the driver. On SIGKILL of the driver the
//! timelines die by their parent-death signal and the next run reaps their
//! cgroup roots.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{setpgid, Pid};

use serde::Serialize;

use super::adaptive::AdaptiveConfig;
use super::assert::{current_failed, install, Explorer, SplitConfig, Timeline};
use super::fork::{ensure_single_threaded, exit_now, fork_timeline, Forked};
use super::recipe::Recipe;
use super::split::{account, BUG_EXIT};
use super::state::{
    AssertKind, AssertionSummary, Record, RecordedTimeline, Shared, Stat, MAX_PARALLEL,
    MAX_RECIPE_FORKS,
};
use crate::error::RunqError;
use crate::scenario::interrupt_signal;

/// How many children may run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Parallelism {
    /// One child at a time, waited for before the next.
    Sequential,
    /// As many as CPUs this process may use.
    MaxCores,
    /// Half of them (at least 1).
    HalfCores,
    /// Exactly n.
    Cores(usize),
    /// All CPUs but n (at least 1).
    MaxCoresMinus(usize),
}

impl Parallelism {
    /// The window size P (0 = sequential).
    pub fn window(self) -> anyhow::Result<usize> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let p = match self {
            Parallelism::Sequential => 0,
            Parallelism::MaxCores => cores,
            Parallelism::HalfCores => (cores / 2).max(1),
            Parallelism::Cores(n) => n,
            Parallelism::MaxCoresMinus(n) => cores.saturating_sub(n).max(1),
        };
        if p > MAX_PARALLEL {
            return Err(RunqError::bad_input(format!(
                "parallelism: a window of {p} children is more than the {MAX_PARALLEL} \
                 supported; use a smaller number"
            )));
        }
        Ok(p)
    }
}

impl FromStr for Parallelism {
    type Err = anyhow::Error;

    /// `seq`, `max`, `half`, `max-N` or a number N.
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let bad = || {
            RunqError::bad_input(format!(
                "parallelism {text:?}: use `seq`, `max`, `half`, `max-N` (all CPUs but N) or \
                 a number of concurrent children"
            ))
        };
        match text {
            "seq" | "sequential" => Ok(Parallelism::Sequential),

            "max" => Ok(Parallelism::MaxCores),
            "half" => Ok(Parallelism::HalfCores),
            _ => {
                if let Some(n) = text.strip_prefix("max-") {
                    n.parse().map(Parallelism::MaxCoresMinus).map_err(|_| bad())
                } else {
                    match text.parse() {
                        Ok(0) => Err(RunqError::bad_input(format!(
                            "parallelism {text:?}: a window of no children cannot run \
                             anything; use `seq` (one child at a time) or a number >= 1"
                        ))),
                        Ok(n) => Ok(Parallelism::Cores(n)),
                        Err(_) => Err(bad()),
                    }
                }
            }
        }
    }
}

/// Settings of one exploration.
#[derive(Clone, Debug, Serialize)]
pub struct ExploreConfig {
    /// First root seed; later roots use the following integers.
    pub root_seed: u64,
    /// Most root seeds to run.
    pub seeds: u64,
    /// Total timelines (roots and forks) allowed.
    pub energy: u64,
    /// Deepest fork chain.
    pub max_depth: u32,
    /// Children per discovery (non-adaptive).
    pub timelines_per_split: u32,
    /// Concurrent children.
    pub parallelism: Parallelism,
    /// Adaptive energy, when set.
    pub adaptive: Option<AdaptiveConfig>,
    /// Stop forking and stop the driver after the first bug or crash.
    pub stop_at_first_bug: bool,
    /// Stop starting roots once every `sometimes` has fired.
    pub stop_when_all_fired: bool,
}

impl Default for ExploreConfig {
    fn default() -> Self {
        Self {
            root_seed: 1,
            seeds: 1000,
            energy: 10_000,
            max_depth: 16,
            timelines_per_split: 32,
            parallelism: Parallelism::Sequential,
            adaptive: None,
            stop_at_first_bug: true,
            stop_when_all_fired: true,
        }
    }
}

impl ExploreConfig {
    /// Reject impossible settings (bad input, nothing forked).
    pub fn validate(&self) -> anyhow::Result<usize> {
        if self.seeds == 0 {
            return Err(RunqError::bad_input("seeds: must be at least 1"));
        }
        if self.energy == 0 {
            return Err(RunqError::bad_input(
                "energy: must be at least 1 (one unit per timeline)",
            ));
        }
        if self.max_depth as usize > MAX_RECIPE_FORKS {
            return Err(RunqError::bad_input(format!(
                "max-depth: {} is deeper than the {MAX_RECIPE_FORKS} forks a recipe can hold",
                self.max_depth
            )));
        }
        if self.timelines_per_split == 0 {
            return Err(RunqError::bad_input(
                "timelines-per-split: must be at least 1",
            ));
        }
        if let Some(a) = &self.adaptive {
            a.validate()?;
        }
        self.parallelism.window()
    }
}

/// Why the driver stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A bug or crash was found.
    FirstBug,
    /// Every declared `sometimes` fired.
    AllFired,
    /// The energy budget is spent.
    EnergySpent,
    /// Every root seed ran.
    SeedsDone,
}

/// What an exploration did and found.
#[derive(Clone, Debug, Serialize)]
pub struct ExploreReport {
    /// The settings.
    pub config: ExploreConfig,
    /// Resolved window size (0 = sequential).
    pub window: usize,
    /// Timelines started, roots included (= energy spent).
    pub timelines: u64,
    /// Root timelines.
    pub roots: u64,
    /// Discoveries that split.
    pub fork_points: u64,
    /// Timelines that exited 42.
    pub bugs: u64,
    /// Timelines that crashed.
    pub crashes: u64,
    /// Energy budget.
    pub energy_budget: u64,
    /// Energy left.
    pub energy_left: u64,
    /// Most forked children running at once (pool slots held).
    pub max_live_children: u64,
    /// Deepest fork chain reached.
    pub max_depth_reached: u64,
    /// Adaptive marks stopped as barren.
    pub barren_marks: u64,
    /// Energy barren marks returned to the pool.
    pub energy_returned: u64,
    /// Forks refused (threads present, fork failure).
    pub refused_forks: u64,
    /// Coverage bits in the explored map.
    pub explored_bits: u64,
    /// Every assertion.
    pub assertions: Vec<AssertionSummary>,
    /// `sometimes` assertions that never held.
    pub never_fired: Vec<String>,
    /// `always` assertions that failed.
    pub always_failed: Vec<String>,
    /// First timeline that found a bug.
    pub first_bug: Option<RecordedTimeline>,
    /// First timeline that crashed.
    pub first_crash: Option<RecordedTimeline>,
    /// Why the driver stopped.
    pub stop_reason: StopReason,
    /// Wall time.
    pub elapsed_ms: f64,
}

impl ExploreReport {
    /// A bug or a crash was found.
    pub fn found_problem(&self) -> bool {
        self.bugs > 0 || self.crashes > 0
    }
}

fn all_sometimes_fired(shared: &Shared) -> bool {
    let all = shared.assertions();
    let mut sometimes = all.iter().filter(|a| a.kind.is_sometimes()).peekable();
    sometimes.peek().is_some() && sometimes.all(|a| a.passes > 0)
}

/// Explore `program`: every choice it makes must come from
/// [`super::rng()`], its properties from the assertion functions. Must be
/// called from a single-threaded process.
pub fn explore(config: &ExploreConfig, program: &mut dyn FnMut()) -> anyhow::Result<ExploreReport> {
    let window = config.validate()?;
    ensure_single_threaded()?;
    let shared = Rc::new(Shared::new(window, config.energy)?);
    let explorer = Explorer {
        shared: shared.clone(),
        cfg: SplitConfig {
            max_depth: config.max_depth,
            per_split: config.timelines_per_split,
            parallel: window,
            adaptive: config.adaptive.clone(),
            stop_at_first_bug: config.stop_at_first_bug,
        },
    };
    let started = Instant::now();
    let mut stop_reason = StopReason::SeedsDone;
    for index in 0..config.seeds {
        if let Some(signal) = interrupt_signal() {
            return Err(interrupted(signal));
        }
        if let Some(reason) = reason_to_stop(config, &shared, index) {
            stop_reason = reason;
            break;
        }
        run_root(
            config,
            &explorer,
            config.root_seed.wrapping_add(index),
            program,
        )?;
    }
    if let Some(signal) = interrupt_signal() {
        return Err(interrupted(signal));
    }
    if shared.get(Stat::Stop) != 0 {
        stop_reason = StopReason::FirstBug;
    }
    Ok(build_report(config, window, &shared, stop_reason, started))
}

/// Why the driver stops before the root of seed number `index`, if it
/// does. Takes the root's unit of energy when it goes on.
fn reason_to_stop(config: &ExploreConfig, shared: &Shared, index: u64) -> Option<StopReason> {
    if shared.get(Stat::Stop) != 0 {
        return Some(StopReason::FirstBug);
    }
    if index > 0 && config.stop_when_all_fired && all_sometimes_fired(shared) {
        return Some(StopReason::AllFired);
    }
    if !shared.take_energy() {
        return Some(StopReason::EnergySpent);
    }
    None
}

/// Runs the root timeline of `seed` in a forked child (which splits further
/// on its own) and accounts for how it ended. The root's energy is already
/// taken.
fn run_root(
    config: &ExploreConfig,
    explorer: &Explorer,
    seed: u64,
    program: &mut dyn FnMut(),
) -> anyhow::Result<()> {
    let shared = &explorer.shared;
    let warm = shared.explored_bits() > 0;
    shared.stat(Stat::Warm).store(warm as u64, SeqCst);
    shared.clear_slot(0);
    let ordinal = shared.stat(Stat::Timelines).fetch_add(1, SeqCst) + 1;
    shared.stat(Stat::Roots).fetch_add(1, SeqCst);
    let _ = std::io::stdout().flush();
    match fork_timeline() {
        Ok(Forked::Child) => {
            // Own group, so the driver can signal the whole tree; the
            // parent does the same, whichever runs first.
            let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let mut timeline = Timeline::new(Recipe::root(seed), Some(explorer.clone()));
            timeline.ordinal = ordinal;
            install(Some(timeline));
            run_timeline_to_exit(program)
        }
        Ok(Forked::Parent(pid)) => {
            let _ = setpgid(pid, pid);
            let status = wait_for_root(pid);
            shared.merge_slot(0);
            account(
                shared,
                config.stop_at_first_bug,
                &Recipe::root(seed),
                ordinal,
                status,
            );
            Ok(())
        }
        Err(err) => {
            shared.stat(Stat::Timelines).fetch_sub(1, SeqCst);
            shared.stat(Stat::Roots).fetch_sub(1, SeqCst);
            shared.return_energy(1);
            Err(err)
        }
    }
}

/// The report of a finished exploration, from the shared counters.
fn build_report(
    config: &ExploreConfig,
    window: usize,
    shared: &Shared,
    stop_reason: StopReason,
    started: Instant,
) -> ExploreReport {
    let assertions = shared.assertions();
    ExploreReport {
        config: config.clone(),
        window,
        timelines: shared.get(Stat::Timelines),
        roots: shared.get(Stat::Roots),
        fork_points: shared.get(Stat::ForkPoints),
        bugs: shared.get(Stat::Bugs),
        crashes: shared.get(Stat::Crashes),
        energy_budget: config.energy,
        energy_left: shared.get(Stat::EnergyLeft),
        max_live_children: shared.get(Stat::MaxLiveChildren),
        max_depth_reached: shared.get(Stat::MaxDepthReached),
        barren_marks: shared.get(Stat::BarrenMarks),
        energy_returned: shared.get(Stat::EnergyReturned),
        refused_forks: shared.get(Stat::RefusedForks),
        explored_bits: shared.explored_bits(),
        never_fired: assertions
            .iter()
            .filter(|a| a.kind.is_sometimes() && a.passes == 0)
            .map(|a| a.name.clone())
            .collect(),
        always_failed: assertions
            .iter()
            .filter(|a| !a.kind.is_sometimes() && a.failures > 0)
            .map(|a| a.name.clone())
            .collect(),
        assertions,
        first_bug: shared.recorded(Record::Bug),
        first_crash: shared.recorded(Record::Crash),
        stop_reason,
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

fn interrupted(signal: Signal) -> anyhow::Error {
    RunqError::environment(format!(
        "interrupted by {signal}: every timeline was stopped and its cgroups removed"
    ))
}

/// How often the driver looks for an interrupt while a root runs.
const INTERRUPT_POLL: Duration = Duration::from_millis(20);

/// Wait for the root timeline `root` (leader of its own process group).
/// An interrupt noted meanwhile is passed on to the whole group once; after
/// the root ends, anything of its group still alive is killed.
fn wait_for_root(root: Pid) -> Option<WaitStatus> {
    let mut forwarded = false;
    let status = loop {
        if let (Some(signal), false) = (interrupt_signal(), forwarded) {
            let _ = killpg(root, signal);
            forwarded = true;
        }
        // Polled rather than blocking: a signal landing just before a
        // blocking waitpid would not interrupt it.
        match waitpid(root, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => std::thread::sleep(INTERRUPT_POLL),
            Ok(status) => break Some(status),
            Err(_) => break None,
        }
    };
    if forwarded {
        let _ = killpg(root, Signal::SIGKILL);
    }
    status
}

/// Run the program in a forked timeline and leave with its outcome: 42 when
/// an `always` failed, 101 when it panicked, 0 otherwise. Every child
/// forked inside the program returns here too.
fn run_timeline_to_exit(program: &mut dyn FnMut()) -> ! {
    let result = catch_unwind(AssertUnwindSafe(program));
    let code = match result {
        Ok(()) if current_failed() => BUG_EXIT,
        Ok(()) => 0,
        Err(_) => 101,
    };
    let _ = std::io::stdout().flush();
    exit_now(code)
}

/// What a replay did.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// The recipe replayed.
    pub recipe: Recipe,
    /// Draws the program made.
    pub rng_calls: u64,
    /// Forks of the recipe applied.
    pub forks_applied: usize,
    /// Forks never reached (the program ended first: a different program).
    pub forks_unreached: usize,
    /// `always` assertions that failed (the bug reproduced).
    pub always_failed: Vec<String>,
    /// `sometimes` assertions that held.
    pub fired: Vec<String>,
}

impl ReplayReport {
    /// The replayed timeline failed an `always`.
    pub fn found_bug(&self) -> bool {
        !self.always_failed.is_empty()
    }
}

/// Rerun the timeline `recipe` describes, in this process, without forking.
pub fn replay(recipe: &Recipe, program: &mut dyn FnMut()) -> ReplayReport {
    let previous = install(Some(Timeline::new(recipe.clone(), None)));
    program();
    let mut timeline = install(previous).expect("replay timeline installed above");
    timeline.rng.settle();
    ReplayReport {
        recipe: recipe.clone(),
        rng_calls: timeline.rng.calls(),
        forks_applied: timeline.rng.applied(),
        forks_unreached: timeline.rng.pending(),
        always_failed: timeline.failed.clone(),
        fired: timeline
            .local
            .iter()
            .filter(|(_, r)| r.kind.is_some_and(AssertKind::is_sometimes) && r.passes > 0)
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

/// Run one plain timeline with `seed` (no forks): an independent seed.
pub fn run_plain(seed: u64, program: &mut dyn FnMut()) -> ReplayReport {
    replay(&Recipe::root(seed), program)
}
