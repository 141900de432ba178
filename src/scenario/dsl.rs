//! Scenario types: what a run declares (cgroups, works, steps, checks).
//!
//! Every type is serde with `deny_unknown_fields`, so the TOML file format
//! (see [`super::toml`]) is exactly these types. Durations are written as
//! text: `"500ms"`, `"2s"`, `"1.5s"`, `"1m"`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::Thresholds;
use crate::workload::{AffinityIntent, CloneMode, MemPolicy, SchedPolicy, WorkType};

/// Run length when a scenario does not say.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(2);

/// A whole scenario: cgroups, the steps that change them, and thresholds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// basic, cpuset, dynamic, affinity, stress, nested, interaction,
    /// performance (free text for files).
    #[serde(default)]
    pub family: String,
    /// One line: what the scenario exercises.
    #[serde(default)]
    pub description: String,
    /// Total run length; hold fractions are fractions of it.
    #[serde(default = "default_duration", with = "duration_text")]
    pub duration: Duration,
    /// Every cgroup the scenario uses. Non-deferred ones exist (with their
    /// works running) from the start.
    #[serde(default)]
    pub cgroups: Vec<CgroupDef>,
    /// Steps run in order. No steps = hold the initial state for the whole
    /// run.
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Take a scheduler capture every this many milliseconds during holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periodic_capture_ms: Option<u64>,
    /// External programs run beside the workers, each in the cgroup its
    /// `cgroup` names (the run root when unset), from the start of the first
    /// step; one still running at the end is stopped (SIGTERM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payloads: Vec<crate::workload::payload::PayloadSpec>,
    /// The sched_ext scheduler under test, started before any cgroup or
    /// worker and stopped after them (`[scheduler]` in TOML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<crate::scheduler::SchedulerSpec>,
}

fn default_duration() -> Duration {
    DEFAULT_DURATION
}

/// Chained construction: `Scenario::named("x").cgroup(..).step(..)`.
impl Scenario {
    /// An empty scenario: no cgroups, no steps, [`DEFAULT_DURATION`],
    /// default thresholds.
    pub fn named(name: impl Into<String>) -> Self {
        Scenario {
            name: name.into(),
            family: String::new(),
            description: String::new(),
            duration: DEFAULT_DURATION,
            cgroups: Vec::new(),
            steps: Vec::new(),
            thresholds: Thresholds::default(),
            periodic_capture_ms: None,
            payloads: Vec::new(),
            scheduler: None,
        }
    }

    pub fn family(mut self, family: impl Into<String>) -> Self {
        self.family = family.into();
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Total run length (hold fractions are fractions of it).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Adds a cgroup (a nested one after its parent).
    pub fn cgroup(mut self, def: CgroupDef) -> Self {
        self.cgroups.push(def);
        self
    }

    /// Adds a step, run after the ones before it.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Replaces the thresholds; change single limits with struct update
    /// syntax: `Thresholds { max_gap_ms: 500.0, ..Default::default() }`.
    pub fn thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// Takes a scheduler capture every `every` during holds (rounded down
    /// to milliseconds).
    pub fn periodic_capture(mut self, every: Duration) -> Self {
        self.periodic_capture_ms = Some(every.as_millis() as u64);
        self
    }

    /// Adds an external program run beside the workers.
    pub fn payload(mut self, spec: crate::workload::payload::PayloadSpec) -> Self {
        self.payloads.push(spec);
        self
    }

    /// Runs the scenario under a sched_ext scheduler.
    pub fn scheduler(mut self, spec: crate::scheduler::SchedulerSpec) -> Self {
        self.scheduler = Some(spec);
        self
    }
}

/// One cgroup under the run root. `name` may be nested (`"outer/inner"`);
/// the parent must then be declared too (and come first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<CpusetSpec>,
    /// CPU weight 1..=10000 (100 = default; v1 shares = weight * 1024 / 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default)]
    pub works: Vec<WorkSpec>,
    /// Created only by an `add_cgroup` op, not at the start.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deferred: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Chained construction. The cgroup's own settings are [`Self::cpuset`],
/// [`Self::weight`] and [`Self::deferred`]; [`Self::workers`],
/// [`Self::work`], [`Self::policy`], [`Self::nice`], [`Self::affinity`] and
/// [`Self::threads`] set the cgroup's current work group (the last one
/// added, started as one `cpu_spin` worker when there is none), and
/// [`Self::add_work`] starts another group:
///
/// ```
/// use runq::prelude::*;
/// let cg = CgroupDef::named("cg_0")
///     .workers(2)
///     .work(WorkType::YieldHeavy)
///     .add_work(WorkSpec::new(WorkType::CpuSpin, 1).nice(10))
///     .weight(200);
/// assert_eq!(cg.works.len(), 2);
/// assert_eq!(cg.works[0].workers, 2);
/// ```
impl CgroupDef {
    /// A cgroup with no cpuset, default weight and the given works.
    pub fn new(name: &str, works: Vec<WorkSpec>) -> Self {
        CgroupDef {
            name: name.to_owned(),
            cpuset: None,
            weight: None,
            works,
            deferred: false,
        }
    }

