//! Validation of a whole scenario against a topology, before anything is
//! spawned. Every problem names its field path (`steps[1].ops[0]`) and the
//! fix; all problems are reported at once as one bad-input error.

use std::collections::{BTreeMap, BTreeSet};

use super::dsl::{CgroupDef, HoldSpec, Op, Scenario, Step, WorkSpec};
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
    let mut p = Problems {
        topo,
        out: Vec::new(),
        declared: BTreeMap::new(),
        cpusets: BTreeMap::new(),
        live: BTreeSet::new(),
        total_workers: 0,
    };
    p.top_level(scenario);
    for (i, def) in scenario.cgroups.iter().enumerate() {
        p.cgroup(&format!("cgroups[{i}]"), def);
    }
    p.initial_live(scenario);
    p.payloads(scenario);
    let mut fraction_sum = 0.0;
    for (i, step) in scenario.steps.iter().enumerate() {
        let at = format!("steps[{i}]");
        fraction_sum += p.hold(&at, step);
        for (j, op) in step.ops.iter().enumerate() {
            p.op(&format!("{at}.ops[{j}]"), op);
        }
    }
    if fraction_sum > 1.0 + 1e-9 {
        p.out.push(format!(
            "steps: hold fractions add up to {fraction_sum:.3}, more than the whole run; make them sum to at most 1"
        ));
    }
    if p.total_workers > MAX_TOTAL_WORKERS {
        p.out.push(format!(
            "works: {} workers in total; at most {MAX_TOTAL_WORKERS} are allowed",
            p.total_workers
        ));
    }
    p.out
}

/// What validation has learned so far while walking a scenario in order:
/// the cgroups declared, their resolved cpusets, which cgroups are live at
/// the step being checked, the workers started, and the problems found.
struct Problems<'a> {
    topo: &'a Topology,
    out: Vec<String>,
    declared: BTreeMap<&'a str, &'a CgroupDef>,
    cpusets: BTreeMap<&'a str, Vec<usize>>,
    /// Cgroups that exist at the step being checked (ops simulated).
    live: BTreeSet<&'a str>,
    total_workers: usize,
}

impl<'a> Problems<'a> {
    /// Name, duration, thresholds and the capture interval.
    fn top_level(&mut self, scenario: &Scenario) {
        if scenario.name.trim().is_empty() {
            self.out
                .push("name: empty; give the scenario a name".to_owned());
        }
        if scenario.duration.is_zero() {
            self.out
                .push("duration: zero; give a positive length such as \"2s\"".to_owned());
        }
        if let Err(err) = scenario.thresholds.validate() {
            self.out.push(format!("{err:#}"));
        }
        if let Some(ms) = scenario.periodic_capture_ms {
            if ms < MIN_CAPTURE_INTERVAL_MS {
                self.out.push(format!(
                    "periodic_capture_ms: {ms} is too short; use at least {MIN_CAPTURE_INTERVAL_MS}"
                ));
            }
        }
    }

    /// One declared cgroup: its name, parent, cpuset, weight and works.
    fn cgroup(&mut self, at: &str, def: &'a CgroupDef) {
        if let Err(msg) = check_cgroup_name(&def.name) {
            self.out.push(format!("{at}.name: {msg}"));
            return;
        }
        if self.declared.contains_key(def.name.as_str()) {
            self.out.push(format!(
                "{at}.name: {:?} is declared twice; give each cgroup its own name",
                def.name
            ));
            return;
        }
        let parent = parent_of(&def.name);
        if let Some(parent) = parent.filter(|p| !self.declared.contains_key(p)) {
            self.out.push(format!(
                "{at}.name: parent {parent:?} of {:?} must be declared before it in [[cgroups]]",
                def.name
            ));
        }
        self.cpuset(at, def, parent);
        if let Some(weight) = def.weight {
            if !(WEIGHT_MIN..=WEIGHT_MAX).contains(&weight) {
                self.out.push(format!(
                    "{at}.weight: {weight} is outside {WEIGHT_MIN}..={WEIGHT_MAX} ({WEIGHT_DEFAULT} is the default)"
                ));
            }
        }
        let allowed = self
            .cpusets
            .get(def.name.as_str())
            .cloned()
            .unwrap_or_else(|| self.topo.cpu_ids());
        for (j, work) in def.works.iter().enumerate() {
            self.total_workers += work.workers;
            check_work(
                &format!("{at}.works[{j}]"),
                work,
                &allowed,
                self.topo,
                &mut self.out,
            );
        }
        self.declared.insert(&def.name, def);
    }

