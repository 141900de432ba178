//! What to run: work types, groups, policies, affinity, and their validation.
//!
//! Everything here is plain data. `WorkloadConfig::validate` rejects every
//! impossible combination before anything is spawned, naming the group and
//! the fix.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RunqError;

use super::bodies::WorkerContext;
use super::policy::SchedPolicy;

/// How workers are created: one process each, or threads inside one host
/// process per group (the controller itself never starts threads).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum CloneMode {
    Fork,
    Thread,
}

/// NUMA memory policy applied by each worker to itself (set_mempolicy).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum MemPolicy {
    Default,
    Bind(Vec<usize>),
    Preferred(usize),
    Interleave(Vec<usize>),
    Local,
}

/// Where workers may run. Scenario code resolves intents that need scenario
/// context (CrossCgroup) to Exact before spawning.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum AffinityIntent {
    /// Keep the controller's CPU mask.
    Inherit,
    /// Every worker of the group on exactly these CPUs.
    Exact(Vec<usize>),
    /// Every worker of the group on one CPU: the lowest CPU the controller
    /// may use.
    SingleCpu,
    /// Worker i on the CPUs of last-level cache i mod (number of LLCs).
    LlcAligned,
    /// Each worker on its own seeded random subset of `count` usable CPUs.
    RandomSubset { count: usize },
    /// Needs scenario context; must be resolved to Exact before spawning.
    CrossCgroup,
}

/// One phase of a `Sequence` work type.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Phase {
    Spin { ms: u64 },
    Sleep { ms: u64 },
    Yield { ms: u64 },
    Io { ms: u64 },
}

impl Phase {
    pub fn ms(&self) -> u64 {
        match self {
            Phase::Spin { ms } | Phase::Sleep { ms } | Phase::Yield { ms } | Phase::Io { ms } => {
                *ms
            }
        }
    }
}

/// A work body supplied as code (tests, payloads). The body loops until
/// `ctx.should_stop()`, calling `ctx.tick(..)` once per iteration, and
/// returns its work units.
#[derive(Clone)]
pub struct CustomWork {
    pub name: String,
    pub body: fn(&WorkerContext) -> u64,
}

impl CustomWork {
    pub fn new(name: impl Into<String>, body: fn(&WorkerContext) -> u64) -> Self {
        CustomWork {
            name: name.into(),
            body,
        }
    }
}

impl std::fmt::Debug for CustomWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomWork")
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for CustomWork {
    /// Bodies are compared by name: function addresses are not stable.
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Serialize for CustomWork {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("CustomWork", 1)?;
        st.serialize_field("name", &self.name)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for CustomWork {
    fn deserialize<D: serde::Deserializer<'de>>(_d: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "a Custom work type holds code and cannot be read from data; use one of the named work types",
        ))
    }
}

/// What keeps a work type's workers from running all the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Demand {
    /// Runnable for the whole run: it has a fair share of CPU, and its own
    /// longest gap means preemption, not sleep.
    Cpu,
    /// Sleeps, yields to partners or blocks by design: judged on progress,
    /// not on its share of CPU.
    Waits,
    /// Waits on storage: a slow disk, not the scheduler, stalls it, so its
    /// counter is not judged for stalls (it still counts as others
    /// advancing).
    Storage,
}

