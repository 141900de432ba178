//! Validation of a whole scenario against a topology, before anything is
//! spawned. Every problem names its field path (`steps[1].ops[0]`) and the
//! fix; all problems are reported at once as one bad-input error.

use std::collections::{BTreeMap, BTreeSet};

use super::dsl::{CgroupDef, HoldSpec, Op, Scenario, WorkSpec};
use super::resolve::{check_affinity, resolve_cpuset};
use crate::cgroup::{MAX_NAME_PART, RESERVED_NAMES, WEIGHT_DEFAULT, WEIGHT_MAX, WEIGHT_MIN};
use crate::error::RunqError;
use crate::topology::{format_cpu_list, Topology};
use crate::workload::{AffinityIntent, WorkType, WorkloadConfig};

/// Shortest accepted interval between periodic captures.
pub const MIN_CAPTURE_INTERVAL_MS: u64 = 10;
/// Most workers one scenario may start in total (keeps typos from forking
/// thousands of processes).
pub const MAX_TOTAL_WORKERS: usize = 1024;

/// Checks `scenario` against `topo`; `Err` is a `RunqError::BadInput`
/// listing every problem found.
pub fn validate(scenario: &Scenario, topo: &Topology) -> anyhow::Result<()> {
    let problems = problems(scenario, topo);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunqError::bad_input(format!(
            "scenario {:?} is invalid:\n  {}",
            scenario.name,
            problems.join("\n  ")
        )))
    }
}

