//! The test binary's `main`: libtest's command line (through
//! libtest-mimic, which nextest drives like any test binary), one trial per
//! case, skips decided before anything runs, and the guest side when the
//! binary is a VM's init.
//!
//! A case that cannot run here is listed as ignored, so `cargo test` shows
//! it `ignored (reason)` and nextest counts it skipped, never passed:
//! a `host = true` case whose topology is larger than the host, a case
//! whose scheduler, kernel or qemu is missing, a case `RUNQ_BUDGET` left
//! out. Under `CI=true` only the first is a skip; the others fail, since
//! CI provides what they need.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use super::budget::{self, Budget};
use super::case::Case;
use super::failure::{render, CaseRun};
use super::host::{self, Skip};
use super::matrix::{self, Cell, Entry};
use super::outcome::CaseStatus;
use super::shared::{self, SharedBoots};
use super::{child, expand_all, registered};
use crate::topology::Topology;

/// Runs the test binary: as a VM's init, as a case child, or as the
/// harness. Never returns.
pub fn main() -> ! {
    if crate::vm::guest::is_guest_init() {
        crate::vm::guest::init_main();
    }
    let args = Arguments::from_args();
    let code = match trials(&args) {
        Ok((trials, announce)) => {
            if !args.list {
                announce();
            }
            let conclusion = libtest_mimic::run(&args, trials);
            if !args.list && child::result_path().is_none() {
                print_matrix();
                print_boot_summary();
            }
            i32::from(conclusion.has_failed()) * 101
        }
        Err(err) => {
            eprintln!("runq::test: {err:#}");
            crate::error::exit_code_for(&err)
        }
    };
    std::process::exit(code)
}

type Announce = Box<dyn FnOnce()>;