/// What each worker does in its loop.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum WorkType {
    /// Pure arithmetic; one unit per chunk of spin operations.
    CpuSpin,
    /// Short spin then sched_yield; one unit per yield.
    YieldHeavy,
    /// Spin, yield and short sleeps in turn.
    Mixed,
    /// 4 KiB write + fdatasync to an unlinked temp file; one unit per sync.
    IoSync,
    /// Spin `burst_ms`, sleep `sleep_ms`; resume latency per sleep.
    Bursty { burst_ms: u64, sleep_ms: u64 },
    /// Pairs bouncing a timestamp over two pipes; spin `burst_iters` per turn.
    PipeIo { burst_iters: u64 },
    /// Pairs handing a futex word back and forth.
    FutexPingPong { spin_iters: u64 },
    /// Sets of 1 waker + `fan_out` wakees on one futex word.
    FutexFanOut { fan_out: usize, spin_iters: u64 },
    /// Sets of 1 waker + `fan_out` wakees that each touch `footprint_kb`
    /// doing `ops` operations; the waker sleeps `sleep_us` between rounds.
    FanOutCompute {
        fan_out: usize,
        footprint_kb: usize,
        ops: u64,
        sleep_us: u64,
    },
    /// Strided walk over a `size_kb` buffer.
    CachePressure { size_kb: usize, stride: usize },
    /// Cache walk then sched_yield.
    CacheYield,
    /// Pairs: cache walk then pipe hand-off.
    CachePipe,
    /// Phases run in turn, forever.
    Sequence { phases: Vec<Phase> },
    /// fork + _exit + waitpid; one unit per fork (Fork mode only).
    ForkExit,
    /// Spin while stepping its own nice value through 0..=19.
    NiceSweep,
    /// Spin then move itself to another allowed CPU.
    AffinityChurn { spin_iters: u64 },
    /// Spin then switch its own policy among Normal, Batch and Idle.
    PolicyChurn { spin_iters: u64 },
    /// Touch pages of a region, drop them (MADV_DONTNEED), spin.
    PageFaultChurn {
        region_kb: usize,
        touches: usize,
        spin_iters: u64,
    },
    /// Sets of `contenders` sharing one futex mutex.
    MutexContention {
        contenders: usize,
        hold_iters: u64,
        work_iters: u64,
    },
    /// Rings of `depth` workers passing a token over pipes.
    WakeChain { depth: usize },
    /// Code supplied by the caller.
    Custom(CustomWork),
}

const ALL_NAMES: &[&str] = &[
    "cpu_spin",
    "yield_heavy",
    "mixed",
    "io_sync",
    "bursty",
    "pipe_io",
    "futex_ping_pong",
    "futex_fan_out",
    "fan_out_compute",
    "cache_pressure",
    "cache_yield",
    "cache_pipe",
    "sequence",
    "fork_exit",
    "nice_sweep",
    "affinity_churn",
    "policy_churn",
    "page_fault_churn",
    "mutex_contention",
    "wake_chain",
];

/// The CLI forms of every named work type, with their defaults.
pub const CLI_FORMS: &[&str] = &[
    "cpu_spin",
    "yield_heavy",
    "mixed",
    "io_sync",
    "bursty:burst_ms=50,sleep_ms=50",
    "pipe_io:burst_iters=1000",
    "futex_ping_pong:spin_iters=1000",
    "futex_fan_out:fan_out=3,spin_iters=1000",
    "fan_out_compute:fan_out=3,footprint_kb=256,ops=10000,sleep_us=1000",
    "cache_pressure:size_kb=4096,stride=64",
    "cache_yield",
    "cache_pipe",
    "sequence:phases=spin50/sleep50/yield20/io20",
    "fork_exit",
    "nice_sweep",
    "affinity_churn:spin_iters=100000",
    "policy_churn:spin_iters=100000",
    "page_fault_churn:region_kb=4096,touches=256,spin_iters=1000",
    "mutex_contention:contenders=4,hold_iters=1000,work_iters=1000",
    "wake_chain:depth=4",
];