    /// A cgroup with no works yet, no cpuset and default weight.
    pub fn named(name: impl Into<String>) -> Self {
        CgroupDef {
            name: name.into(),
            cpuset: None,
            weight: None,
            works: Vec::new(),
            deferred: false,
        }
    }

    pub fn cpuset(mut self, spec: CpusetSpec) -> Self {
        self.cpuset = Some(spec);
        self
    }

    /// CPU weight 1..=10000 (100 = default).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Created only by an [`Op::AddCgroup`], not at the start.
    pub fn deferred(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// Starts another work group.
    pub fn add_work(mut self, work: WorkSpec) -> Self {
        self.works.push(work);
        self
    }

    /// The number of workers of the current work group.
    pub fn workers(mut self, workers: usize) -> Self {
        self.current_work().workers = workers;
        self
    }

    /// What the current work group's workers do.
    pub fn work(mut self, work: WorkType) -> Self {
        self.current_work().work = work;
        self
    }

    /// The current work group's scheduling policy.
    pub fn policy(mut self, policy: SchedPolicy) -> Self {
        self.current_work().policy = policy;
        self
    }

    /// The current work group's nice value.
    pub fn nice(mut self, nice: i32) -> Self {
        self.current_work().nice = nice;
        self
    }

    /// Where the current work group's workers may run.
    pub fn affinity(mut self, affinity: AffinityIntent) -> Self {
        self.current_work().affinity = affinity;
        self
    }

    /// The current work group's workers are threads of one process.
    pub fn threads(mut self) -> Self {
        self.current_work().clone_mode = CloneMode::Thread;
        self
    }

    fn current_work(&mut self) -> &mut WorkSpec {
        if self.works.is_empty() {
            self.works.push(WorkSpec::new(WorkType::CpuSpin, 1));
        }
        self.works.last_mut().expect("just ensured one")
    }
}

/// A group of identical workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkSpec {
    /// Work type in the `runq workload --work` form, e.g. `"cpu_spin"` or
    /// `"bursty:burst_ms=5,sleep_ms=5"`.
    #[serde(with = "work_text")]
    pub work: WorkType,
    pub workers: usize,
    #[serde(default = "default_clone_mode", with = "forms::CloneModeForm")]
    pub clone_mode: CloneMode,
    #[serde(default = "default_affinity", with = "forms::AffinityForm")]
    pub affinity: AffinityIntent,
    /// `"normal"`, `"batch"`, `"idle"`, `"fifo:10"`, `"rr:10"`.
    #[serde(default = "default_policy")]
    pub policy: SchedPolicy,
    #[serde(default)]
    pub nice: i32,
    #[serde(default = "default_mem_policy", with = "forms::MemPolicyForm")]
    pub mem_policy: MemPolicy,
}

fn default_clone_mode() -> CloneMode {
    CloneMode::Fork
}
fn default_affinity() -> AffinityIntent {
    AffinityIntent::Inherit
}
fn default_policy() -> SchedPolicy {
    SchedPolicy::Normal
}
fn default_mem_policy() -> MemPolicy {
    MemPolicy::Default
}

impl WorkSpec {
    /// `workers` fork workers of `work`, default everything else.
    pub fn new(work: WorkType, workers: usize) -> Self {
        WorkSpec {
            work,
            workers,
            clone_mode: default_clone_mode(),
            affinity: default_affinity(),
            policy: default_policy(),
            nice: 0,
            mem_policy: default_mem_policy(),
        }
    }