/// Every problem of `scenario`, one message each.
pub fn problems(scenario: &Scenario, topo: &Topology) -> Vec<String> {
    let mut out = Vec::new();
    if scenario.name.trim().is_empty() {
        out.push("name: empty; give the scenario a name".to_owned());
    }
    if scenario.duration.is_zero() {
        out.push("duration: zero; give a positive length such as \"2s\"".to_owned());
    }
    if let Err(err) = scenario.thresholds.validate() {
        out.push(format!("{err:#}"));
    }
    if let Some(ms) = scenario.periodic_capture_ms {
        if ms < MIN_CAPTURE_INTERVAL_MS {
            out.push(format!(
                "periodic_capture_ms: {ms} is too short; use at least {MIN_CAPTURE_INTERVAL_MS}"
            ));
        }
    }

    // Declarations.
    let mut declared: BTreeMap<&str, &CgroupDef> = BTreeMap::new();
    let mut cpusets: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut total_workers = 0usize;
    for (i, def) in scenario.cgroups.iter().enumerate() {
        let at = format!("cgroups[{i}]");
        if let Err(msg) = check_cgroup_name(&def.name) {
            out.push(format!("{at}.name: {msg}"));
            continue;
        }
        if declared.contains_key(def.name.as_str()) {
            out.push(format!(
                "{at}.name: {:?} is declared twice; give each cgroup its own name",
                def.name
            ));
            continue;
        }
        let parent = parent_of(&def.name);
        if let Some(parent) = parent {
            if !declared.contains_key(parent) {
                out.push(format!(
                    "{at}.name: parent {parent:?} of {:?} must be declared before it in [[cgroups]]",
                    def.name
                ));
            }
        }
        if let Some(spec) = &def.cpuset {
            match resolve_cpuset(spec, topo) {
                Ok(cpus) => {
                    if let Some(parent_cpus) = parent.and_then(|p| cpusets.get(p)) {
                        if !cpus.iter().all(|c| parent_cpus.contains(c)) {
                            out.push(format!(
                                "{at}.cpuset: CPUs {} are not all inside the parent's cpuset {}; a nested cpuset must be a subset",
                                format_cpu_list(&cpus),
                                format_cpu_list(parent_cpus)
                            ));
                        }
                    }
                    cpusets.insert(&def.name, cpus);
                }
                Err(msg) => out.push(format!("{at}.cpuset: {msg}")),
            }
        } else if let Some(parent_cpus) = parent.and_then(|p| cpusets.get(p)).cloned() {
            cpusets.insert(&def.name, parent_cpus);
        }
        if let Some(weight) = def.weight {
            if !(WEIGHT_MIN..=WEIGHT_MAX).contains(&weight) {
                out.push(format!(
                    "{at}.weight: {weight} is outside {WEIGHT_MIN}..={WEIGHT_MAX} ({WEIGHT_DEFAULT} is the default)"
                ));
            }
        }
        let allowed = cpusets
            .get(def.name.as_str())
            .cloned()
            .unwrap_or_else(|| topo.cpu_ids());
        for (j, work) in def.works.iter().enumerate() {
            total_workers += work.workers;
            check_work(&format!("{at}.works[{j}]"), work, &allowed, topo, &mut out);
        }
        declared.insert(&def.name, def);
    }

    // Steps: simulate which cgroups are live so ops only touch live ones.
    let mut live: BTreeSet<&str> = scenario
        .cgroups
        .iter()
        .filter(|d| !d.deferred)
        .map(|d| d.name.as_str())
        .collect();
    for def in scenario.cgroups.iter().filter(|d| !d.deferred) {
        if let Some(parent) = parent_of(&def.name) {
            if !live.contains(parent) && declared.contains_key(parent) {
                out.push(format!(
                    "cgroups: {:?} starts live but its parent {parent:?} is deferred; defer the child too",
                    def.name
                ));
            }
        }
    }
    let mut payload_names = BTreeSet::new();
    for (i, payload) in scenario.payloads.iter().enumerate() {
        let at = format!("payloads[{i}]");
        if let Err(err) = payload.validate() {
            out.push(format!("{at}: {err:#}"));
        }
        if !payload_names.insert(payload.name.as_str()) {
            out.push(format!(
                "{at}.name: {:?} is used by an earlier payload; give each payload its own name",
                payload.name
            ));
        }
        if let Some(cgroup) = &payload.cgroup {
            if !live.contains(cgroup.as_str()) {
                out.push(format!(
                    "{at}.cgroup: {cgroup:?} is not a cgroup that exists from the start; declare it \
                     in [[cgroups]] without `deferred`"
                ));
            }
        }
    }

    let mut fraction_sum = 0.0;
    for (i, step) in scenario.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        match &step.hold {
            HoldSpec::Fraction(f) => {
                if !(*f > 0.0 && *f <= 1.0) {
                    out.push(format!(
                        "{at}.hold.fraction: {f} must be in (0, 1] (a share of the run)"
                    ));
                }
                fraction_sum += f;
            }
            HoldSpec::Fixed(d) => {
                if d.is_zero() {
                    out.push(format!(
                        "{at}.hold.fixed: zero; give a positive time such as \"100ms\""
                    ));
                }
            }
            HoldSpec::Loop { every, fraction } => {
                if !(*fraction > 0.0 && *fraction <= 1.0) {
                    out.push(format!(
                        "{at}.hold.loop.fraction: {fraction} must be in (0, 1] (a share of the run)"
                    ));
                }
                fraction_sum += fraction;
                if every.as_millis() < 1 {
                    out.push(format!(
                        "{at}.hold.loop.every: must be at least 1ms, e.g. \"50ms\""
                    ));
                }
                for (j, op) in step.ops.iter().enumerate() {
                    if !matches!(
                        op,
                        Op::SetCpuset { .. }
                            | Op::ClearCpuset { .. }
                            | Op::SwapCpusets { .. }
                            | Op::SetAffinity { .. }
                            | Op::MoveTasks { .. }
                            | Op::CaptureSnapshot { .. }
                    ) {
                        out.push(format!(
                            "{at}.ops[{j}]: {} cannot repeat in a loop hold; loop only set_cpuset, clear_cpuset, swap_cpusets, set_affinity, move_tasks or capture_snapshot",
                            op.name()
                        ));
                    }
                }
            }
        }
        for (j, op) in step.ops.iter().enumerate() {
            let at = format!("{at}.ops[{j}]");
            let mut refs_ok = true;
            for (field, name) in op.cgroup_refs() {
                if !declared.contains_key(name) {
                    out.push(format!(
                        "{at}.{field}: unknown cgroup {name:?}; declare it in [[cgroups]]"
                    ));
                    refs_ok = false;
                }
            }
            if !refs_ok {
                continue;
            }
            check_op(
                &at,
                op,
                &declared,
                &mut live,
                topo,
                &mut out,
                &mut total_workers,
            );
        }
    }
    if fraction_sum > 1.0 + 1e-9 {
        out.push(format!(
            "steps: hold fractions add up to {fraction_sum:.3}, more than the whole run; make them sum to at most 1"
        ));
    }
    if total_workers > MAX_TOTAL_WORKERS {
        out.push(format!(
            "works: {total_workers} workers in total; at most {MAX_TOTAL_WORKERS} are allowed"
        ));
    }
    out
}