/// The trials of this binary, and what to print before running them.
fn trials(args: &Arguments) -> anyhow::Result<(Vec<Trial>, Announce)> {
    let cases = expand_all(&registered())?;
    if let Some(result_path) = child::result_path() {
        // A case child: run the body here, for the case the filter names.
        let trials = cases
            .into_iter()
            .map(|case| {
                let path = result_path.clone();
                Trial::test(case.name.clone(), move || child::run_case(&case, &path))
            })
            .collect();
        return Ok((trials, Box::new(|| {})));
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let skips = decide_skips(&cases, ci)?;
    let shared_boots: Arc<OnceLock<SharedBoots>> = Arc::new(OnceLock::new());
    let forced = args.ignored || args.include_ignored;
    let mut trials = Vec::new();
    for (case, skip) in cases.iter().zip(&skips) {
        let ignored = skip.as_ref().is_some_and(|s| s.applies(ci));
        // Listing marks skipped cases ignored (nextest reads that), and so
        // does `--ignored` (which runs only flagged cases); a plain run
        // reports them ignored with their reason at run time.
        let flagged = ignored && (args.list || args.ignored);
        let runner = runner(case.clone(), skip.clone(), ci, forced, shared_boots.clone());
        trials.push(Trial::ignorable_test(case.name.clone(), runner).with_ignored_flag(flagged));
    }
    let will_run: BTreeSet<String> = trials
        .iter()
        .zip(&skips)
        .filter(|(trial, skip)| {
            !args.is_filtered_out(trial)
                && skip
                    .as_ref()
                    .is_none_or(|s| !s.applies(ci) || (forced && s.budget))
        })
        .map(|(trial, _)| trial.name().to_string())
        .collect();
    let run_cases: Vec<Case> = cases
        .iter()
        .filter(|c| will_run.contains(&c.name) && !c.def.host)
        .cloned()
        .collect();
    let shared_requested = shared::requested();
    if shared_requested {
        let _ = shared_boots.set(SharedBoots::new(&run_cases));
    }
    let announce_skips: Vec<(String, CaseSkip)> = cases
        .iter()
        .zip(skips)
        .filter_map(|(c, s)| s.map(|s| (c.name.clone(), s)))
        .filter(|(name, _)| {
            trials
                .iter()
                .any(|t| t.name() == name && !args.is_filtered_out(t))
        })
        .collect();
    let groups = shared_boots.get().map(SharedBoots::group_count);
    let vm_cases = run_cases.len();
    let announce: Announce = Box::new(move || {
        for (name, skip) in &announce_skips {
            skip.announce(name, ci);
        }
        if let Some(groups) = groups {
            eprintln!(
                "runq: {}=1: {vm_cases} VM case(s) in {groups} shared boot(s)",
                shared::SHARED_ENV
            );
        }
    });
    Ok((trials, announce))
}

/// Why a case will not run (or, under CI, must fail instead of running).
#[derive(Debug, Clone)]
struct CaseSkip {
    reason: String,
    /// Topology larger than the host: a legitimate skip even under CI.
    topology_too_large: bool,
    /// Left out by `RUNQ_BUDGET` (runs when ignored cases are asked for).
    budget: bool,
}

impl CaseSkip {
    fn applies(&self, ci: bool) -> bool {
        !ci || self.topology_too_large || self.budget
    }

    fn announce(&self, name: &str, ci: bool) {
        if !self.applies(ci) {
            return;
        }
        if ci && self.topology_too_large {
            eprintln!(
                "runq: SKIPPED under CI=true (the only allowed reason: the topology is larger than this host): {name}: {}",
                self.reason
            );
        } else if !self.budget {
            eprintln!("runq: SKIPPED {name}: {}", self.reason);
        }
    }
}

/// Host cases the host cannot run, VM cases missing a tool, kernel or
/// scheduler, then the budget over what is left.
fn decide_skips(cases: &[Case], ci: bool) -> anyhow::Result<Vec<Option<CaseSkip>>> {
    let host_topology = if cases.iter().any(|c| c.def.host) {
        Some(Topology::host()?)
    } else {
        None
    };
    let mut skips: Vec<Option<CaseSkip>> = cases
        .iter()
        .map(|case| {
            let skip = match &host_topology {
                Some(topology) if case.def.host => host::skip_reason(case, topology),
                _ if case.def.host => None,
                _ => super::vm_runner::missing_for_vm(case),
            };
            skip.map(
                |Skip {
                     reason,
                     topology_too_large,
                 }| CaseSkip {
                    reason,
                    topology_too_large,
                    budget: false,
                },
            )
        })
        .collect();
    if let Some(budget) = Budget::from_env()? {
        let candidates: Vec<Case> = cases
            .iter()
            .zip(&skips)
            .filter(|(_, s)| s.as_ref().is_none_or(|s| !s.applies(ci)))
            .map(|(c, _)| c.clone())
            .collect();
        let boot = budget::boot_estimate();
        let plan = budget::select(&candidates, budget.total, boot, shared::requested());
        eprintln!(
            "runq: {}={}: running {} of {} case(s), estimated {:.0}s ({:.0}s per boot); skipping {}{}",
            budget::BUDGET_ENV,
            budget.text,
            plan.selected.len(),
            candidates.len(),
            plan.estimate.as_secs_f64(),
            boot.as_secs_f64(),
            plan.skipped.len(),
            if plan.skipped.is_empty() { String::new() } else { format!(": {}", plan.skipped.join(", ")) }
        );
        let skipped: BTreeSet<&String> = plan.skipped.iter().collect();
        for (case, skip) in cases.iter().zip(skips.iter_mut()) {
            if skip.is_none() && skipped.contains(&case.name) {
                *skip = Some(CaseSkip {
                    reason: format!(
                        "{}={}: not in the budget's selection",
                        budget::BUDGET_ENV,
                        budget.text
                    ),
                    topology_too_large: false,
                    budget: true,
                });
            }
        }
    }
    Ok(skips)
}

type Runner = Box<dyn FnOnce() -> Result<Completion, Failed> + Send>;

fn runner(
    case: Case,
    skip: Option<CaseSkip>,
    ci: bool,
    forced: bool,
    shared_boots: Arc<OnceLock<SharedBoots>>,
) -> Runner {
    Box::new(move || {
        if let Some(skip) = &skip {
            let run_anyway = skip.budget && forced;
            if !skip.applies(ci) {
                matrix::record(Entry::of(&case, Cell::Failed));
                return Err(format!(
                    "cannot run under CI=true (CI must provide it): {}",
                    skip.reason
                )
                .into());
            }
            if !run_anyway {
                matrix::record(Entry::of(&case, Cell::Skipped));
                return Ok(Completion::ignored_with(&skip.reason));
            }
        }
        let run: CaseRun = if case.def.host {
            host::run_on_host(&case).unwrap_or_else(|e| CaseRun::failed_to_start(format!("{e:#}")))
        } else {
            match shared_boots.get() {
                Some(shared) => shared.run(&case),
                None => shared::run_alone(&case),
            }
        };
        matrix::record(Entry::of(&case, cell_of(&run)));
        if run.passed() {
            Ok(Completion::Completed)
        } else {
            Err(render(&case, &run).into())
        }
    })
}

fn cell_of(run: &CaseRun) -> Cell {
    match run.result.as_ref().map(|r| r.status) {
        Some(CaseStatus::ExpectedFailure) => Cell::ExpectedFailure,
        _ if run.passed() => Cell::Passed,
        _ => Cell::Failed,
    }
}

fn print_matrix() {
    if let Some(table) = matrix::table() {
        eprintln!(
            "runq: the gauntlet (ok; xfail = failed as expected; FAIL; skip; - = not run here):\n{table}"
        );
    }
}

fn print_boot_summary() {
    let (boots, cases, total) = shared::boot_summary();
    if boots > 0 {
        eprintln!(
            "runq: {cases} VM case(s) in {boots} boot(s), {:.1}s in VMs ({:.2} boots per minute)",
            total.as_secs_f64(),
            boots as f64 * 60.0 / total.as_secs_f64().max(0.001)
        );
    }
}