    pub fn threads(mut self) -> Self {
        self.clone_mode = CloneMode::Thread;
        self
    }

    pub fn affinity(mut self, affinity: AffinityIntent) -> Self {
        self.affinity = affinity;
        self
    }

    pub fn policy(mut self, policy: SchedPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = nice;
        self
    }

    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    pub fn mem_policy(mut self, mem_policy: MemPolicy) -> Self {
        self.mem_policy = mem_policy;
        self
    }
}

/// One step: ops applied at its start, then a hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default)]
    pub ops: Vec<Op>,
    pub hold: HoldSpec,
}

/// `Step::hold(HoldSpec::Fraction(0.5)).op(Op::stop("cg0"))`: the ops are
/// applied at the step's start, then the hold runs.
impl Step {
    pub fn new(ops: Vec<Op>, hold: HoldSpec) -> Self {
        Step { ops, hold }
    }

    /// A step that only holds; a [`Duration`] is a fixed hold.
    pub fn hold(hold: impl Into<HoldSpec>) -> Self {
        Step {
            ops: Vec::new(),
            hold: hold.into(),
        }
    }

    /// Adds an op, applied after the ones before it.
    pub fn op(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Adds ops, applied in order after the ones before them.
    pub fn ops(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.ops.extend(ops);
        self
    }
}

/// How long a step lasts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HoldSpec {
    /// This fraction of the scenario's duration, in (0, 1].
    Fraction(f64),
    /// A fixed time, independent of `--duration`.
    Fixed(#[serde(with = "duration_text")] Duration),
    /// Re-apply the step's ops every `every` for `fraction` of the run (the
    /// ops run once at the start too): churn.
    Loop {
        #[serde(with = "duration_text")]
        every: Duration,
        fraction: f64,
    },
}

impl From<Duration> for HoldSpec {
    fn from(d: Duration) -> Self {
        HoldSpec::Fixed(d)
    }
}

impl HoldSpec {
    /// The hold's length for a run of `total`.
    pub fn length(&self, total: Duration) -> Duration {
        match self {
            HoldSpec::Fraction(f) | HoldSpec::Loop { fraction: f, .. } => total.mul_f64(*f),
            HoldSpec::Fixed(d) => *d,
        }
    }
}

/// Which CPUs a cgroup's cpuset holds, relative to the topology.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CpusetSpec {
    /// Exactly the CPUs of LLC `index`.
    LlcAligned { index: usize },
    /// Part `index` of the CPUs split into `of` disjoint parts.
    Disjoint { index: usize, of: usize },
    /// Part `index` of `of`, extended into the next part by `overlap` (0, 1]
    /// of its size.
    Overlapping {
        index: usize,
        of: usize,
        overlap: f64,
    },
    /// CPUs from `from_frac` to `to_frac` of the (topology-ordered) CPUs.
    Range { from_frac: f64, to_frac: f64 },
    /// These CPU numbers.
    Exact(Vec<usize>),
}

/// A change applied at the start of a step (and every `every` in a loop).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Create a deferred (or removed) cgroup and start its works.
    AddCgroup {
        cgroup: String,
    },
    /// Stop the cgroup's workers and remove it (and its children).
    RemoveCgroup {
        cgroup: String,
    },
    SetCpuset {
        cgroup: String,
        cpuset: CpusetSpec,
    },
    /// Back to the parent's CPUs.
    ClearCpuset {
        cgroup: String,
    },
    /// Exchange the cpusets of two cgroups.
    SwapCpusets {
        a: String,
        b: String,
    },
    /// Start more workers in a live cgroup.
    Spawn {
        cgroup: String,
        works: Vec<WorkSpec>,
    },
    /// Stop every worker of the cgroup (the cgroup stays).
    Stop {
        cgroup: String,
    },
    /// Re-pin every live worker of the cgroup.
    SetAffinity {
        cgroup: String,
        #[serde(with = "forms::AffinityForm")]
        affinity: AffinityIntent,
    },
    /// Move every live worker of `from` into `to`.
    MoveTasks {
        from: String,
        to: String,
    },
    /// Take a tagged scheduler + cgroup capture.
    CaptureSnapshot {
        tag: String,
    },
}

/// Constructors, one per op, taking cgroup names as any string.
impl Op {
    pub fn add_cgroup(cgroup: impl Into<String>) -> Self {
        Op::AddCgroup {
            cgroup: cgroup.into(),
        }
    }

