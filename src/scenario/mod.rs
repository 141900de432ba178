//! Scenarios: CgroupDef, Step, Op, HoldSpec, CpusetSpec; executor; catalog; TOML.
//!
//! A [`Scenario`] declares cgroups (cpuset, weight, works) and steps (ops,
//! then a hold). [`run_scenario`] validates it against the host topology
//! (bad input exits 2 before anything is spawned), runs it
//! ([`executor`]), judges what it produced ([`crate::check::evaluate`]) and
//! returns the [`RunReport`].
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`run_scenario`], the report of an execution, loading a scenario by name or file |
//! | `dsl.rs` | [`Scenario`], [`CgroupDef`], [`WorkSpec`], [`Step`], [`Op`], [`HoldSpec`], [`CpusetSpec`] and their builders |
//! | `toml.rs` | the scenario file format (exactly the dsl types) |
//! | `catalog.rs` | the canned scenarios, by family |
//! | `validate.rs` | every problem of a scenario against a topology, with field paths |
//! | `resolve.rs` | cpuset specs and affinity intents resolved against a topology |
//! | `executor/` | the run's phases: start (scheduler, cgroups, workers, payloads), steps (boundaries, ops, holds), collect; its `mod.rs` has a table of its files |

pub mod catalog;
pub mod dsl;
pub mod executor;
pub mod resolve;
pub mod toml;
pub mod validate;

use std::path::Path;

use rand::RngCore;

pub use dsl::{
    format_duration, parse_duration, CgroupDef, CpusetSpec, HoldSpec, Op, Scenario, Step, WorkSpec,
    MAX_SCENARIO_DURATION,
};
pub use executor::{
    check_interrupted, install_interrupt_handler, interrupt_signal, Boundary, BoundaryMode,
    Execution, ExecutorHooks, LiveCgroupView, NoHooks, RunOptions, StepResult,
};
pub use validate::validate;

use crate::check::{self, CheckInput, RunFacts};
use crate::error::RunqError;
use crate::report::RunReport;

/// Runs a scenario with a seeded RNG (`opts.seed`) and no hooks.
pub fn run_scenario(scenario: &Scenario, opts: &RunOptions) -> anyhow::Result<RunReport> {
    let execution = executor::execute(scenario, opts)?;
    Ok(report_for(execution))
}

/// Runs a scenario drawing every choice from `rng`, calling `hooks` at
/// step boundaries (exploration). `seed` is recorded in the report.
pub fn run_scenario_with(
    scenario: &Scenario,
    opts: &RunOptions,
    seed: u64,
    rng: &mut dyn RngCore,
    hooks: &mut dyn ExecutorHooks,
) -> anyhow::Result<RunReport> {
    let execution = executor::execute_with(scenario, opts, seed, rng, hooks)?;
    Ok(report_for(execution))
}

/// Judges an execution ([`crate::check::evaluate`]) and records it in a
/// report.
pub fn report_for(execution: Execution) -> RunReport {
    let input = CheckInput {
        cgroups: execution.cgroup_runs,
        num_cpus: execution.topology.num_cpus(),
        duration_ms: execution.duration_ms,
    };
    let thresholds = &execution.scenario.thresholds;
    let facts = RunFacts::new(&input)
        .payloads(&execution.payloads)
        .noise(&execution.noise)
        .scheduler(execution.scheduler.as_ref());
    let evaluation = check::evaluate(&facts, thresholds);
    let mut report = RunReport::new(
        &execution.scenario.name,
        &execution.topology,
        execution.seed,
        input,
        thresholds,
        evaluation,
    );
    report.noise = Some(execution.noise);
    // The scheduler under test, as the host context names it.
    if let Ok(value) = serde_json::to_value(&report) {
        report.host.scheduler = crate::host::SchedulerIdentity::from_report(&value);
    }
    if !execution.captures.captures.is_empty() || !execution.captures.events.is_empty() {
        report.captures = Some(execution.captures);
    }
    report.payloads = execution
        .payloads
        .into_iter()
        .map(check::judge_payload)
        .collect();
    report.scheduler = execution.scheduler;
    report
}

/// A catalog name or a path to a `.toml` file.
pub fn load(name_or_path: &str) -> anyhow::Result<Scenario> {
    let path = Path::new(name_or_path);
    if name_or_path.ends_with(".toml") || path.is_file() {
        return toml::from_toml_file(path);
    }
    catalog::find(name_or_path).ok_or_else(|| {
        RunqError::bad_input(format!(
            "unknown scenario {name_or_path:?}: give a name from `runq list` or a path to a .toml file"
        ))
    })
}
