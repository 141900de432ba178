//! `RUNQ_BUDGET=10m`: a deterministic subset of the cases that fits the
//! budget, covering every topology and every profile once before any is
//! repeated.
//!
//! A case costs its scenario time (`duration`, else a default), its
//! scheduler's start and stop when it has one, plus, in a VM, one boot (`RUNQ_BOOT_ESTIMATE` seconds, else a figure for KVM or
//! TCG); with shared boots only the first case of a group pays the boot.
//! Cases are taken greedily: the one adding the most uncovered topologies
//! and profiles, then the cheapest, then the one whose function has run
//! least, then by name.
//! When every topology and profile is covered a new round starts. Cases
//! that do not fit are skipped and listed; the same cases, environment and
//! machine give the same selection in every process (nextest runs each
//! test in its own).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::case::Case;
use crate::error::RunqError;

pub const BUDGET_ENV: &str = "RUNQ_BUDGET";
pub const BOOT_ESTIMATE_ENV: &str = "RUNQ_BOOT_ESTIMATE";
/// Boot, scheduler attach and power-off with hardware KVM.
const BOOT_ESTIMATE_KVM: Duration = Duration::from_secs(5);
/// The same under TCG (measured: about 15 s to a running scheduler).
const BOOT_ESTIMATE_TCG: Duration = Duration::from_secs(20);
/// Starting, attaching and stopping a scheduler in a case (every case
/// starts its own, shared boot or not), with KVM and under TCG.
const SCHEDULER_ESTIMATE_KVM: Duration = Duration::from_secs(1);
const SCHEDULER_ESTIMATE_TCG: Duration = Duration::from_secs(5);
/// A host case's process start and cleanup.
const HOST_OVERHEAD: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub total: Duration,
    /// As given, for messages.
    pub text: String,
}

impl Budget {
    /// `RUNQ_BUDGET`, if set; a malformed value is bad input.
    pub fn from_env() -> anyhow::Result<Option<Budget>> {
        let Some(text) = std::env::var(BUDGET_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            return Ok(None);
        };
        let total = crate::vm::parse_duration(&text, BUDGET_ENV).map_err(|_| {
            RunqError::bad_input(format!(
                "{BUDGET_ENV}={text:?}: expected a duration such as 10m, 90s or 1h"
            ))
        })?;
        Ok(Some(Budget { total, text }))
    }
}

/// What the budget selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetPlan {
    /// Names of the selected cases, in selection order.
    pub selected: Vec<String>,
    /// Names of the skipped cases, by name.
    pub skipped: Vec<String>,
    /// Estimated time of the selected cases.
    pub estimate: Duration,
}

/// What a scheduler adds to each case that has one.
pub fn scheduler_estimate(boot: Duration) -> Duration {
    if boot <= BOOT_ESTIMATE_KVM {
        SCHEDULER_ESTIMATE_KVM
    } else {
        SCHEDULER_ESTIMATE_TCG
    }
}

/// Seconds per boot for the estimate.
pub fn boot_estimate() -> Duration {
    if let Some(seconds) = std::env::var(BOOT_ESTIMATE_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Duration::from_secs_f64(seconds);
    }
    if crate::vm::qemu::kvm_unusable_reason().is_none() {
        BOOT_ESTIMATE_KVM
    } else {
        BOOT_ESTIMATE_TCG
    }
}