impl WorkType {
    /// The snake_case name used on the command line and in reports.
    pub fn name(&self) -> &'static str {
        match self {
            WorkType::CpuSpin => "cpu_spin",
            WorkType::YieldHeavy => "yield_heavy",
            WorkType::Mixed => "mixed",
            WorkType::IoSync => "io_sync",
            WorkType::Bursty { .. } => "bursty",
            WorkType::PipeIo { .. } => "pipe_io",
            WorkType::FutexPingPong { .. } => "futex_ping_pong",
            WorkType::FutexFanOut { .. } => "futex_fan_out",
            WorkType::FanOutCompute { .. } => "fan_out_compute",
            WorkType::CachePressure { .. } => "cache_pressure",
            WorkType::CacheYield => "cache_yield",
            WorkType::CachePipe => "cache_pipe",
            WorkType::Sequence { .. } => "sequence",
            WorkType::ForkExit => "fork_exit",
            WorkType::NiceSweep => "nice_sweep",
            WorkType::AffinityChurn { .. } => "affinity_churn",
            WorkType::PolicyChurn { .. } => "policy_churn",
            WorkType::PageFaultChurn { .. } => "page_fault_churn",
            WorkType::MutexContention { .. } => "mutex_contention",
            WorkType::WakeChain { .. } => "wake_chain",
            WorkType::Custom(_) => "custom",
        }
    }

    /// Every named work type (Custom is code, not a name).
    pub fn all_names() -> &'static [&'static str] {
        ALL_NAMES
    }

    /// The number of workers that must form one set (pairs, fan-out sets,
    /// rings, mutex sets); the group's count must be a multiple of it.
    pub fn set_size(&self) -> usize {
        match self {
            WorkType::PipeIo { .. } | WorkType::FutexPingPong { .. } | WorkType::CachePipe => 2,
            WorkType::FutexFanOut { fan_out, .. } | WorkType::FanOutCompute { fan_out, .. } => {
                fan_out.saturating_add(1)
            }
            WorkType::MutexContention { contenders, .. } => *contenders,
            WorkType::WakeChain { depth } => *depth,
            _ => 1,
        }
    }

    /// What keeps this work type's workers off the CPU, which decides how
    /// the checks judge them. Every work type states it.
    pub fn demand(&self) -> Demand {
        match self {
            WorkType::CpuSpin
            | WorkType::YieldHeavy
            | WorkType::CachePressure { .. }
            | WorkType::CacheYield
            | WorkType::AffinityChurn { .. }
            | WorkType::PageFaultChurn { .. } => Demand::Cpu,
            WorkType::IoSync => Demand::Storage,
            // Sleeps, partners, children, or a policy that drops to idle.
            WorkType::Mixed
            | WorkType::Bursty { .. }
            | WorkType::PipeIo { .. }
            | WorkType::FutexPingPong { .. }
            | WorkType::FutexFanOut { .. }
            | WorkType::FanOutCompute { .. }
            | WorkType::CachePipe
            | WorkType::Sequence { .. }
            | WorkType::ForkExit
            | WorkType::NiceSweep
            | WorkType::PolicyChurn { .. }
            | WorkType::MutexContention { .. }
            | WorkType::WakeChain { .. } => Demand::Waits,
            // Code of unknown shape: judged on progress only.
            WorkType::Custom(_) => Demand::Waits,
        }
    }

    /// The [`Demand`] of the work type a report names (its [`Self::name`]);
    /// `None` for `custom` and names this runq does not know.
    pub fn demand_of(name: &str) -> Option<Demand> {
        if name.contains(':') {
            return None;
        }
        WorkType::parse_cli(name).ok().map(|w| w.demand())
    }

    /// Whether the body is pure computation, so per-iteration cost samples
    /// mean something.
    pub fn is_pure_compute(&self) -> bool {
        matches!(
            self,
            WorkType::CpuSpin | WorkType::CachePressure { .. } | WorkType::Custom(_)
        )
    }

    /// Parse `TYPE[:k=v,...]`, e.g. `futex_ping_pong:spin_iters=100`.
    /// Missing parameters take the defaults shown by [`CLI_FORMS`].
    pub fn parse_cli(s: &str) -> anyhow::Result<WorkType> {
        let (name, params_text) = match s.split_once(':') {
            Some((n, p)) => (n.trim(), p.trim()),
            None => (s.trim(), ""),
        };
        let mut params = Params::parse(name, params_text)?;
        let work = match name {
            "cpu_spin" => WorkType::CpuSpin,
            "yield_heavy" => WorkType::YieldHeavy,
            "mixed" => WorkType::Mixed,
            "io_sync" => WorkType::IoSync,
            "bursty" => WorkType::Bursty {
                burst_ms: params.u64("burst_ms", 50)?,
                sleep_ms: params.u64("sleep_ms", 50)?,
            },
            "pipe_io" => WorkType::PipeIo {
                burst_iters: params.u64("burst_iters", 1000)?,
            },
            "futex_ping_pong" => WorkType::FutexPingPong {
                spin_iters: params.u64("spin_iters", 1000)?,
            },
            "futex_fan_out" => WorkType::FutexFanOut {
                fan_out: params.usize("fan_out", 3)?,
                spin_iters: params.u64("spin_iters", 1000)?,
            },
            "fan_out_compute" => WorkType::FanOutCompute {
                fan_out: params.usize("fan_out", 3)?,
                footprint_kb: params.usize("footprint_kb", 256)?,
                ops: params.u64("ops", 10_000)?,
                sleep_us: params.u64("sleep_us", 1000)?,
            },
            "cache_pressure" => WorkType::CachePressure {
                size_kb: params.usize("size_kb", 4096)?,
                stride: params.usize("stride", 64)?,
            },
            "cache_yield" => WorkType::CacheYield,
            "cache_pipe" => WorkType::CachePipe,
            "sequence" => WorkType::Sequence {
                phases: parse_phases(&params.text("phases", "spin50/sleep50/yield20/io20"))?,
            },
            "fork_exit" => WorkType::ForkExit,
            "nice_sweep" => WorkType::NiceSweep,
            "affinity_churn" => WorkType::AffinityChurn {
                spin_iters: params.u64("spin_iters", 100_000)?,
            },
            "policy_churn" => WorkType::PolicyChurn {
                spin_iters: params.u64("spin_iters", 100_000)?,
            },
            "page_fault_churn" => WorkType::PageFaultChurn {
                region_kb: params.usize("region_kb", 4096)?,
                touches: params.usize("touches", 256)?,
                spin_iters: params.u64("spin_iters", 1000)?,
            },
            "mutex_contention" => WorkType::MutexContention {
                contenders: params.usize("contenders", 4)?,
                hold_iters: params.u64("hold_iters", 1000)?,
                work_iters: params.u64("work_iters", 1000)?,
            },
            "wake_chain" => WorkType::WakeChain {
                depth: params.usize("depth", 4)?,
            },
            _ => {
                return Err(RunqError::bad_input(format!(
                    "--work: unknown work type `{name}`; valid forms: {}",
                    CLI_FORMS.join(" | ")
                )))
            }
        };
        params.reject_leftovers(name)?;
        work.validate_params()
            .map_err(|e| RunqError::bad_input(format!("--work `{s}`: {e}")))?;
        Ok(work)
    }

    /// The size parameters (KiB) every worker of this type allocates.
    pub fn size_params_kb(&self) -> Vec<(&'static str, usize)> {
        match self {
            WorkType::FanOutCompute { footprint_kb, .. } => vec![("footprint_kb", *footprint_kb)],
            WorkType::CachePressure { size_kb, .. } => vec![("size_kb", *size_kb)],
            WorkType::PageFaultChurn { region_kb, .. } => vec![("region_kb", *region_kb)],
            _ => Vec::new(),
        }
    }

    /// Parameter checks that do not depend on the worker count. Returns the
    /// problem and its fix as plain text.
    fn validate_params(&self) -> Result<(), String> {
        if let Some(memory_kb) = machine_memory_kb() {
            for (field, kb) in self.size_params_kb() {
                if kb as u64 > memory_kb {
                    return Err(format!(
                        "{field}={kb} KiB is more than this machine's memory ({memory_kb} KiB \
                         MemTotal); use {field} <= {memory_kb}"
                    ));
                }
            }
        }
        self.validate_values()
    }

    /// Each parameter within its range: counts and sizes positive, sets
    /// large enough to contend.
    fn validate_values(&self) -> Result<(), String> {
        match self {
            WorkType::Bursty { burst_ms, sleep_ms } => {
                positive("burst_ms", *burst_ms)?;
                positive("sleep_ms", *sleep_ms)
            }
            WorkType::FutexFanOut { fan_out, .. } => positive("fan_out", *fan_out as u64),
            WorkType::FanOutCompute {
                fan_out,
                footprint_kb,
                ops,
                ..
            } => {
                positive("fan_out", *fan_out as u64)?;
                positive("footprint_kb", *footprint_kb as u64)?;
                positive("ops", *ops)
            }
            WorkType::CachePressure { size_kb, stride } => {
                validate_cache_pressure(*size_kb, *stride)
            }
            WorkType::Sequence { phases } => validate_phases(phases),
            WorkType::PageFaultChurn {
                region_kb, touches, ..
            } => {
                positive("region_kb", *region_kb as u64)?;
                positive("touches", *touches as u64)
            }
            WorkType::MutexContention { contenders, .. } => {
                if *contenders < 2 {
                    return Err(
                        "contenders must be >= 2; a mutex needs someone to contend with".into(),
                    );
                }
                Ok(())
            }
            WorkType::WakeChain { depth } => {
                if *depth < 2 {
                    return Err(
                        "depth must be >= 2; a wake chain needs at least two workers".into(),
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

fn positive(field: &str, v: u64) -> Result<(), String> {
    if v == 0 {
        Err(format!("{field} must be > 0; give a positive value"))
    } else {
        Ok(())
    }
}

/// A positive buffer and stride, the stride no larger than the buffer.
fn validate_cache_pressure(size_kb: usize, stride: usize) -> Result<(), String> {
    positive("size_kb", size_kb as u64)?;
    positive("stride", stride as u64)?;
    if size_kb.checked_mul(1024).is_none_or(|bytes| stride > bytes) {
        return Err(format!(
            "stride {stride} is larger than the buffer ({size_kb} KiB); use a stride <= size_kb*1024"
        ));
    }
    Ok(())
}

/// At least one phase, none of zero duration.
fn validate_phases(phases: &[Phase]) -> Result<(), String> {
    if phases.is_empty() {
        return Err("phases is empty; give at least one phase, e.g. spin50/sleep50".into());
    }
    for (i, p) in phases.iter().enumerate() {
        if p.ms() == 0 {
            return Err(format!(
                "phase {i} has a zero duration; give each phase ms > 0"
            ));
        }
    }
    Ok(())
}

fn parse_phases(text: &str) -> anyhow::Result<Vec<Phase>> {
    let mut phases = Vec::new();
    for part in text.split('/').filter(|p| !p.is_empty()) {
        let digits = part.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let kind = &part[..part.len() - digits.len()];
        let ms: u64 = digits.parse().map_err(|_| {
            RunqError::bad_input(format!(
                "sequence phase `{part}`: expected KINDms like spin50, sleep20, yield10 or io10"
            ))
        })?;
        phases.push(match kind {
            "spin" => Phase::Spin { ms },
            "sleep" => Phase::Sleep { ms },
            "yield" => Phase::Yield { ms },
            "io" => Phase::Io { ms },
            _ => {
                return Err(RunqError::bad_input(format!(
                    "sequence phase `{part}`: unknown kind `{kind}`; use spin, sleep, yield or io"
                )))
            }
        });
    }
    Ok(phases)
}

/// `k=v` pairs of a CLI work spec; each lookup removes the key so leftovers
/// (typos) can be reported.
struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    fn parse(name: &str, text: &str) -> anyhow::Result<Params> {
        let mut pairs = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(RunqError::bad_input(format!(
                    "--work {name}: parameter `{item}` is not k=v; valid forms: {}",
                    CLI_FORMS.join(" | ")
                )));
            };
            let key = k.trim();
            if pairs.iter().any(|(seen, _): &(String, String)| seen == key) {
                return Err(RunqError::bad_input(format!(
                    "--work {name}: parameter `{key}` is duplicated; give it once"
                )));
            }
            pairs.push((key.to_string(), v.trim().to_string()));
        }
        Ok(Params { pairs })
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let pos = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(pos).1)
    }

    fn u64(&mut self, key: &str, default: u64) -> anyhow::Result<u64> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                RunqError::bad_input(format!(
                    "--work: {key}=`{v}` is not a non-negative integer; e.g. {key}={default}"
                ))
            }),
        }
    }

    fn usize(&mut self, key: &str, default: usize) -> anyhow::Result<usize> {
        Ok(self.u64(key, default as u64)? as usize)
    }

    fn text(&mut self, key: &str, default: &str) -> String {
        self.take(key).unwrap_or_else(|| default.to_string())
    }

    fn reject_leftovers(&self, name: &str) -> anyhow::Result<()> {
        if let Some((k, _)) = self.pairs.first() {
            let form = CLI_FORMS
                .iter()
                .find(|f| f.split(':').next() == Some(name))
                .copied()
                .unwrap_or(name);
            return Err(RunqError::bad_input(format!(
                "--work {name}: unknown parameter `{k}`; the form is `{form}`"
            )));
        }
        Ok(())
    }
}

