//! `runq explore` and `runq replay`: arguments and printing.

use std::path::PathBuf;

use serde::Serialize;

use runq::error::{RunqError, EXIT_CHECK_FAILED, EXIT_OK};
use runq::output::{check_output_path, write_output};
use std::cell::RefCell;

use runq::explore::scenarios::{self, ExplorableScenario};
use runq::explore::{
    self, maze, AdaptiveConfig, ExploreConfig, ExploreReport, Parallelism, Recipe, ReplayReport,
};

const DEMOS: &str = "maze";

#[derive(clap::Args)]
#[command(
    after_help = "Exit codes: 0 nothing found, 1 a bug or crash was found \
    (its recipe is printed), 2 bad input, 3 environment problem."
)]
pub struct ExploreArgs {
    /// Randomized scenario to explore (explore_cpusets, explore_policies);
    /// or use --demo maze for the built-in demonstration.
    target: Option<String>,
    /// A built-in demonstration program instead of a scenario: maze.
    #[arg(long)]
    demo: Option<String>,
    /// First root seed (later roots use the following integers).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Most root seeds to run.
    #[arg(long)]
    seeds: Option<u64>,
    /// Total timelines allowed (roots and forks, one unit each).
    #[arg(long)]
    energy: Option<u64>,
    /// Deepest chain of forks.
    #[arg(long)]
    max_depth: Option<u32>,
    /// Children forked at each discovery (non-adaptive mode).
    #[arg(long)]
    timelines_per_split: Option<u32>,
    /// Concurrent children: seq, max, half, max-N or N.
    #[arg(long, default_value = "seq")]
    parallelism: String,
    /// Adaptive energy: per-mark budgets, batches, barren marks stop early.
    #[arg(long)]
    adaptive: bool,
    /// Keep exploring after the first bug.
    #[arg(long)]
    keep_going: bool,
    /// Also count the independent seeds needed (maze demo).
    #[arg(long)]
    baseline: bool,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(clap::Args)]
#[command(
    after_help = "Exit codes: 0 the timeline ran without failing, 1 it failed \
    (the bug reproduced), 2 bad input."
)]
pub struct ReplayArgs {
    /// The recipe printed by `runq explore`, e.g. 'seed=7;fork=12@0x9a3f00c2d1e4b5a6'.
    recipe: String,
    /// The randomized scenario it came from; or --demo maze.
    target: Option<String>,
    /// A built-in demonstration program instead of a scenario: maze.
    #[arg(long)]
    demo: Option<String>,
}

/// A program exploration can run.
enum Target {
    Maze,
    Scenario(ExplorableScenario),
}