fn check_op<'a>(
    at: &str,
    op: &'a Op,
    declared: &BTreeMap<&'a str, &'a CgroupDef>,
    live: &mut BTreeSet<&'a str>,
    topo: &Topology,
    out: &mut Vec<String>,
    total_workers: &mut usize,
) {
    let need_live = |name: &str, field: &str, live: &BTreeSet<&str>, out: &mut Vec<String>| {
        if !live.contains(name) {
            out.push(format!(
                "{at}.{field}: cgroup {name:?} does not exist at this step; add it with an add_cgroup op first (or drop `deferred`)"
            ));
            false
        } else {
            true
        }
    };
    match op {
        Op::AddCgroup { cgroup } => {
            if live.contains(cgroup.as_str()) {
                out.push(format!(
                    "{at}.cgroup: {cgroup:?} already exists at this step; mark it `deferred = true` or remove it first"
                ));
            } else if let Some(parent) = parent_of(cgroup) {
                if !live.contains(parent) {
                    out.push(format!(
                        "{at}.cgroup: parent {parent:?} of {cgroup:?} does not exist at this step; add the parent first"
                    ));
                }
            }
            if let Some((name, _)) = declared.get_key_value(cgroup.as_str()) {
                live.insert(name);
            }
        }
        Op::RemoveCgroup { cgroup } => {
            if need_live(cgroup, "cgroup", live, out) {
                let prefix = format!("{cgroup}/");
                live.retain(|n| *n != cgroup.as_str() && !n.starts_with(&prefix));
            }
        }
        Op::SetCpuset { cgroup, cpuset } => {
            need_live(cgroup, "cgroup", live, out);
            if let Err(msg) = resolve_cpuset(cpuset, topo) {
                out.push(format!("{at}.cpuset: {msg}"));
            }
        }
        Op::ClearCpuset { cgroup } | Op::Stop { cgroup } => {
            need_live(cgroup, "cgroup", live, out);
        }
        Op::SwapCpusets { a, b } => {
            need_live(a, "a", live, out);
            need_live(b, "b", live, out);
            if a == b {
                out.push(format!("{at}: swap_cpusets needs two different cgroups"));
            }
        }
        Op::MoveTasks { from, to } => {
            need_live(from, "from", live, out);
            need_live(to, "to", live, out);
            if from == to {
                out.push(format!("{at}: move_tasks needs two different cgroups"));
            }
        }
        Op::Spawn { cgroup, works } => {
            need_live(cgroup, "cgroup", live, out);
            if works.is_empty() {
                out.push(format!("{at}.works: empty; list at least one work"));
            }
            for (k, work) in works.iter().enumerate() {
                *total_workers += work.workers;
                check_work(
                    &format!("{at}.works[{k}]"),
                    work,
                    &topo.cpu_ids(),
                    topo,
                    out,
                );
            }
        }
        Op::SetAffinity { cgroup, affinity } => {
            need_live(cgroup, "cgroup", live, out);
            if let Err(msg) = check_affinity(affinity, topo) {
                out.push(format!("{at}.affinity: {msg}"));
            }
        }
        Op::CaptureSnapshot { tag } => {
            if tag.trim().is_empty() {
                out.push(format!("{at}.tag: empty; name the capture"));
            } else if crate::snapshot::parse_periodic_tag(tag).is_some() {
                out.push(format!(
                    "{at}.tag: {tag:?} is reserved for periodic captures; choose another tag"
                ));
            }
        }
    }
}

/// Checks one work spec; `allowed` are the CPUs of its cgroup.
fn check_work(
    at: &str,
    work: &WorkSpec,
    allowed: &[usize],
    topo: &Topology,
    out: &mut Vec<String>,
) {
    if work.workers == 0 {
        out.push(format!("{at}.workers: zero workers; use 1 or more"));
        return;
    }
    if let WorkType::Custom(_) = work.work {
        // Code-supplied bodies (tests, library users) are fine here.
    }
    if let Err(msg) = check_affinity(&work.affinity, topo) {
        out.push(format!("{at}.affinity: {msg}"));
    } else if let AffinityIntent::Exact(list) = &work.affinity {
        if !list.iter().any(|c| allowed.contains(c)) {
            out.push(format!(
                "{at}.affinity: CPUs {} are all outside the cgroup's cpuset {}; pick CPUs inside it",
                format_cpu_list(list),
                format_cpu_list(allowed)
            ));
        }
    }
    if let Err(err) = workload_config(work, 0).validate() {
        out.push(format!("{at}: {err:#}"));
    }
}

/// The workload config for one work spec. Affinity is applied per worker
/// by the executor after the spawn (it depends on the cgroup), so the
/// workers inherit the controller's mask here.
pub fn workload_config(work: &WorkSpec, seed: u64) -> WorkloadConfig {
    WorkloadConfig {
        work: work.work.clone(),
        workers: work.workers,
        clone_mode: work.clone_mode,
        affinity: AffinityIntent::Inherit,
        policy: work.policy.clone(),
        nice: work.nice,
        mem_policy: work.mem_policy.clone(),
        seed,
        ..WorkloadConfig::default()
    }
}

/// Cgroup names: path segments of `[A-Za-z0-9_-]`, separated by `/`.
fn check_cgroup_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty; name the cgroup, e.g. \"cg0\"".into());
    }
    let ok = name.split('/').all(|seg| {
        !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if !ok {
        return Err(format!(
            "{name:?} is not a valid cgroup name; use letters, digits, '_' and '-', with '/' between nested levels"
        ));
    }
    for seg in name.split('/') {
        if seg.len() > MAX_NAME_PART {
            return Err(format!(
                "part {:?}... is {} characters long, more than the limit of {MAX_NAME_PART}; \
                 use a shorter name",
                &seg[..16],
                seg.len()
            ));
        }
        if RESERVED_NAMES.contains(&seg) {
            return Err(format!(
                "{seg:?} is reserved (a cgroup v1 control file has that name); \
                 use another name, not one of {}",
                RESERVED_NAMES.join(", ")
            ));
        }
    }
    Ok(())
}

/// `"a/b"` -> `Some("a")`.
pub fn parent_of(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(parent, _)| parent)
}