/// An extra group of workers with its own work type and placement.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkGroup {
    pub work: WorkType,
    pub workers: usize,
    pub affinity: AffinityIntent,
    pub policy: SchedPolicy,
    pub nice: i32,
    pub mem_policy: MemPolicy,
}

impl WorkGroup {
    pub fn new(work: WorkType, workers: usize) -> Self {
        WorkGroup {
            work,
            workers,
            affinity: AffinityIntent::Inherit,
            policy: SchedPolicy::Normal,
            nice: 0,
            mem_policy: MemPolicy::Default,
        }
    }
}

/// Everything `WorkloadHandle::spawn` needs. Group 0 is described by the
/// top-level fields; `composed` adds groups 1, 2, ...
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WorkloadConfig {
    pub work: WorkType,
    pub workers: usize,
    pub clone_mode: CloneMode,
    pub affinity: AffinityIntent,
    pub policy: SchedPolicy,
    pub nice: i32,
    pub mem_policy: MemPolicy,
    pub composed: Vec<WorkGroup>,
    /// How long `stop_and_collect` waits for reports before SIGKILL.
    pub collect_timeout: Duration,
    /// Seeds reservoir sampling and random affinity subsets.
    pub seed: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            work: WorkType::CpuSpin,
            workers: 2,
            clone_mode: CloneMode::Fork,
            affinity: AffinityIntent::Inherit,
            policy: SchedPolicy::Normal,
            nice: 0,
            mem_policy: MemPolicy::Default,
            composed: Vec::new(),
            collect_timeout: Duration::from_secs(2),
            seed: 0,
        }
    }
}