    /// Resolves a cgroup's cpuset (a nested one must fit in its parent's);
    /// without one it has its parent's CPUs.
    fn cpuset(&mut self, at: &str, def: &'a CgroupDef, parent: Option<&str>) {
        let parent_cpus = parent.and_then(|p| self.cpusets.get(p)).cloned();
        let Some(spec) = &def.cpuset else {
            if let Some(parent_cpus) = parent_cpus {
                self.cpusets.insert(&def.name, parent_cpus);
            }
            return;
        };
        match resolve_cpuset(spec, self.topo) {
            Ok(cpus) => {
                if let Some(parent_cpus) = parent_cpus {
                    if !cpus.iter().all(|c| parent_cpus.contains(c)) {
                        self.out.push(format!(
                            "{at}.cpuset: CPUs {} are not all inside the parent's cpuset {}; a nested cpuset must be a subset",
                            format_cpu_list(&cpus),
                            format_cpu_list(&parent_cpus)
                        ));
                    }
                }
                self.cpusets.insert(&def.name, cpus);
            }
            Err(msg) => self.out.push(format!("{at}.cpuset: {msg}")),
        }
    }

    /// The cgroups live at the start (not deferred); a live child needs a
    /// live parent.
    fn initial_live(&mut self, scenario: &'a Scenario) {
        self.live = scenario
            .cgroups
            .iter()
            .filter(|d| !d.deferred)
            .map(|d| d.name.as_str())
            .collect();
        for def in scenario.cgroups.iter().filter(|d| !d.deferred) {
            if let Some(parent) = parent_of(&def.name) {
                if !self.live.contains(parent) && self.declared.contains_key(parent) {
                    self.out.push(format!(
                        "cgroups: {:?} starts live but its parent {parent:?} is deferred; defer the child too",
                        def.name
                    ));
                }
            }
        }
    }

    /// Payload specs, their names, and the cgroup each runs in.
    fn payloads(&mut self, scenario: &Scenario) {
        let mut names = BTreeSet::new();
        for (i, payload) in scenario.payloads.iter().enumerate() {
            let at = format!("payloads[{i}]");
            if let Err(err) = payload.validate() {
                self.out.push(format!("{at}: {err:#}"));
            }
            if !names.insert(payload.name.as_str()) {
                self.out.push(format!(
                    "{at}.name: {:?} is used by an earlier payload; give each payload its own name",
                    payload.name
                ));
            }
            if let Some(cgroup) = &payload.cgroup {
                if !self.live.contains(cgroup.as_str()) {
                    self.out.push(format!(
                        "{at}.cgroup: {cgroup:?} is not a cgroup that exists from the start; declare it \
                         in [[cgroups]] without `deferred`"
                    ));
                }
            }
        }
    }

    /// A step's hold; returns the fraction of the run it takes (0 for a
    /// fixed hold).
    fn hold(&mut self, at: &str, step: &Step) -> f64 {
        let in_run = |f: f64| f > 0.0 && f <= 1.0;
        match &step.hold {
            HoldSpec::Fraction(f) => {
                if !in_run(*f) {
                    self.out.push(format!(
                        "{at}.hold.fraction: {f} must be in (0, 1] (a share of the run)"
                    ));
                }
                *f
            }
            HoldSpec::Fixed(d) => {
                if d.is_zero() {
                    self.out.push(format!(
                        "{at}.hold.fixed: zero; give a positive time such as \"100ms\""
                    ));
                }
                0.0
            }
            HoldSpec::Loop { every, fraction } => {
                if !in_run(*fraction) {
                    self.out.push(format!(
                        "{at}.hold.loop.fraction: {fraction} must be in (0, 1] (a share of the run)"
                    ));
                }
                if every.as_millis() < 1 {
                    self.out.push(format!(
                        "{at}.hold.loop.every: must be at least 1ms, e.g. \"50ms\""
                    ));
                }
                self.loop_ops(at, step);
                *fraction
            }
        }
    }

