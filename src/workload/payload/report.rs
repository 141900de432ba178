//! [`PayloadReport`]: what a payload did, as the handle observed it. The
//! verdict fields (`passed`, `failures`, `bound_violations`) are filled by
//! the payload check ([`crate::check::judge_payload`]); the handle leaves
//! them empty.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::spec::MetricBound;
use crate::workload::ExitShape;

/// What a payload did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PayloadReport {
    pub name: String,
    /// The program's pid (the root of its tree).
    pub pid: i32,
    /// How it ended; `TimedOut` when runq stopped it at its timeout.
    pub exit: ExitShape,
    pub expected_exit: i32,
    /// runq ended it on request (`stop_and_collect`) before it finished.
    pub stopped: bool,
    /// Its time limit, in milliseconds.
    #[serde(default)]
    pub timeout_ms: u64,
    pub metrics: BTreeMap<String, f64>,
    /// Units of the metrics that declare one.
    pub units: BTreeMap<String, String>,
    /// Declared metrics whose pattern never matched a number.
    pub missing_metrics: Vec<String>,
    /// The bounds its metrics must respect (from the spec).
    #[serde(default)]
    pub bounds: Vec<MetricBound>,
    /// Metrics outside their bounds (filled by the check).
    pub bound_violations: Vec<String>,
    /// Processes of the tree seen outside one of the payload's cgroups.
    pub escaped: Vec<(i32, String)>,
    /// The spec asks for a ready marker.
    #[serde(default)]
    pub ready_required: bool,
    /// The ready marker outcome, when the spec asks for one.
    pub ready: Option<String>,
    /// Every reason it failed; empty when it passed (filled by the check).
    pub failures: Vec<String>,
    /// Filled by the check.
    pub passed: bool,
    /// The end of stdout and stderr (together).
    pub stdout_tail: String,
    /// Every process of the tree seen (pid, command name), root first.
    pub tree: Vec<(i32, String)>,
    /// The tree came from the ptrace engine (complete) rather than sampling.
    pub traced: bool,
    pub wall_ms: f64,
}