impl WorkloadConfig {
    /// All groups in report order: group 0 from the top-level fields, then
    /// the composed ones.
    pub fn groups(&self) -> Vec<WorkGroup> {
        let mut groups = Vec::with_capacity(1 + self.composed.len());
        groups.push(WorkGroup {
            work: self.work.clone(),
            workers: self.workers,
            affinity: self.affinity.clone(),
            policy: self.policy.clone(),
            nice: self.nice,
            mem_policy: self.mem_policy.clone(),
        });
        groups.extend(self.composed.iter().cloned());
        groups
    }

    /// Total number of workers over all groups.
    pub fn total_workers(&self) -> usize {
        self.groups().iter().map(|g| g.workers).sum()
    }

    /// Reject impossible combinations before anything is spawned. The
    /// error is `RunqError::BadInput` naming the group and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.collect_timeout.is_zero() {
            return Err(RunqError::bad_input(
                "collect_timeout is zero; give a positive deadline such as 2s",
            ));
        }
        let groups = self.groups();
        if groups.iter().all(|g| g.workers == 0) {
            return Err(RunqError::bad_input(
                "workers: no group has any worker; set workers to 1 or more",
            ));
        }
        let allowed = allowed_cpus();
        let nodes = online_nodes();
        for (i, g) in groups.iter().enumerate() {
            let name = if i == 0 {
                format!("group 0 ({})", g.work.name())
            } else {
                format!("composed group {i} ({})", g.work.name())
            };
            if g.workers == 0 && i > 0 {
                return Err(RunqError::bad_input(format!(
                    "{name}: workers is 0; give 1 or more or remove the group"
                )));
            }
            g.work
                .validate_params()
                .map_err(|e| RunqError::bad_input(format!("{name}: {e}")))?;
            validate_set_size(&name, g)?;
            validate_memory(&name, g)?;
            if matches!(g.work, WorkType::ForkExit) && self.clone_mode == CloneMode::Thread {
                return Err(RunqError::bad_input(format!(
                    "{name}: fork_exit cannot run in thread mode (fork from a threaded host); use clone mode fork"
                )));
            }
            validate_priority(&name, g)?;
            validate_affinity(&name, &g.affinity, &allowed)?;
            validate_mem_policy(&name, &g.mem_policy, &nodes)?;
        }
        Ok(())
    }
}