/// Picks the cases to run within `budget` (see the module docs).
pub fn select(cases: &[Case], budget: Duration, boot: Duration, shared: bool) -> BudgetPlan {
    let all_topologies: BTreeSet<String> = cases.iter().map(|c| c.topology.to_string()).collect();
    let all_profiles: BTreeSet<&str> = cases.iter().map(|c| c.profile).collect();
    let mut covered_topologies: BTreeSet<String> = BTreeSet::new();
    let mut covered_profiles: BTreeSet<&str> = BTreeSet::new();
    let mut booted: BTreeSet<String> = BTreeSet::new();
    let mut runs_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut remaining: Vec<&Case> = cases.iter().collect();
    let mut selected = Vec::new();
    let mut spent = Duration::ZERO;
    let cost = |case: &Case, booted: &BTreeSet<String>| {
        let boot_cost = if case.def.host {
            HOST_OVERHEAD
        } else if shared && booted.contains(&case.boot_key()) {
            Duration::ZERO
        } else {
            boot
        };
        let scheduler_cost = if case.def.scheduler.is_some() {
            scheduler_estimate(boot)
        } else {
            Duration::ZERO
        };
        boot_cost + scheduler_cost + case.run_estimate()
    };
    loop {
        let best = remaining
            .iter()
            .enumerate()
            .filter(|(_, c)| spent + cost(c, &booted) <= budget)
            .max_by_key(|(order, c)| {
                let new = usize::from(!covered_topologies.contains(&c.topology.to_string()))
                    + usize::from(!covered_profiles.contains(c.profile));
                let runs = runs_of.get(&c.function()).copied().unwrap_or(0);
                (
                    new,
                    std::cmp::Reverse(cost(c, &booted)),
                    std::cmp::Reverse(runs),
                    std::cmp::Reverse(*order),
                )
            })
            .map(|(index, _)| index);
        let Some(index) = best else { break };
        let case = remaining.remove(index);
        spent += cost(case, &booted);
        booted.insert(case.boot_key());
        covered_topologies.insert(case.topology.to_string());
        covered_profiles.insert(case.profile);
        *runs_of.entry(case.function()).or_default() += 1;
        if covered_topologies == all_topologies && covered_profiles == all_profiles {
            covered_topologies.clear();
            covered_profiles.clear();
        }
        selected.push(case.name.clone());
    }
    let mut skipped: Vec<String> = remaining.iter().map(|c| c.name.clone()).collect();
    skipped.sort();
    BudgetPlan {
        selected,
        skipped,
        estimate: spent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test::{case::expand, Context, Outcome, TestDef};

    fn body(_: &mut Context) -> Outcome {
        Outcome::Asserted
    }

    const fn def(name: &'static str, duration: &'static str) -> TestDef {
        TestDef {
            name,
            module: "suite",
            file: "suite.rs",
            line: 1,
            topologies: &["1n1l2c1t", "1n2l2c1t", "1n1l2c2t", "2n1l2c1t"],
            scheduler: Some("scx_bpfland"),
            profiles: &[("default", &[]), ("lowlat", &["--lowlatency"])],
            kernel: None,
            duration: Some(duration),
            memory: None,
            timeout: None,
            host: false,
            expect_fail: None,
            body,
        }
    }

    static SPREAD: TestDef = def("spread", "2s");
    static WAKE: TestDef = def("wake", "2s");
    static SLOW: TestDef = def("slow", "8s");

    fn cases() -> Vec<Case> {
        let mut cases: Vec<Case> = [&SPREAD, &WAKE, &SLOW]
            .into_iter()
            .flat_map(|d| expand(d).unwrap())
            .collect();
        cases.sort_by(|a, b| a.name.cmp(&b.name));
        cases
    }

    fn coverage(cases: &[Case], names: &[String]) -> (BTreeSet<String>, BTreeSet<&'static str>) {
        let chosen: Vec<&Case> = cases.iter().filter(|c| names.contains(&c.name)).collect();
        (
            chosen.iter().map(|c| c.topology.to_string()).collect(),
            chosen.iter().map(|c| c.profile).collect(),
        )
    }

    #[test]
    fn a_small_budget_covers_every_topology_and_profile_first() {
        let cases = cases();
        let boot = Duration::from_secs(20);
        // 24 cases; 4 of them cost 4 x (20 s boot + 5 s scheduler + 2 s) = 108 s.
        let plan = select(&cases, Duration::from_secs(110), boot, false);
        assert_eq!(plan.selected.len(), 4, "{plan:?}");
        let (topologies, profiles) = coverage(&cases, &plan.selected);
        assert_eq!(topologies.len(), 4, "{plan:?}");
        assert_eq!(profiles.len(), 2, "{plan:?}");
        assert_eq!(plan.selected.len() + plan.skipped.len(), cases.len());
        assert!(plan.estimate <= Duration::from_secs(110));
        // Deterministic: the same input gives the same plan.
        assert_eq!(plan, select(&cases, Duration::from_secs(110), boot, false));
    }

    #[test]
    fn no_topology_repeats_before_all_are_covered() {
        let cases = cases();
        let plan = select(
            &cases,
            Duration::from_secs(260),
            Duration::from_secs(20),
            false,
        );
        let first_four: Vec<String> = plan.selected[..4].to_vec();
        let (topologies, _) = coverage(&cases, &first_four);
        assert_eq!(topologies.len(), 4, "{plan:?}");
        let (topologies, _) = coverage(&cases, &plan.selected[4..8]);
        assert_eq!(topologies.len(), 4, "second round: {plan:?}");
        // Equally cheap functions take turns.
        let functions: BTreeSet<&str> = plan.selected[..4]
            .iter()
            .map(|n| n.split("::").next().unwrap())
            .collect();
        assert_eq!(functions, BTreeSet::from(["spread", "wake"]), "{plan:?}");
    }

    #[test]
    fn shared_boots_fit_more_cases_and_everything_fits_a_large_budget() {
        let cases = cases();
        let boot = Duration::from_secs(20);
        let alone = select(&cases, Duration::from_secs(120), boot, false);
        let shared = select(&cases, Duration::from_secs(120), boot, true);
        assert!(
            shared.selected.len() > alone.selected.len(),
            "{alone:?} {shared:?}"
        );
        let all = select(&cases, Duration::from_secs(3600), boot, false);
        assert!(all.skipped.is_empty());
        assert_eq!(all.selected.len(), cases.len());
    }
}
