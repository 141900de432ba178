//! What the worker checks look at: per-cgroup worker reports with how each
//! worker was set up and the progress samples taken during holds.

use serde::{Deserialize, Serialize};

use crate::workload::{AffinityIntent, SchedPolicy, WorkerReport, WorkloadConfig};

/// How a worker was set up, beyond what its report says. All optional: a
/// missing setup means policy `normal`, nice 0, no affinity, alive for the
/// whole run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSetup {
    /// Scheduling policy, in its one text spelling (`normal`, `fifo:50`).
    pub policy: SchedPolicy,
    pub nice: i32,
    /// The CPUs the worker was pinned to, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Vec<usize>>,
    /// When the worker was started, in the samples' clock (ms since the
    /// run's start); samples before it are ignored for this worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<f64>,
    /// When the worker was stopped; samples after it are ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_ms: Option<f64>,
}

impl Default for WorkerSetup {
    fn default() -> Self {
        WorkerSetup {
            policy: SchedPolicy::Normal,
            nice: 0,
            affinity: None,
            started_ms: None,
            stopped_ms: None,
        }
    }
}

impl WorkerSetup {
    /// A setup with a policy, nice value and optional affinity.
    pub fn new(policy: SchedPolicy, nice: i32, affinity: Option<Vec<usize>>) -> Self {
        WorkerSetup {
            policy,
            nice,
            affinity,
            ..Default::default()
        }
    }

    /// One setup per worker of a workload, in report order. Only exact
    /// affinities are recorded; the others are resolved per worker by the
    /// workload engine, so isolation is then judged by the cpuset alone.
    pub fn for_config(config: &WorkloadConfig) -> Vec<WorkerSetup> {
        config
            .groups()
            .iter()
            .flat_map(|g| {
                let affinity = match &g.affinity {
                    AffinityIntent::Exact(cpus) => Some(cpus.clone()),
                    _ => None,
                };
                std::iter::repeat_n(Self::new(g.policy.clone(), g.nice, affinity), g.workers)
            })
            .collect()
    }

    pub(super) fn policy_class(&self) -> PolicyClass {
        match self.policy {
            SchedPolicy::Fifo(_) | SchedPolicy::RoundRobin(_) => PolicyClass::RealTime,
            SchedPolicy::Idle => PolicyClass::Idle,
            SchedPolicy::Normal | SchedPolicy::Batch | SchedPolicy::Ext => PolicyClass::Fair,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PolicyClass {
    Fair,
    Idle,
    RealTime,
}

/// The progress counters of a cgroup's workers at one moment of a hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProgressSample {
    /// Milliseconds since the run's start.
    pub at_ms: f64,
    /// `iterations[i]` is the counter of `workers[i]` of the cgroup; a
    /// shorter vector means the later workers did not exist yet.
    pub iterations: Vec<u64>,
}

/// One cgroup's part of a run: its workers' reports and what was sampled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CgroupRun {
    pub name: String,
    /// The cpuset the workers ran under: the union of every cpuset the
    /// cgroup had while they were in it; `None` when unrestricted. An empty
    /// set inherits the parent's CPUs and is not checked.
    pub cpuset: Option<Vec<usize>>,
    /// CPU weight on the cgroup v2 scale (1..10000); `None` = 100. Runs
    /// named `<cgroup>@<batch>` belong to `<cgroup>` for weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u64>,
    pub workers: Vec<WorkerReport>,
    /// `setups[i]` describes `workers[i]`; may be shorter (defaults apply).
    #[serde(default)]
    pub setups: Vec<WorkerSetup>,
    #[serde(default)]
    pub samples: Vec<ProgressSample>,
    /// How long the cgroup's workers ran, in milliseconds.
    pub run_ms: f64,
}

/// Everything the checks look at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CheckInput {
    pub cgroups: Vec<CgroupRun>,
    /// Online CPUs of the machine (the allowed set when nothing restricts).
    pub num_cpus: usize,
    /// The planned run duration, in milliseconds.
    pub duration_ms: f64,
}