fn explorable_names() -> String {
    scenarios::catalog()
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Exit code of a scenario timeline that could not run (environment).
const TIMELINE_ENVIRONMENT_EXIT: i32 = 3;

impl Target {
    fn resolve(target: Option<&str>, demo: Option<&str>) -> anyhow::Result<Self> {
        match (target, demo) {
            (None, Some("maze")) => Ok(Target::Maze),
            (None, Some(other)) => Err(RunqError::bad_input(format!(
                "--demo {other:?}: unknown demonstration; available: {DEMOS}"
            ))),
            (Some(_), Some(_)) => Err(RunqError::bad_input(
                "give either a scenario or --demo, not both",
            )),
            (Some(name), None) => scenarios::find(name).map(Target::Scenario).ok_or_else(|| {
                RunqError::bad_input(format!(
                    "{name:?}: not an explorable scenario; explorable: {}; or use --demo {DEMOS}",
                    explorable_names()
                ))
            }),
            (None, None) => Err(RunqError::bad_input(format!(
                "nothing to explore: name a scenario or use --demo {DEMOS}"
            ))),
        }
    }

    fn label(&self) -> String {
        match self {
            Target::Maze => "maze".to_string(),
            Target::Scenario(s) => s.name.to_string(),
        }
    }

    fn replay_hint(&self) -> String {
        match self {
            Target::Maze => "--demo maze".to_string(),
            Target::Scenario(s) => s.name.to_string(),
        }
    }

    fn defaults(&self) -> ExploreConfig {
        match self {
            Target::Maze => ExploreConfig::default(),
            // Real steps take 100-250 ms each: a small budget by default.
            Target::Scenario(_) => ExploreConfig {
                seeds: 3,
                energy: 12,
                max_depth: 3,
                timelines_per_split: 2,
                ..ExploreConfig::default()
            },
        }
    }

    /// Adaptive settings sized for the target's cost per timeline.
    fn adaptive(&self) -> AdaptiveConfig {
        match self {
            Target::Maze => AdaptiveConfig::default(),
            Target::Scenario(_) => AdaptiveConfig {
                batch: 2,
                per_mark_energy: 4,
                min_timelines: 2,
                warm_min_timelines: 1,
                cap_per_mark: 8,
            },
        }
    }

    /// Check the machine can run the target before forking anything.
    fn preflight(&self) -> anyhow::Result<()> {
        if let Target::Scenario(_) = self {
            runq::topology::Topology::host()?;
            runq::cgroup::CgroupManager::detect()?.teardown()?;
        }
        Ok(())
    }

    /// The program; a scenario's plan lines and error land in `out`.
    fn program<'a>(&'a self, out: &'a RefCell<ProgramOutput>) -> Box<dyn FnMut() + 'a> {
        match self {
            Target::Maze => Box::new(|| maze::walk(&mut Vec::new())),
            Target::Scenario(s) => Box::new(move || {
                let mut plan = Vec::new();
                let result = s.run(&mut plan);
                if let Err(err) = result {
                    if explore::in_exploration() {
                        if runq::scenario::interrupt_signal().is_some() {
                            // Interrupted: the driver says so once.
                            explore::fork::exit_now(TIMELINE_ENVIRONMENT_EXIT);
                        }
                        // A forked timeline: report and leave; counted as a crash.
                        eprintln!("runq: {}: timeline failed: {err:#}", s.name);
                        explore::fork::exit_now(TIMELINE_ENVIRONMENT_EXIT);
                    }
                    out.borrow_mut().error = Some(err);
                }
                out.borrow_mut().plan = plan;
            }),
        }
    }
}

#[derive(Default)]
struct ProgramOutput {
    plan: Vec<String>,
    error: Option<anyhow::Error>,
}

#[derive(Serialize)]
struct JsonOutput<'a> {
    schema: &'static str,
    target: String,
    report: &'a ExploreReport,
    replay: Option<String>,
    independent_timelines_to_bug: Option<u64>,
}

pub fn run_explore(args: ExploreArgs) -> anyhow::Result<i32> {
    let target = Target::resolve(args.target.as_deref(), args.demo.as_deref())?;
    let mut config = target.defaults();
    config.root_seed = args.seed;
    config.seeds = args.seeds.unwrap_or(config.seeds);
    config.energy = args.energy.unwrap_or(config.energy);
    config.max_depth = args.max_depth.unwrap_or(config.max_depth);
    config.timelines_per_split = args
        .timelines_per_split
        .unwrap_or(config.timelines_per_split);
    config.parallelism = args.parallelism.parse::<Parallelism>()?;
    config.adaptive = args.adaptive.then(|| target.adaptive());
    config.stop_at_first_bug = !args.keep_going;
    config.validate()?;
    if let Some(path) = &args.json {
        check_output_path("--json", path)?;
    }
    target.preflight()?;
    runq::scenario::install_interrupt_handler()?;

    let output = RefCell::new(ProgramOutput::default());
    let mut program = target.program(&output);
    let report = explore::explore(&config, &mut *program)?;
    let baseline = (args.baseline && matches!(target, Target::Maze))
        .then(|| maze::independent_timelines_to_bug(config.root_seed, 10_000_000))
        .flatten();
    print_report(&target, &report, baseline);
    let problem = report.first_bug.as_ref().or(report.first_crash.as_ref());
    if let Some(path) = &args.json {
        let out = JsonOutput {
            schema: "runq.explore/1",
            target: target.label(),
            report: &report,
            replay: problem.map(|p| p.recipe.to_string()),
            independent_timelines_to_bug: baseline,
        };
        let text = serde_json::to_string_pretty(&out)? + "\n";
        write_output("--json", path, text.as_bytes())?;
    }
    Ok(if report.found_problem() {
        EXIT_CHECK_FAILED
    } else {
        EXIT_OK
    })
}

fn print_report(target: &Target, r: &ExploreReport, baseline: Option<u64>) {
    print_totals(target, r);
    print_assertions(r);
    if r.refused_forks > 0 {
        println!("refused forks: {}", r.refused_forks);
    }
    print_problems(target, r);
    if let Some(n) = baseline {
        let found = r.first_bug.as_ref().map(|b| b.ordinal);
        match found {
            Some(e) => println!(
                "independent seeds needed {n} timelines, exploration {e} ({:.1}x fewer)",
                n as f64 / e as f64
            ),
            None => println!("independent seeds needed {n} timelines"),
        }
    }
}