    pub fn remove_cgroup(cgroup: impl Into<String>) -> Self {
        Op::RemoveCgroup {
            cgroup: cgroup.into(),
        }
    }

    pub fn set_cpuset(cgroup: impl Into<String>, cpuset: CpusetSpec) -> Self {
        Op::SetCpuset {
            cgroup: cgroup.into(),
            cpuset,
        }
    }

    pub fn clear_cpuset(cgroup: impl Into<String>) -> Self {
        Op::ClearCpuset {
            cgroup: cgroup.into(),
        }
    }

    pub fn swap_cpusets(a: impl Into<String>, b: impl Into<String>) -> Self {
        Op::SwapCpusets {
            a: a.into(),
            b: b.into(),
        }
    }

    pub fn spawn(cgroup: impl Into<String>, works: Vec<WorkSpec>) -> Self {
        Op::Spawn {
            cgroup: cgroup.into(),
            works,
        }
    }

    pub fn stop(cgroup: impl Into<String>) -> Self {
        Op::Stop {
            cgroup: cgroup.into(),
        }
    }

    pub fn set_affinity(cgroup: impl Into<String>, affinity: AffinityIntent) -> Self {
        Op::SetAffinity {
            cgroup: cgroup.into(),
            affinity,
        }
    }

    pub fn move_tasks(from: impl Into<String>, to: impl Into<String>) -> Self {
        Op::MoveTasks {
            from: from.into(),
            to: to.into(),
        }
    }

    pub fn capture_snapshot(tag: impl Into<String>) -> Self {
        Op::CaptureSnapshot { tag: tag.into() }
    }
}

impl Op {
    /// The op's name as written in files.
    pub fn name(&self) -> &'static str {
        match self {
            Op::AddCgroup { .. } => "add_cgroup",
            Op::RemoveCgroup { .. } => "remove_cgroup",
            Op::SetCpuset { .. } => "set_cpuset",
            Op::ClearCpuset { .. } => "clear_cpuset",
            Op::SwapCpusets { .. } => "swap_cpusets",
            Op::Spawn { .. } => "spawn",
            Op::Stop { .. } => "stop",
            Op::SetAffinity { .. } => "set_affinity",
            Op::MoveTasks { .. } => "move_tasks",
            Op::CaptureSnapshot { .. } => "capture_snapshot",
        }
    }

    /// Cgroup names the op refers to, with the field naming each.
    pub fn cgroup_refs(&self) -> Vec<(&'static str, &str)> {
        match self {
            Op::AddCgroup { cgroup }
            | Op::RemoveCgroup { cgroup }
            | Op::SetCpuset { cgroup, .. }
            | Op::ClearCpuset { cgroup }
            | Op::Spawn { cgroup, .. }
            | Op::Stop { cgroup }
            | Op::SetAffinity { cgroup, .. } => vec![("cgroup", cgroup.as_str())],
            Op::SwapCpusets { a, b } => vec![("a", a.as_str()), ("b", b.as_str())],
            Op::MoveTasks { from, to } => vec![("from", from.as_str()), ("to", to.as_str())],
            Op::CaptureSnapshot { .. } => Vec::new(),
        }
    }
}

/// The longest duration a scenario may hold (a step, a hold, the run).
pub const MAX_SCENARIO_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Reads a scenario duration (`"250ms"`, `"2s"`, `"1m"`; grammar in
/// [`crate::duration`]), at most [`MAX_SCENARIO_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(text).map_err(|e| e.to_string())?;
    crate::duration::check_range("duration", text, d, Duration::ZERO, MAX_SCENARIO_DURATION)
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    crate::duration::format(d)
}

