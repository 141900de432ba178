//! Shared boots: with `RUNQ_SHARED_BOOT=1` the cases selected in one test
//! process that have the same kernel, topology, memory, scheduler and
//! profile run in one boot (the guest resets between them, see
//! [`crate::vm::guest_cases`]). The first of them to run boots the VM for
//! the whole group; the others take their results from it.
//!
//! When a case brings the guest down, the cases after it run in a new
//! boot, so one crash costs one case, not its group. Under nextest every
//! test is its own process, so each case boots on its own there.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::case::Case;
use super::failure::CaseRun;
use super::vm_runner::{run_boot, BootStats};

/// Environment variable that asks for shared boots.
pub const SHARED_ENV: &str = "RUNQ_SHARED_BOOT";

/// Whether the runner asked for shared boots.
pub fn requested() -> bool {
    std::env::var(SHARED_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Every boot of this process, for the closing summary.
static BOOTS: Mutex<Vec<BootStats>> = Mutex::new(Vec::new());

/// Boots so far: (boots, cases they ran, total wall time in VMs).
pub fn boot_summary() -> (usize, usize, Duration) {
    let boots = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    (
        boots.len(),
        boots.iter().map(|b| b.cases).sum(),
        boots.iter().map(|b| b.total).sum(),
    )
}

fn record(stats: BootStats) {
    BOOTS.lock().unwrap_or_else(|e| e.into_inner()).push(stats);
}

/// Runs one case in a boot of its own.
pub fn run_alone(case: &Case) -> CaseRun {
    run_group(std::slice::from_ref(case))
        .remove(&case.name)
        .unwrap_or_else(|| CaseRun::failed_to_start("the boot returned no result".into()))
}

/// Runs cases that share a boot key, booting again after a case that
/// brought the guest down.
fn run_group(cases: &[Case]) -> HashMap<String, CaseRun> {
    let mut results = HashMap::new();
    let mut remaining: Vec<&Case> = cases.iter().collect();
    while !remaining.is_empty() {
        let (runs, stats) = run_boot(&remaining);
        record(stats);
        let mut next = Vec::new();
        for (case, run) in remaining.iter().zip(runs) {
            match run {
                Some(run) => {
                    results.insert(case.name.clone(), run);
                }
                None => next.push(*case),
            }
        }
        // Every boot settles at least one case (run_boot fails them all
        // when none started), so this ends.
        remaining = next;
    }
    results
}

struct Group {
    cases: Vec<Case>,
    results: Mutex<Option<HashMap<String, CaseRun>>>,
}

/// The groups of the cases this process will run.
pub struct SharedBoots {
    groups: BTreeMap<String, Arc<Group>>,
}

impl SharedBoots {
    pub fn new(cases: &[Case]) -> SharedBoots {
        let mut by_key: BTreeMap<String, Vec<Case>> = BTreeMap::new();
        for case in cases {
            by_key
                .entry(case.boot_key())
                .or_default()
                .push(case.clone());
        }
        SharedBoots {
            groups: by_key
                .into_iter()
                .map(|(key, cases)| {
                    (
                        key,
                        Arc::new(Group {
                            cases,
                            results: Mutex::new(None),
                        }),
                    )
                })
                .collect(),
        }
    }

    /// The number of groups (boots, unless a case crashes its guest).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// This case's run; the first case of a group boots for all of it.
    pub fn run(&self, case: &Case) -> CaseRun {
        let Some(group) = self.groups.get(&case.boot_key()) else {
            return run_alone(case);
        };
        let mut results = group.results.lock().unwrap_or_else(|e| e.into_inner());
        let results = results.get_or_insert_with(|| run_group(&group.cases));
        results
            .remove(&case.name)
            .unwrap_or_else(|| run_alone(case))
    }
}