/// Timelines, energy, coverage and why the exploration stopped.
fn print_totals(target: &Target, r: &ExploreReport) {
    let window = match r.window {
        0 => "sequential (one child at a time)".to_string(),
        p => format!(
            "window of {p}, at most {} children at once",
            r.max_live_children
        ),
    };
    println!(
        "explored {}: {} timelines ({} roots, {} forked), {} fork points, max depth {}",
        target.label(),
        r.timelines,
        r.roots,
        r.timelines - r.roots,
        r.fork_points,
        r.max_depth_reached
    );
    println!(
        "energy: {} of {} spent, {} left; {window}; {:.0} ms",
        r.energy_budget - r.energy_left,
        r.energy_budget,
        r.energy_left,
        r.elapsed_ms
    );
    if r.config.adaptive.is_some() {
        println!(
            "adaptive: {} barren marks returned {} units",
            r.barren_marks, r.energy_returned
        );
    }
    let stop = match r.stop_reason {
        explore::StopReason::FirstBug => "the first bug or crash",
        explore::StopReason::AllFired => "every sometimes fired",
        explore::StopReason::EnergySpent => "energy spent",
        explore::StopReason::SeedsDone => "every root seed ran",
    };
    println!(
        "coverage: {} bits explored; stopped after {stop}",
        r.explored_bits
    );
}

/// One line per assertion, then the `sometimes` that never fired.
fn print_assertions(r: &ExploreReport) {
    println!("assertions:");
    for a in &r.assertions {
        let state = if a.kind.is_sometimes() {
            if a.passes > 0 {
                "fired"
            } else {
                "NEVER FIRED"
            }
        } else if a.failures > 0 {
            "FAILED"
        } else {
            "held"
        };
        let best = a.best.map(|b| format!(", best {b}")).unwrap_or_default();
        println!(
            "  {state:<11} {:<17} {}  ({} checks, {} held{best})",
            serde_json::to_value(a.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            a.name,
            a.checks,
            a.passes
        );
    }
    if r.never_fired.is_empty() {
        println!("every sometimes fired");
    } else {
        println!("never fired: {}", r.never_fired.join(", "));
    }
}

/// The first bug and the first crash, each with the command replaying it.
fn print_problems(target: &Target, r: &ExploreReport) {
    if let Some(bug) = &r.first_bug {
        println!(
            "BUG: {} timelines failed; the first was timeline #{}; replay it with:",
            r.bugs, bug.ordinal
        );
        println!("  runq replay '{}' {}", bug.recipe, target.replay_hint());
    }
    if let Some(crash) = &r.first_crash {
        let how = match (crash.signal, crash.exit_code) {
            (Some(sig), _) => format!("killed by signal {sig}"),
            (None, Some(code)) => format!("exit code {code}"),
            _ => "wait failed".to_string(),
        };
        println!(
            "CRASH: {} timelines crashed; the first (timeline #{}, {how}); replay it with:",
            r.crashes, crash.ordinal
        );
        println!("  runq replay '{}' {}", crash.recipe, target.replay_hint());
    }
}

pub fn run_replay(args: ReplayArgs) -> anyhow::Result<i32> {
    let recipe = Recipe::parse(&args.recipe)?;
    let target = Target::resolve(args.target.as_deref(), args.demo.as_deref())?;
    target.preflight()?;
    runq::scenario::install_interrupt_handler()?;
    let output = RefCell::new(ProgramOutput::default());
    let mut program = target.program(&output);
    let report = explore::replay(&recipe, &mut *program);
    drop(program);
    let output = output.into_inner();
    for line in &output.plan {
        println!("{line}");
    }
    if let Some(err) = output.error {
        return Err(err);
    }
    print_replay(&report);
    Ok(if report.found_bug() {
        EXIT_CHECK_FAILED
    } else {
        EXIT_OK
    })
}

fn print_replay(r: &ReplayReport) {
    println!("replayed {}", r.recipe);
    println!(
        "rng draws: {}; forks applied: {} of {}",
        r.rng_calls,
        r.forks_applied,
        r.forks_applied + r.forks_unreached
    );
    if r.forks_unreached > 0 {
        println!(
            "warning: {} forks were never reached: the recipe comes from a different program \
             or version",
            r.forks_unreached
        );
    }
    if !r.fired.is_empty() {
        println!("sometimes fired: {}", r.fired.join(", "));
    }
    if r.found_bug() {
        println!("FAILED: {}", r.always_failed.join(", "));
    } else {
        println!("no always assertion failed");
    }
}