/// Types that run in pairs, sets or rings need a worker count that is a
/// multiple of the set; the message names the nearest counts that are.
fn validate_set_size(name: &str, g: &WorkGroup) -> anyhow::Result<()> {
    let set = g.work.set_size();
    if g.workers == 0 || set <= 1 || g.workers.is_multiple_of(set) {
        return Ok(());
    }
    let what = match &g.work {
        WorkType::PipeIo { .. } | WorkType::FutexPingPong { .. } | WorkType::CachePipe => {
            "runs in pairs".to_string()
        }
        WorkType::FutexFanOut { fan_out, .. } | WorkType::FanOutCompute { fan_out, .. } => {
            format!("runs in sets of fan_out+1 = {set} (1 waker + {fan_out} wakees)")
        }
        WorkType::MutexContention { contenders, .. } => {
            format!("runs in sets of contenders = {contenders}")
        }
        WorkType::WakeChain { depth } => format!("runs in rings of depth = {depth}"),
        _ => format!("runs in sets of {set}"),
    };
    let lower = g.workers / set * set;
    let upper = lower + set;
    let hint = if lower > 0 {
        format!("{lower} or {upper}")
    } else {
        format!("{upper}")
    };
    Err(RunqError::bad_input(format!(
        "{name}: {} workers is impossible, this type {what}; use {hint} workers",
        g.workers
    )))
}