    /// Only ops that can repeat may be in a loop hold's step.
    fn loop_ops(&mut self, at: &str, step: &Step) {
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
                self.out.push(format!(
                    "{at}.ops[{j}]: {} cannot repeat in a loop hold; loop only set_cpuset, clear_cpuset, swap_cpusets, set_affinity, move_tasks or capture_snapshot",
                    op.name()
                ));
            }
        }
    }

    /// One op: the cgroups it names must be declared, and live when it
    /// runs; it changes which cgroups are live for the ops after it.
    fn op(&mut self, at: &str, op: &'a Op) {
        let mut refs_ok = true;
        for (field, name) in op.cgroup_refs() {
            if !self.declared.contains_key(name) {
                self.out.push(format!(
                    "{at}.{field}: unknown cgroup {name:?}; declare it in [[cgroups]]"
                ));
                refs_ok = false;
            }
        }
        if !refs_ok {
            return;
        }
        match op {
            Op::AddCgroup { cgroup } => self.add_cgroup(at, cgroup),
            Op::RemoveCgroup { cgroup } => {
                if self.need_live(at, "cgroup", cgroup) {
                    let prefix = format!("{cgroup}/");
                    self.live
                        .retain(|n| *n != cgroup.as_str() && !n.starts_with(&prefix));
                }
            }
            Op::SetCpuset { cgroup, cpuset } => {
                self.need_live(at, "cgroup", cgroup);
                if let Err(msg) = resolve_cpuset(cpuset, self.topo) {
                    self.out.push(format!("{at}.cpuset: {msg}"));
                }
            }
            Op::ClearCpuset { cgroup } | Op::Stop { cgroup } => {
                self.need_live(at, "cgroup", cgroup);
            }
            Op::SwapCpusets { a, b } => self.pair(at, ("a", a), ("b", b), op.name()),
            Op::MoveTasks { from, to } => self.pair(at, ("from", from), ("to", to), op.name()),
            Op::Spawn { cgroup, works } => self.spawn(at, cgroup, works),
            Op::SetAffinity { cgroup, affinity } => {
                self.need_live(at, "cgroup", cgroup);
                if let Err(msg) = check_affinity(affinity, self.topo) {
                    self.out.push(format!("{at}.affinity: {msg}"));
                }
            }
            Op::CaptureSnapshot { tag } => self.capture_tag(at, tag),
        }
    }

    /// Whether `name` is live at this op; a problem when it is not.
    fn need_live(&mut self, at: &str, field: &str, name: &str) -> bool {
        let live = self.live.contains(name);
        if !live {
            self.out.push(format!(
                "{at}.{field}: cgroup {name:?} does not exist at this step; add it with an add_cgroup op first (or drop `deferred`)"
            ));
        }
        live
    }

    fn add_cgroup(&mut self, at: &str, cgroup: &str) {
        if self.live.contains(cgroup) {
            self.out.push(format!(
                "{at}.cgroup: {cgroup:?} already exists at this step; mark it `deferred = true` or remove it first"
            ));
        } else if let Some(parent) = parent_of(cgroup).filter(|p| !self.live.contains(p)) {
            self.out.push(format!(
                "{at}.cgroup: parent {parent:?} of {cgroup:?} does not exist at this step; add the parent first"
            ));
        }
        if let Some((name, _)) = self.declared.get_key_value(cgroup) {
            self.live.insert(name);
        }
    }

    /// Ops on two cgroups: both live, and not the same one.
    fn pair(&mut self, at: &str, a: (&str, &str), b: (&str, &str), op: &str) {
        self.need_live(at, a.0, a.1);
        self.need_live(at, b.0, b.1);
        if a.1 == b.1 {
            self.out
                .push(format!("{at}: {op} needs two different cgroups"));
        }
    }

    fn spawn(&mut self, at: &str, cgroup: &str, works: &[WorkSpec]) {
        self.need_live(at, "cgroup", cgroup);
        if works.is_empty() {
            self.out
                .push(format!("{at}.works: empty; list at least one work"));
        }
        for (k, work) in works.iter().enumerate() {
            self.total_workers += work.workers;
            check_work(
                &format!("{at}.works[{k}]"),
                work,
                &self.topo.cpu_ids(),
                self.topo,
                &mut self.out,
            );
        }
    }

    fn capture_tag(&mut self, at: &str, tag: &str) {
        if tag.trim().is_empty() {
            self.out.push(format!("{at}.tag: empty; name the capture"));
        } else if crate::snapshot::parse_periodic_tag(tag).is_some() {
            self.out.push(format!(
                "{at}.tag: {tag:?} is reserved for periodic captures; choose another tag"
            ));
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