/// serde for durations as text.
pub mod duration_text {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// serde for work types in the `runq workload --work` text form.
pub mod work_text {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(w: &WorkType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&work_to_text(w))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<WorkType, D::Error> {
        let text = String::deserialize(d)?;
        WorkType::parse_cli(&text).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// The `runq workload --work` text of a work type: its name, then its
/// parameters as `k=v` in declaration order (read back by
/// `WorkType::parse_cli`).
pub fn work_to_text(work: &WorkType) -> String {
    let value = serde_json::to_value(work).unwrap_or(serde_json::Value::Null);
    let params = match &value {
        serde_json::Value::Object(map) => map.values().next().cloned(),
        _ => None,
    };
    let mut text = work.name().to_owned();
    if let (WorkType::Sequence { phases }, _) = (work, &params) {
        let parts: Vec<String> = phases
            .iter()
            .map(|p| {
                let kind = match p {
                    crate::workload::Phase::Spin { .. } => "spin",
                    crate::workload::Phase::Sleep { .. } => "sleep",
                    crate::workload::Phase::Yield { .. } => "yield",
                    crate::workload::Phase::Io { .. } => "io",
                };
                format!("{kind}{}", p.ms())
            })
            .collect();
        return format!("{text}:phases={}", parts.join("/"));
    }
    if let Some(serde_json::Value::Object(fields)) = params {
        let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !parts.is_empty() {
            text = format!("{text}:{}", parts.join(","));
        }
    }
    text
}

/// snake_case file forms of the workload enums (`"thread"`,
/// `"single_cpu"`, `{ random_subset = { count = 2 } }`). The policy has its
/// own text form ([`SchedPolicy`]'s serde), the same as the command line's.
pub mod forms {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "CloneMode", rename_all = "snake_case")]
    pub enum CloneModeForm {
        Fork,
        Thread,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "MemPolicy", rename_all = "snake_case")]
    pub enum MemPolicyForm {
        Default,
        Bind(Vec<usize>),
        Preferred(usize),
        Interleave(Vec<usize>),
        Local,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(
        remote = "AffinityIntent",
        rename_all = "snake_case",
        deny_unknown_fields
    )]
    pub enum AffinityForm {
        Inherit,
        Exact(Vec<usize>),
        SingleCpu,
        LlcAligned,
        RandomSubset { count: usize },
        CrossCgroup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for text in ["500ms", "2s", "1m", "250us"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    /// The builders produce exactly what the TOML form declares.
    #[test]
    fn builders_match_the_file_form() {
        let built = Scenario::named("b")
            .family("test")
            .duration(Duration::from_secs(3))
            .cgroup(
                CgroupDef::named("cg_0")
                    .workers(2)
                    .work(WorkType::YieldHeavy)
                    .nice(5)
                    .add_work(WorkSpec::new(WorkType::CpuSpin, 1).policy(SchedPolicy::Fifo(10)))
                    .cpuset(CpusetSpec::Disjoint { index: 0, of: 2 })
                    .weight(200),
            )
            .cgroup(CgroupDef::named("cg_1").workers(1).deferred())
            .step(Step::hold(Duration::from_millis(300)))
            .step(Step::hold(HoldSpec::Fraction(0.5)).op(Op::add_cgroup("cg_1")))
            .thresholds(Thresholds {
                max_gap_ms: 500.0,
                ..Default::default()
            })
            .periodic_capture(Duration::from_millis(250));
        let text = r#"
            name = "b"
            family = "test"
            duration = "3s"
            periodic_capture_ms = 250
            [[cgroups]]
            name = "cg_0"
            cpuset = { disjoint = { index = 0, of = 2 } }
            weight = 200
            works = [
                { work = "yield_heavy", workers = 2, nice = 5 },
                { work = "cpu_spin", workers = 1, policy = "fifo:10" },
            ]
            [[cgroups]]
            name = "cg_1"
            deferred = true
            works = [{ work = "cpu_spin", workers = 1 }]
            [[steps]]
            hold = { fixed = "300ms" }
            [[steps]]
            ops = [{ op = "add_cgroup", cgroup = "cg_1" }]
            hold = { fraction = 0.5 }
            [thresholds]
            max_gap_ms = 500.0
        "#;
        let read = crate::scenario::toml::from_toml_str(text, "test").unwrap();
        assert_eq!(built.cgroups, read.cgroups);
        assert_eq!(built.steps, read.steps);
        assert_eq!(built.thresholds, read.thresholds);
        assert_eq!(
            (built.duration, built.periodic_capture_ms, &built.family),
            (read.duration, read.periodic_capture_ms, &read.family)
        );
    }

    #[test]
    fn hold_lengths() {
        let total = Duration::from_secs(2);
        assert_eq!(
            HoldSpec::Fraction(0.25).length(total),
            Duration::from_millis(500)
        );
        assert_eq!(
            HoldSpec::Fixed(Duration::from_millis(30)).length(total),
            Duration::from_millis(30)
        );
    }
}