/// The real-time priority and the nice value within the kernel's ranges.
fn validate_priority(name: &str, g: &WorkGroup) -> anyhow::Result<()> {
    match &g.policy {
        SchedPolicy::Fifo(p) | SchedPolicy::RoundRobin(p) if !(1..=99).contains(p) => {
            return Err(RunqError::bad_input(format!(
                "{name}: real-time priority {p} is out of range; use 1..=99"
            )));
        }
        _ => {}
    }
    if !(-20..=19).contains(&g.nice) {
        return Err(RunqError::bad_input(format!(
            "{name}: nice {} is out of range; use -20..=19",
            g.nice
        )));
    }
    Ok(())
}

/// Every worker of `g` allocates its size parameters: together they must
/// fit in the machine's memory.
fn validate_memory(name: &str, g: &WorkGroup) -> anyhow::Result<()> {
    let Some(memory_kb) = machine_memory_kb() else {
        return Ok(());
    };
    for (field, kb) in g.work.size_params_kb() {
        let total = (kb as u64).saturating_mul(g.workers as u64);
        if total > memory_kb {
            return Err(RunqError::bad_input(format!(
                "{name}: {} workers x {field}={kb} KiB = {total} KiB is more than this \
                 machine's memory ({memory_kb} KiB MemTotal); use {field} <= {} or fewer workers",
                g.workers,
                memory_kb / g.workers.max(1) as u64
            )));
        }
    }
    Ok(())
}

/// The machine's memory in KiB (`MemTotal` of /proc/meminfo); `None` when
/// it cannot be read (sizes are then not checked).
pub fn machine_memory_kb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn validate_affinity(name: &str, a: &AffinityIntent, allowed: &[usize]) -> anyhow::Result<()> {
    match a {
        AffinityIntent::Exact(cpus) => {
            if cpus.is_empty() {
                return Err(RunqError::bad_input(format!(
                    "{name}: affinity is an empty CPU set; list at least one CPU (usable: {})",
                    crate::topology::format_cpu_list(allowed)
                )));
            }
            if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
                return Err(RunqError::bad_input(format!(
                    "{name}: affinity CPU {bad} is not usable here; pick from {}",
                    crate::topology::format_cpu_list(allowed)
                )));
            }
        }
        AffinityIntent::RandomSubset { count } => {
            if *count == 0 || *count > allowed.len() {
                return Err(RunqError::bad_input(format!(
                    "{name}: random subset of {count} CPUs is impossible; use a count in 1..={}",
                    allowed.len()
                )));
            }
        }
        AffinityIntent::CrossCgroup => {
            return Err(RunqError::bad_input(format!(
                "{name}: affinity CrossCgroup needs scenario context; resolve it to Exact(cpus) before spawning"
            )));
        }
        AffinityIntent::Inherit | AffinityIntent::SingleCpu | AffinityIntent::LlcAligned => {}
    }
    Ok(())
}

fn validate_mem_policy(name: &str, m: &MemPolicy, nodes: &[usize]) -> anyhow::Result<()> {
    let check = |list: &[usize]| -> anyhow::Result<()> {
        if list.is_empty() {
            return Err(RunqError::bad_input(format!(
                "{name}: memory policy has an empty node set; list at least one node (online: {})",
                crate::topology::format_cpu_list(nodes)
            )));
        }
        if let Some(bad) = list.iter().find(|n| !nodes.contains(n)) {
            return Err(RunqError::bad_input(format!(
                "{name}: memory node {bad} is not online; pick from {}",
                crate::topology::format_cpu_list(nodes)
            )));
        }
        Ok(())
    };
    match m {
        MemPolicy::Bind(list) | MemPolicy::Interleave(list) => check(list),
        MemPolicy::Preferred(n) => check(&[*n]),
        MemPolicy::Default | MemPolicy::Local => Ok(()),
    }
}

/// CPUs the calling process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Online NUMA nodes (node 0 when sysfs has no node directory).
pub fn online_nodes() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|t| crate::topology::parse_cpu_list(t.trim()).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![0])
}
