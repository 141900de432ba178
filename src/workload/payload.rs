//! Payloads: external programs (stress-ng, hackbench, cyclictest, or any
//! binary) run as workloads in runq's cgroups.
//!
//! A [`PayloadSpec`] names the binary, its arguments, the exit code it must
//! end with, the metrics to pull from its output (one regex capture group
//! per metric, applied line by line to stdout and stderr together) and the
//! bounds those metrics must respect.
//!
//! [`PayloadHandle::spawn`] forks a child that joins every given cgroup
//! (writes its pid to each `cgroup.procs`) BEFORE it execs, so the program
//! and everything it forks or clones later is born inside them. The child
//! leads its own process group, dies with the controller
//! (PR_SET_PDEATHSIG), and waits at a start rendezvous until the parent has
//! cleared any stale ready marker of its pid. While it runs, the owner calls
//! [`PayloadHandle::tick`] from its event loop (or [`PayloadHandle::wait`]):
//! that drains the output pipe, feeds the metric extractors, and samples the
//! process tree (descendants through `/proc/PID/task/TID/children`), checking
//! that every process of the tree is a member of every cgroup. With
//! `trace = true` the program runs under runq's ptrace engine instead, which
//! records every fork, vfork, clone and exec, so even processes that live
//! for microseconds appear in the tree; the tracing process itself joins the
//! cgroups (so its child is born there) and is not part of the tree.
//!
//! Ending: [`PayloadHandle::wait`] lets the program finish (SIGTERM, then
//! SIGKILL, at its timeout: the exit is then `TimedOut` and the payload
//! fails); [`PayloadHandle::stop_and_collect`] stops it now (SIGTERM to the
//! group, SIGKILL after [`STOP_GRACE`]); ending by that SIGTERM or SIGKILL
//! counts as expected. [`PayloadHandle::tick`] enforces the timeout too, so a
//! payload run beside a scenario's workers cannot outstay it unnoticed.
//! Whatever remains of the tree is killed and reaped.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::ready::{self, ReadyOutcome};
use crate::error::RunqError;
use crate::workload::ExitShape;

/// Time a stopped payload gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_millis(1500);
/// Bytes of output kept for the report's `stdout_tail`.
pub const TAIL_BYTES: usize = 4096;
/// A single output line longer than this is cut (the rest is skipped), so a
/// program printing without newlines cannot grow memory without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// How often `tick` walks the process tree.
pub const TREE_SAMPLE_INTERVAL: Duration = Duration::from_millis(25);
/// The default time limit of a payload.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest timeout a payload may have.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The default wait for a ready marker.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How the values a metric's pattern matched become one number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    #[default]
    Last,
    Max,
    Min,
    Sum,
    Mean,
}

/// A number to pull out of the payload's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    pub name: String,
    /// A regex with exactly one capture group holding the number; applied
    /// to each output line (stdout and stderr together).
    pub pattern: String,
    #[serde(default)]
    pub aggregate: Aggregate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// Limits on a metric's final value (inclusive).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricBound {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

/// An external program to run as a workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PayloadToml", into = "PayloadToml")]
pub struct PayloadSpec {
    pub name: String,
    /// A name looked up in PATH, or a path.
    pub binary: String,
    pub args: Vec<String>,
    /// The exit code that counts as success (`None`: 0).
    pub expect_exit: Option<i32>,
    pub metrics: Vec<MetricSpec>,
    pub bounds: Vec<MetricBound>,
    pub timeout: Duration,
    /// The program signals readiness with a ready marker (see
    /// [`super::ready`]); not reaching it fails the payload.
    pub ready_marker: bool,
    /// Run under runq's ptrace engine to record the full fork/exec tree.
    pub trace: bool,
    /// The scenario cgroup it runs in (used by scenarios; the payload module
    /// itself takes cgroup paths).
    pub cgroup: Option<String>,
    /// Real-time budget (µs per `cpu.rt_period_us`) to give the payload's
    /// cgroups before it starts, for programs that use SCHED_FIFO/RR. Only
    /// cgroup v1 with RT group scheduling has the knob (`cpu.rt_runtime_us`,
    /// 0 in every new cgroup); elsewhere it is not needed and ignored.
    pub rt_runtime_us: Option<u64>,
}

/// The file format of a payload: every field optional when `fixture` names
/// a fixture to start from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayloadToml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fixture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    binary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expect_exit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics: Option<Vec<MetricSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bounds: Option<Vec<MetricBound>>,
    /// "30s", "500ms", "2m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ready_marker: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rt_runtime_us: Option<u64>,
}

impl TryFrom<PayloadToml> for PayloadSpec {
    type Error = String;

    fn try_from(raw: PayloadToml) -> std::result::Result<Self, String> {
        let mut spec = match &raw.fixture {
            Some(fixture) => PayloadSpec::fixture(fixture).ok_or_else(|| {
                format!(
                    "unknown payload fixture \"{fixture}\"; use one of: {}",
                    FIXTURES.join(", ")
                )
            })?,
            None => {
                let binary = raw
                    .binary
                    .clone()
                    .ok_or("missing field `binary`: name the program to run, or set `fixture`")?;
                PayloadSpec::new(raw.name.clone().unwrap_or_else(|| binary.clone()), &binary)
            }
        };
        if let Some(name) = raw.name {
            spec.name = name;
        }
        if let Some(binary) = raw.binary {
            spec.binary = binary;
        }
        if let Some(args) = raw.args {
            spec.args = args;
        }
        if raw.expect_exit.is_some() {
            spec.expect_exit = raw.expect_exit;
        }
        if let Some(metrics) = raw.metrics {
            spec.metrics = metrics;
        }
        if let Some(bounds) = raw.bounds {
            spec.bounds = bounds;
        }
        if let Some(timeout) = raw.timeout {
            let parsed = crate::duration::parse(&timeout).map_err(|e| format!("timeout: {e}"))?;
            spec.timeout = crate::duration::check_range(
                "timeout",
                &timeout,
                parsed,
                Duration::ZERO,
                MAX_TIMEOUT,
            )?;
        }
        if let Some(ready_marker) = raw.ready_marker {
            spec.ready_marker = ready_marker;
        }
        if let Some(trace) = raw.trace {
            spec.trace = trace;
        }
        spec.cgroup = raw.cgroup.or(spec.cgroup);
        spec.rt_runtime_us = raw.rt_runtime_us.or(spec.rt_runtime_us);
        Ok(spec)
    }
}

impl From<PayloadSpec> for PayloadToml {
    fn from(spec: PayloadSpec) -> Self {
        PayloadToml {
            fixture: None,
            name: Some(spec.name),
            binary: Some(spec.binary),
            args: Some(spec.args),
            expect_exit: spec.expect_exit,
            metrics: Some(spec.metrics),
            bounds: Some(spec.bounds),
            timeout: Some(format!("{}ms", spec.timeout.as_millis())),
            ready_marker: Some(spec.ready_marker),
            trace: Some(spec.trace),
            cgroup: spec.cgroup,
            rt_runtime_us: spec.rt_runtime_us,
        }
    }
}

/// The `cgroup.procs` files of cgroup `rel` in every hierarchy a backend
/// uses: what [`PayloadHandle::spawn`] takes.
pub fn cgroup_procs_files(backend: &dyn crate::cgroup::CgroupBackend, rel: &str) -> Vec<PathBuf> {
    backend
        .paths(rel)
        .into_iter()
        .map(|dir| dir.join("cgroup.procs"))
        .collect()
}

/// The `[[payloads]]` tables of a TOML document (other top-level keys, such
/// as a scenario's, are left alone). Errors are bad input naming the field.
pub fn payloads_from_toml(text: &str) -> Result<Vec<PayloadSpec>> {
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        payloads: Vec<PayloadSpec>,
    }
    let file: File = toml::from_str(text)
        .map_err(|e| RunqError::bad_input(format!("payloads: {}", e.to_string().trim_end())))?;
    Ok(file.payloads)
}

/// The fixtures [`PayloadSpec::fixture`] knows.
pub const FIXTURES: &[&str] = &["stress-ng-cpu", "hackbench", "cyclictest"];

impl PayloadSpec {
    /// A payload running `binary` with no arguments, metrics or bounds.
    pub fn new(name: impl Into<String>, binary: &str) -> PayloadSpec {
        PayloadSpec {
            name: name.into(),
            binary: binary.to_string(),
            args: Vec::new(),
            expect_exit: None,
            metrics: Vec::new(),
            bounds: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            ready_marker: false,
            trace: false,
            cgroup: None,
            rt_runtime_us: None,
        }
    }

    /// A canned payload: "stress-ng-cpu" (2 cpu stressors for 2 s, bogo
    /// ops/s), "hackbench" (4 groups of 5 sender/receiver process pairs,
    /// Time:), "cyclictest" (2 threads for 2 s at 1 ms, max and mean
    /// latency from the `-q` summary). Bounds are generous: they catch a
    /// payload that did not run or a scheduler that stalled it for a long
    /// time, on a busy 2-CPU machine.
    pub fn fixture(name: &str) -> Option<PayloadSpec> {
        let metric = |name: &str, pattern: &str, aggregate, unit: &str| MetricSpec {
            name: name.to_string(),
            pattern: pattern.to_string(),
            aggregate,
            unit: Some(unit.to_string()),
        };
        let bound = |metric: &str, min: Option<f64>, max: Option<f64>| MetricBound {
            metric: metric.to_string(),
            max,
            min,
        };
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut spec = match name {
            "stress-ng-cpu" => PayloadSpec {
                args: args(&["--cpu", "2", "--timeout", "2s", "--metrics-brief"]),
                // "stress-ng: metrc: [123] cpu  2088  1.00  1.00  0.00  2085.22  2087.45":
                // bogo ops, real, usr, sys seconds, then bogo ops/s (real time).
                metrics: vec![
                    metric(
                        "bogo_ops",
                        r"\]\s+cpu\s+(\d+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+",
                        Aggregate::Sum,
                        "bogo ops",
                    ),
                    metric(
                        "bogo_ops_per_s",
                        r"\]\s+cpu\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)",
                        Aggregate::Sum,
                        "bogo ops/s",
                    ),
                ],
                bounds: vec![bound("bogo_ops_per_s", Some(1.0), None)],
                timeout: Duration::from_secs(30),
                ..PayloadSpec::new(name, "stress-ng")
            },
            "hackbench" => PayloadSpec {
                args: args(&["-g", "4", "-f", "5", "-l", "1000"]),
                metrics: vec![metric("time_s", r"^Time:\s+([\d.]+)", Aggregate::Last, "s")],
                bounds: vec![bound("time_s", None, Some(20.0))],
                timeout: Duration::from_secs(30),
                ..PayloadSpec::new(name, "hackbench")
            },
            "cyclictest" => PayloadSpec {
                // SCHED_FIFO 80 measuring threads; cyclictest needs a
                // real-time budget in its cgroup even for its main thread.
                args: args(&["-q", "-D", "2", "-t", "2", "-p", "80", "-i", "1000", "-m"]),
                rt_runtime_us: Some(200_000),
                // "T: 0 ( 3981) P: 0 I:1000 C:    999 Min:   19 Act:   67 Avg:   84 Max:    1074"
                metrics: vec![
                    metric(
                        "max_latency_us",
                        r"^T:.*\sMax:\s+(\d+)",
                        Aggregate::Max,
                        "us",
                    ),
                    metric(
                        "avg_latency_us",
                        r"^T:.*\sAvg:\s+(\d+)",
                        Aggregate::Mean,
                        "us",
                    ),
                    metric("cycles", r"^T:.*\sC:\s+(\d+)", Aggregate::Sum, "cycles"),
                ],
                bounds: vec![
                    bound("max_latency_us", None, Some(200_000.0)),
                    bound("cycles", Some(100.0), None),
                ],
                timeout: Duration::from_secs(30),
                ..PayloadSpec::new(name, "cyclictest")
            },
            _ => return None,
        };
        spec.name = name.to_string();
        Some(spec)
    }

    /// The exit code that counts as success.
    pub fn expected_exit(&self) -> i32 {
        self.expect_exit.unwrap_or(0)
    }

    /// Checks everything before anything is spawned; bad input names the
    /// field and the fix. A binary that is not installed is bad input naming
    /// the Debian package that provides it.
    pub fn validate(&self) -> Result<()> {
        let at = format!("payload \"{}\"", self.name);
        if self.name.trim().is_empty() {
            return Err(RunqError::bad_input(
                "payload name: must not be empty; give each payload a name",
            ));
        }
        resolve_binary(&self.binary).map_err(|e| RunqError::bad_input(format!("{at}: {e}")))?;
        for (i, arg) in self.args.iter().enumerate() {
            if arg.contains('\0') {
                return Err(RunqError::bad_input(format!(
                    "{at}: args[{i}] contains a NUL byte; remove it"
                )));
            }
        }
        if self.timeout.is_zero() {
            return Err(RunqError::bad_input(format!(
                "{at}: timeout must be > 0; write e.g. timeout = \"30s\""
            )));
        }
        let mut names = BTreeSet::new();
        for (i, metric) in self.metrics.iter().enumerate() {
            if metric.name.trim().is_empty() {
                return Err(RunqError::bad_input(format!(
                    "{at}: metrics[{i}].name must not be empty"
                )));
            }
            if !names.insert(metric.name.as_str()) {
                return Err(RunqError::bad_input(format!(
                    "{at}: metrics[{i}].name \"{}\" is declared twice; rename one",
                    metric.name
                )));
            }
            compile_pattern(metric)
                .map_err(|e| RunqError::bad_input(format!("{at}: metrics[{i}].pattern: {e}")))?;
        }
        for (i, bound) in self.bounds.iter().enumerate() {
            if !names.contains(bound.metric.as_str()) {
                return Err(RunqError::bad_input(format!(
                    "{at}: bounds[{i}].metric \"{}\" is not a declared metric; declare it in \
                     metrics (declared: {})",
                    bound.metric,
                    names.iter().copied().collect::<Vec<_>>().join(", ")
                )));
            }
            if bound.min.is_none() && bound.max.is_none() {
                return Err(RunqError::bad_input(format!(
                    "{at}: bounds[{i}] has neither min nor max; set at least one"
                )));
            }
            for (field, value) in [("min", bound.min), ("max", bound.max)] {
                if value.is_some_and(|v| !v.is_finite()) {
                    return Err(RunqError::bad_input(format!(
                        "{at}: bounds[{i}].{field} must be a finite number"
                    )));
                }
            }
            if let (Some(min), Some(max)) = (bound.min, bound.max) {
                if min > max {
                    return Err(RunqError::bad_input(format!(
                        "{at}: bounds[{i}] has min {min} > max {max}; swap them"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Gives each cgroup (the directory of each `cgroup.procs` file) that has
/// `cpu.rt_runtime_us` a budget of `budget` µs, first giving the same to
/// every ancestor that has none (a cgroup's budget cannot exceed its
/// parent's).
fn grant_rt_budget(cgroup_procs: &[PathBuf], budget: u64) -> Result<()> {
    const KNOB: &str = "cpu.rt_runtime_us";
    for procs in cgroup_procs {
        let Some(dir) = procs.parent() else { continue };
        if !dir.join(KNOB).exists() {
            continue;
        }
        let mut chain = Vec::new();
        let mut at = Some(dir);
        while let Some(d) = at {
            let knob = d.join(KNOB);
            let Ok(text) = std::fs::read_to_string(&knob) else {
                break;
            };
            if text.trim().parse::<i64>() != Ok(0) {
                break;
            }
            chain.push(knob);
            at = d.parent();
        }
        for knob in chain.iter().rev() {
            std::fs::write(knob, budget.to_string()).map_err(|e| {
                RunqError::environment(format!(
                    "writing {budget} to {}: {e}; the parent cgroup's real-time budget is \
                     smaller, or siblings use it up: lower rt_runtime_us",
                    knob.display()
                ))
            })?;
        }
    }
    Ok(())
}

/// The Debian package that ships a binary runq knows about.
pub fn debian_package_for(binary: &str) -> Option<&'static str> {
    let base = Path::new(binary).file_name()?.to_str()?;
    Some(match base {
        "stress-ng" => "stress-ng",
        "hackbench" | "cyclictest" | "cyclicdeadline" | "pi_stress" | "signaltest"
        | "deadline_test" => "rt-tests",
        "perf" => "linux-perf",
        "busybox" => "busybox-static",
        "gcc" | "cc" => "gcc",
        _ => return None,
    })
}

/// Finds `binary` in PATH (or checks the path it gives).
pub fn resolve_binary(binary: &str) -> std::result::Result<PathBuf, String> {
    if binary.is_empty() {
        return Err("binary must not be empty; name the program to run".into());
    }
    if binary.contains('\0') {
        return Err("binary contains a NUL byte".into());
    }
    let install_hint = || match debian_package_for(binary) {
        Some(package) => {
            format!("install the Debian package {package} (apt-get install {package})")
        }
        None => "install it, or give its absolute path".to_string(),
    };
    if binary.contains('/') {
        let path = PathBuf::from(binary);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "binary \"{binary}\" does not exist or is not executable; {}",
                install_hint()
            ))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(binary);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "binary \"{binary}\" not found in PATH; {}",
        install_hint()
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn compile_pattern(metric: &MetricSpec) -> std::result::Result<Regex, String> {
    let regex = Regex::new(&metric.pattern).map_err(|e| format!("invalid regex: {e}"))?;
    let groups = regex.captures_len() - 1;
    if groups != 1 {
        return Err(format!(
            "\"{}\" has {groups} capture groups; it needs exactly one around the number \
             (use (?:...) for the others)",
            metric.pattern
        ));
    }
    Ok(regex)
}

/// What a payload did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PayloadReport {
    pub name: String,
    /// The program's pid (the root of its tree).
    pub pid: i32,
    pub exit: ExitShape,
    pub expected_exit: i32,
    /// runq ended it on request (`stop_and_collect`) before it finished.
    pub stopped: bool,
    pub metrics: BTreeMap<String, f64>,
    /// Units of the metrics that declare one.
    pub units: BTreeMap<String, String>,
    /// Declared metrics whose pattern never matched a number.
    pub missing_metrics: Vec<String>,
    pub bound_violations: Vec<String>,
    /// Processes of the tree seen outside one of the payload's cgroups.
    pub escaped: Vec<(i32, String)>,
    /// The ready marker outcome, when the spec asks for one.
    pub ready: Option<String>,
    /// Every reason it failed; empty when it passed.
    pub failures: Vec<String>,
    pub passed: bool,
    /// The end of stdout and stderr (together).
    pub stdout_tail: String,
    /// Every process of the tree seen (pid, command name), root first.
    pub tree: Vec<(i32, String)>,
    /// The tree came from the ptrace engine (complete) rather than sampling.
    pub traced: bool,
    pub wall_ms: f64,
}

/// Streaming aggregation of one metric.
#[derive(Debug)]
struct MetricState {
    spec: MetricSpec,
    regex: Regex,
    count: u64,
    value: f64,
    sum: f64,
}

impl MetricState {
    fn feed(&mut self, line: &str) {
        let Some(text) = self.regex.captures(line).and_then(|c| c.get(1)) else {
            return;
        };
        let Ok(x) = text.as_str().trim().replace(',', "").parse::<f64>() else {
            return;
        };
        self.value = match (self.count, self.spec.aggregate) {
            (0, _) | (_, Aggregate::Last) => x,
            (_, Aggregate::Max) => self.value.max(x),
            (_, Aggregate::Min) => self.value.min(x),
            (_, Aggregate::Sum | Aggregate::Mean) => 0.0,
        };
        self.sum += x;
        self.count += 1;
    }

    fn result(&self) -> Option<f64> {
        match (self.count, self.spec.aggregate) {
            (0, _) => None,
            (_, Aggregate::Sum) => Some(self.sum),
            (n, Aggregate::Mean) => Some(self.sum / n as f64),
            _ => Some(self.value),
        }
    }
}

/// A process of the tree as first seen.
#[derive(Clone, Debug)]
struct Seen {
    comm: String,
    /// Start time in clock ticks since boot (/proc/PID/stat field 22), to
    /// tell a reused pid from the process seen.
    start_ticks: Option<u64>,
}

/// A running payload. Dropping it kills and reaps the whole tree.
pub struct PayloadHandle {
    spec: PayloadSpec,
    /// The program (normal mode) or the tracing process (trace mode).
    child: Pid,
    output: Option<OwnedFd>,
    /// Trace mode: the tracing process writes its tree here as JSON.
    trace_channel: Option<OwnedFd>,
    trace_json: Vec<u8>,
    line: Vec<u8>,
    line_truncated: bool,
    tail: VecDeque<u8>,
    metrics: Vec<MetricState>,
    cgroup_procs: Vec<PathBuf>,
    tree: BTreeMap<i32, Seen>,
    /// Order in which tree members were first seen.
    tree_order: Vec<i32>,
    escaped: BTreeMap<i32, String>,
    started: Instant,
    last_tree_sample: Option<Instant>,
    /// Wait status of `child`, once reaped.
    status: Option<WaitStatus>,
    ready: Option<ReadyOutcome>,
    finished: bool,
    /// `tick` found it running past its timeout and stopped it.
    timed_out: bool,
}

impl PayloadHandle {
    /// Validates `spec`, then starts it with its pid already in every
    /// `cgroup.procs` file of `cgroup_procs` (pass the files themselves,
    /// e.g. `/sys/fs/cgroup/cpu/runq-1/cg0/cgroup.procs`).
    pub fn spawn(spec: &PayloadSpec, cgroup_procs: &[PathBuf]) -> Result<PayloadHandle> {
        spec.validate()?;
        let program = resolve_binary(&spec.binary).map_err(RunqError::bad_input)?;
        for procs in cgroup_procs {
            if !procs.exists() {
                return Err(RunqError::environment(format!(
                    "payload \"{}\": cgroup file {} does not exist; create the cgroup first",
                    spec.name,
                    procs.display()
                )));
            }
        }
        let metrics = spec
            .metrics
            .iter()
            .map(|m| {
                Ok(MetricState {
                    spec: m.clone(),
                    regex: compile_pattern(m).map_err(RunqError::bad_input)?,
                    count: 0,
                    value: 0.0,
                    sum: 0.0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(budget) = spec.rt_runtime_us {
            grant_rt_budget(cgroup_procs, budget)
                .with_context(|| format!("payload \"{}\": real-time budget", spec.name))?;
        }
        let started = Instant::now();
        let launched = launch(spec, &program, cgroup_procs)?;
        Ok(PayloadHandle {
            spec: spec.clone(),
            child: launched.pid,
            output: Some(launched.output),
            trace_channel: launched.trace_channel,
            trace_json: Vec::new(),
            line: Vec::new(),
            line_truncated: false,
            tail: VecDeque::with_capacity(TAIL_BYTES),
            metrics,
            cgroup_procs: cgroup_procs.to_vec(),
            tree: BTreeMap::new(),
            tree_order: Vec::new(),
            escaped: BTreeMap::new(),
            started,
            last_tree_sample: None,
            status: None,
            ready: None,
            finished: false,
            timed_out: false,
        })
    }

    /// The pid runq forked: the program itself, or in trace mode the
    /// tracing process (whose only child is the program).
    pub fn pid(&self) -> i32 {
        self.child.as_raw()
    }

    /// The program's pid: in trace mode the tracer's child, once it exists.
    pub fn program_pid(&self) -> Option<i32> {
        if !self.spec.trace {
            return Some(self.pid());
        }
        children_of(self.pid()).into_iter().next()
    }

    pub fn spec(&self) -> &PayloadSpec {
        &self.spec
    }

    /// True once the program ended (it has been reaped).
    pub fn has_exited(&self) -> bool {
        self.status.is_some()
    }

    /// One round of the event loop, waiting at most `max_wait` for output:
    /// drains the output, samples the tree, reaps the program if it ended.
    /// Returns true once it has ended. Call it every few tens of ms while the
    /// payload runs, or the program blocks when its output pipe is full.
    pub fn tick(&mut self, max_wait: Duration) -> bool {
        self.pump_output(max_wait);
        self.sample_tree(false);
        self.reap_if_ended();
        if self.status.is_none() && !self.timed_out && self.started.elapsed() >= self.spec.timeout {
            self.timed_out = true;
            self.terminate();
        }
        self.status.is_some()
    }

    /// Waits (draining output) up to `timeout` for the program's ready
    /// marker; the outcome goes into the report.
    pub fn wait_ready(&mut self, timeout: Duration) -> ReadyOutcome {
        let Some(pid) = self.wait_program_pid(timeout) else {
            let outcome = match self.status_as_exit() {
                Some(exit) => ReadyOutcome::DiedBefore(exit),
                None => ReadyOutcome::NeverReady,
            };
            self.ready = Some(outcome.clone());
            return outcome;
        };
        let outcome = {
            let this = &mut *self;
            ready::wait_ready_with(pid, timeout, |pause| {
                this.pump_output(pause);
                this.sample_tree(false);
            })
        };
        self.ready = Some(outcome.clone());
        outcome
    }

    /// Lets the program finish; at its timeout (counted from spawn) it is
    /// stopped and its exit is `TimedOut`.
    pub fn wait(self) -> PayloadReport {
        let deadline = self.started + self.spec.timeout;
        self.wait_until(deadline)
    }

    /// Like [`wait`](Self::wait) with an explicit deadline.
    pub fn wait_until(mut self, deadline: Instant) -> PayloadReport {
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.tick((deadline - now).min(Duration::from_millis(20))) {
                return self.finish(false, false);
            }
        }
        self.terminate();
        self.finish(false, true)
    }

    /// Stops the program now (SIGTERM to its group, SIGKILL after
    /// [`STOP_GRACE`]) unless it already ended, and reports.
    pub fn stop_and_collect(mut self) -> PayloadReport {
        self.tick(Duration::ZERO);
        if self.status.is_some() {
            return self.finish(false, false);
        }
        self.terminate();
        self.finish(true, false)
    }

    fn status_as_exit(&self) -> Option<ExitShape> {
        match self.status? {
            WaitStatus::Exited(_, code) => Some(ExitShape::Exited(code)),
            WaitStatus::Signaled(_, signal, _) => Some(ExitShape::Signaled(signal as i32)),
            _ => None,
        }
    }

    /// The program's pid, waiting (trace mode) until the tracer forked it.
    fn wait_program_pid(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = self.program_pid() {
                return Some(pid);
            }
            if self.tick(Duration::from_millis(5)) || Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// SIGTERM, a grace period, then SIGKILL; reaps the program.
    fn terminate(&mut self) {
        if self.status.is_some() {
            return;
        }
        self.sample_tree(true);
        if self.spec.trace {
            // The tracer forwards signals to the traced processes; signalling
            // the tracer itself would make it kill the tree at once.
            for pid in descendants(self.pid()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        } else {
            let _ = killpg(self.child, Signal::SIGTERM);
        }
        let grace_end = Instant::now() + STOP_GRACE;
        while Instant::now() < grace_end {
            if self.tick(Duration::from_millis(10)) {
                return;
            }
        }
        let _ = killpg(self.child, Signal::SIGKILL);
        self.kill_tree_leftovers();
        loop {
            match waitpid(self.child, None) {
                Err(Errno::EINTR) => continue,
                Ok(status) => {
                    self.status = Some(status);
                    break;
                }
                Err(_) => break,
            }
        }
    }

    fn reap_if_ended(&mut self) {
        if self.status.is_some() {
            return;
        }
        match waitpid(self.child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                self.status = Some(status);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("payload {}: waitpid failed: {e}", self.spec.name);
                self.status = Some(WaitStatus::Exited(self.child, -1));
            }
        }
    }

    /// Reads what the output pipe holds, waiting up to `max_wait` for data.
    fn pump_output(&mut self, max_wait: Duration) {
        let Some(fd) = self.output.as_ref() else {
            if !max_wait.is_zero() {
                std::thread::sleep(max_wait);
            }
            return;
        };
        let mut fds = vec![PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if let Some(channel) = self.trace_channel.as_ref() {
            fds.push(PollFd::new(channel.as_fd(), PollFlags::POLLIN));
        }
        let timeout = PollTimeout::try_from(max_wait.as_millis().min(1000) as u32)
            .unwrap_or(PollTimeout::ZERO);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        drop(fds);
        self.drain_output();
        self.drain_trace_channel();
    }

    /// Reads until the pipe is empty (non-blocking); closes it at EOF.
    fn drain_output(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(fd) = self.output.as_ref() else {
                return;
            };
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.output = None;
                    self.end_line();
                    return;
                }
                Ok(n) => {
                    let chunk = buf[..n].to_vec();
                    self.absorb(&chunk);
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn drain_trace_channel(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(fd) = self.trace_channel.as_ref() else {
                return;
            };
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    self.trace_channel = None;
                    return;
                }
                Ok(n) => self.trace_json.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn absorb(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if self.tail.len() == TAIL_BYTES {
                self.tail.pop_front();
            }
            self.tail.push_back(byte);
            if byte == b'\n' || byte == b'\r' {
                self.end_line();
            } else if self.line.len() < MAX_LINE_BYTES {
                self.line.push(byte);
            } else {
                self.line_truncated = true;
            }
        }
    }

    fn end_line(&mut self) {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            for metric in &mut self.metrics {
                metric.feed(&text);
            }
        }
        self.line.clear();
        self.line_truncated = false;
    }

    /// Walks the tree and checks cgroup membership, at most every
    /// [`TREE_SAMPLE_INTERVAL`] unless `force`.
    fn sample_tree(&mut self, force: bool) {
        if self.status.is_some() {
            return;
        }
        let now = Instant::now();
        if !force
            && self
                .last_tree_sample
                .is_some_and(|t| now.duration_since(t) < TREE_SAMPLE_INTERVAL)
        {
            return;
        }
        self.last_tree_sample = Some(now);
        // Walk first, then read the cgroups: a process in the walk was born
        // (inside the cgroups) before the membership lists were read.
        let mut members = descendants(self.pid());
        if !self.spec.trace {
            members.insert(0, self.pid());
        }
        for &pid in &members {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.tree.entry(pid) {
                if let Some(seen) = read_seen(pid) {
                    slot.insert(seen);
                    self.tree_order.push(pid);
                }
            }
        }
        let mut in_cgroups: Vec<HashSet<i32>> = Vec::new();
        for procs in &self.cgroup_procs {
            in_cgroups.push(read_pids(procs).into_iter().collect());
        }
        for &pid in &members {
            if in_cgroups.iter().all(|set| set.contains(&pid)) || self.escaped.contains_key(&pid) {
                continue;
            }
            // Absent because it just ended (or is a zombie) is not escaping.
            if !is_running(pid) {
                continue;
            }
            let comm = self
                .tree
                .get(&pid)
                .map(|s| s.comm.clone())
                .unwrap_or_default();
            tracing::warn!(
                "payload {}: process {pid} ({comm}) is outside its cgroups",
                self.spec.name
            );
            self.escaped.insert(pid, comm);
        }
    }

    /// SIGKILLs tree members still alive (same start time: not a reused
    /// pid) that left the process group.
    fn kill_tree_leftovers(&mut self) {
        for (&pid, seen) in &self.tree {
            if pid == self.pid() {
                continue;
            }
            if let Some(now) = read_seen(pid) {
                if now.start_ticks == seen.start_ticks && is_running(pid) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }

    /// Waits until no process of the tree is left in the payload's cgroups
    /// (killed stragglers take a moment to exit and be reaped by init), so
    /// the caller can remove the cgroups right away.
    fn await_tree_gone(&self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let left = self.cgroup_procs.iter().any(|procs| {
                read_pids(procs)
                    .iter()
                    .any(|pid| self.tree.contains_key(pid) || *pid == self.pid())
            });
            let group_alive = killpg(self.child, None).is_ok();
            if (!left && !group_alive) || Instant::now() >= end {
                if left || group_alive {
                    tracing::warn!(
                        "payload {}: processes of its tree outlived the SIGKILL",
                        self.spec.name
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn finish(mut self, stopped: bool, timed_out: bool) -> PayloadReport {
        let timed_out = timed_out || self.timed_out;
        // Stragglers that outlived the program (its group, or members that
        // left it) go now, so the output pipe closes.
        let _ = killpg(self.child, Signal::SIGKILL);
        self.kill_tree_leftovers();
        let drain_end = Instant::now() + Duration::from_millis(500);
        while (self.output.is_some() || self.trace_channel.is_some()) && Instant::now() < drain_end
        {
            self.pump_output(Duration::from_millis(20));
        }
        self.output = None;
        self.trace_channel = None;
        self.end_line();
        self.await_tree_gone(Duration::from_secs(2));
        self.finished = true;

        let mut failures = Vec::new();
        let mut traced_tree = None;
        let mut exit = self.status_as_exit().unwrap_or_else(|| {
            ExitShape::WaitFailed("the program's end was not observed".to_string())
        });
        if self.spec.trace {
            match serde_json::from_slice::<TracedTree>(&self.trace_json) {
                Ok(traced) => {
                    if let Some(status) = traced.root_exit {
                        exit = status;
                    } else if let Some(error) = &traced.error {
                        exit = ExitShape::WaitFailed(format!("tracing failed: {error}"));
                    }
                    traced_tree = Some(traced.processes);
                }
                Err(_) => {
                    exit = ExitShape::WaitFailed(format!(
                        "the tracing process ended ({exit:?}) without reporting the tree"
                    ));
                }
            }
        }
        if timed_out {
            failures.push(format!(
                "did not finish within its timeout of {:?}",
                self.spec.timeout
            ));
            exit = ExitShape::TimedOut;
        }
        let expected = self.spec.expected_exit();
        let ended_by_stop = stopped
            && matches!(exit, ExitShape::Signaled(s) if s == libc::SIGTERM || s == libc::SIGKILL);
        match &exit {
            ExitShape::Exited(code) if *code == expected => {}
            _ if ended_by_stop => {}
            ExitShape::TimedOut => {}
            other => failures.push(format!("ended with {other:?}, expected exit {expected}")),
        }

        let mut metrics = BTreeMap::new();
        let mut units = BTreeMap::new();
        let mut missing = Vec::new();
        for state in &self.metrics {
            match state.result() {
                Some(value) => {
                    metrics.insert(state.spec.name.clone(), value);
                }
                None => missing.push(state.spec.name.clone()),
            }
            if let Some(unit) = &state.spec.unit {
                units.insert(state.spec.name.clone(), unit.clone());
            }
        }
        if !missing.is_empty() {
            failures.push(format!(
                "metrics not found in the output: {}",
                missing.join(", ")
            ));
        }
        let mut violations = Vec::new();
        for bound in &self.spec.bounds {
            let Some(&value) = metrics.get(&bound.metric) else {
                continue;
            };
            if let Some(max) = bound.max {
                if value > max {
                    violations.push(format!("{} = {value} exceeds max {max}", bound.metric));
                }
            }
            if let Some(min) = bound.min {
                if value < min {
                    violations.push(format!("{} = {value} is below min {min}", bound.metric));
                }
            }
        }
        failures.extend(violations.iter().cloned());
        if self.spec.ready_marker {
            let outcome = self.ready.clone().unwrap_or_else(|| {
                // Never waited for: was it marked by the end?
                match self.program_pid_for_marker() {
                    Some(pid) if ready::marker_path(pid).exists() => ReadyOutcome::Ready,
                    _ => ReadyOutcome::NeverReady,
                }
            });
            if !outcome.is_ready() {
                failures.push(format!("ready marker: {outcome}"));
            }
            self.ready = Some(outcome);
        }
        if let Some(pid) = self.program_pid_for_marker() {
            let _ = ready::clear_marker(pid);
        }
        let escaped: Vec<(i32, String)> = self.escaped.clone().into_iter().collect();
        if !escaped.is_empty() {
            failures.push(format!(
                "{} process(es) of the tree ran outside the payload's cgroups",
                escaped.len()
            ));
        }
        let tree = match traced_tree {
            Some(processes) => processes,
            None => self
                .tree_order
                .iter()
                .map(|pid| (*pid, self.tree[pid].comm.clone()))
                .collect(),
        };
        let root = if self.spec.trace {
            tree.first().map_or(-1, |(pid, _)| *pid)
        } else {
            self.pid()
        };
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        PayloadReport {
            name: self.spec.name.clone(),
            pid: root,
            exit,
            expected_exit: expected,
            stopped,
            metrics,
            units,
            missing_metrics: missing,
            bound_violations: violations,
            escaped,
            ready: self.ready.as_ref().map(|r| r.to_string()),
            passed: failures.is_empty(),
            failures,
            stdout_tail: String::from_utf8_lossy(&tail).into_owned(),
            tree,
            traced: self.spec.trace,
            wall_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    fn program_pid_for_marker(&self) -> Option<i32> {
        if self.spec.trace {
            self.tree_order.first().copied()
        } else {
            Some(self.pid())
        }
    }
}

impl Drop for PayloadHandle {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let _ = killpg(self.child, Signal::SIGKILL);
        self.kill_tree_leftovers();
        if self.status.is_none() {
            while let Err(Errno::EINTR) = waitpid(self.child, None) {}
        }
        if let Some(pid) = self.program_pid_for_marker() {
            let _ = ready::clear_marker(pid);
        }
    }
}

/// The tree a tracing process reports.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TracedTree {
    processes: Vec<(i32, String)>,
    root_exit: Option<ExitShape>,
    error: Option<String>,
}

use crate::process::proc::{children_of, descendants, is_alive as is_running};

fn read_seen(pid: i32) -> Option<Seen> {
    let stat = crate::process::stat(pid)?;
    Some(Seen {
        comm: stat.comm,
        start_ticks: Some(stat.start_ticks),
    })
}

fn read_pids(path: &Path) -> Vec<i32> {
    crate::process::read_pid_list(path).unwrap_or_default()
}

struct Launched {
    pid: Pid,
    output: OwnedFd,
    trace_channel: Option<OwnedFd>,
}

/// Why the child could not start, as it reports it over the error pipe.
const STAGE_CGROUP: i32 = 1;
const STAGE_EXEC: i32 = 2;
const STAGE_SETUP: i32 = 3;

/// Forks the child, lets it join the cgroups and exec, and returns once the
/// exec succeeded (or the error it reported).
fn launch(spec: &PayloadSpec, program: &Path, cgroup_procs: &[PathBuf]) -> Result<Launched> {
    // Everything the child touches is prepared before the fork: after it the
    // child only makes async-signal-safe calls.
    let c_program = CString::new(program.as_os_str().as_bytes())?;
    let mut argv = vec![CString::new(spec.binary.as_bytes())?];
    for arg in &spec.args {
        argv.push(CString::new(arg.as_bytes())?);
    }
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| {
            k != OsStr::new(ready::READY_DIR_ENV) && k != OsStr::new(ready::READY_FILE_ENV)
        })
        .filter_map(|(k, v)| {
            let mut entry = k.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            CString::new(entry).ok()
        })
        .collect();
    let dir = ready::ready_dir();
    let mut dir_entry = format!("{}=", ready::READY_DIR_ENV).into_bytes();
    dir_entry.extend_from_slice(dir.as_os_str().as_bytes());
    env.push(CString::new(dir_entry)?);
    // RUNQ_READY_FILE=<dir>/runq-ready-<pid>: the child writes its pid's
    // digits into the reserved space (the name must match marker_path_in).
    let mut file_entry = format!("{}=", ready::READY_FILE_ENV).into_bytes();
    file_entry.extend_from_slice(dir.join(ready::MARKER_PREFIX).as_os_str().as_bytes());
    let digits_at = file_entry.len();
    file_entry.extend_from_slice(&[0u8; 12]);
    let cgroup_files: Vec<CString> = cgroup_procs
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<std::result::Result<_, _>>()?;

    let (out_read, out_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("output pipe")?;
    let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("error pipe")?;
    let (go_read, go_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("start pipe")?;
    let (trace_read, trace_write) = if spec.trace {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("trace pipe")?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    // The parent reads without blocking (its event loop polls); the child's
    // write end stays blocking.
    set_nonblocking(&out_read)?;
    if let Some(read) = &trace_read {
        set_nonblocking(read)?;
    }
    let dev_null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context("opening /dev/null")?;
    let parent = nix::unistd::getpid();
    let child_setup = ChildSetup {
        parent: parent.as_raw(),
        go_read: go_read.as_raw_fd(),
        err_write: err_write.as_raw_fd(),
        out_write: out_write.as_raw_fd(),
        dev_null,
        cgroup_files: &cgroup_files,
    };

    // SAFETY: the child branch only runs `child_prepare` (async-signal-safe
    // calls on memory prepared above) and then either execs, or (trace mode)
    // runs the tracer, which DESIGN.md allows because the controller is
    // single-threaded when it forks.
    let pid = match unsafe { nix::unistd::fork() }.context("fork failed")? {
        ForkResult::Child => {
            let pid = child_prepare(&child_setup);
            match trace_write {
                None => {
                    let mut env_file = file_entry;
                    write_decimal(&mut env_file[digits_at..], pid as u64);
                    child_exec(&c_program, &argv, &env, &env_file, err_write.as_raw_fd())
                }
                Some(channel) => {
                    drop(trace_read);
                    run_tracer(program, spec, channel, &dir, err_write.as_raw_fd())
                }
            }
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_read);
    drop(err_write);
    drop(out_write);
    drop(trace_write);
    let _ = nix::unistd::close(dev_null);
    let reap = |why: anyhow::Error| -> anyhow::Error {
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        why
    };
    // Both sides set the group, so it exists whichever runs first.
    let _ = nix::unistd::setpgid(pid, pid);
    if !spec.trace {
        let _ = ready::clear_marker(pid.as_raw());
    }
    if let Err(e) = nix::unistd::write(&go_write, b"g") {
        return Err(reap(anyhow::anyhow!("releasing the payload child: {e}")));
    }
    drop(go_write);
    // EOF (the exec closed the pipe) means the program started.
    let mut report = [0u8; 12];
    let mut got = 0;
    while got < report.len() {
        match nix::unistd::read(err_read.as_raw_fd(), &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(reap(anyhow::anyhow!("reading the payload's start: {e}"))),
        }
    }
    if got == 0 {
        return Ok(Launched {
            pid,
            output: out_read,
            trace_channel: trace_read,
        });
    }
    let word = |i: usize| i32::from_ne_bytes(report[i * 4..i * 4 + 4].try_into().unwrap());
    let (stage, index, errno) = (word(0), word(1), Errno::from_raw(word(2)));
    let name = &spec.name;
    Err(reap(match stage {
        STAGE_CGROUP => RunqError::environment(format!(
            "payload \"{name}\": could not join cgroup {}: {}; check that the cgroup exists \
             and runq runs as root",
            cgroup_procs
                .get(index as usize)
                .map_or("?".into(), |p| p.display().to_string()),
            errno.desc()
        )),
        STAGE_EXEC => RunqError::bad_input(format!(
            "payload \"{name}\": cannot execute {}: {}",
            program.display(),
            errno.desc()
        )),
        _ => RunqError::environment(format!(
            "payload \"{name}\": setting up the child failed: {}",
            errno.desc()
        )),
    }))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

struct ChildSetup<'a> {
    parent: i32,
    go_read: i32,
    err_write: i32,
    out_write: i32,
    dev_null: i32,
    cgroup_files: &'a [CString],
}

/// Writes `value`'s decimal digits and a NUL into `out` (async-signal-safe:
/// no allocation). Returns the number of digits.
fn write_decimal(out: &mut [u8], mut value: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        value /= 10;
        n += 1;
        if value == 0 {
            break;
        }
    }
    let n = n.min(out.len().saturating_sub(1));
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    out[n] = 0;
    n
}

/// Reports (stage, index, errno) to the parent and exits.
fn child_fail(err_write: i32, stage: i32, index: i32, errno: i32) -> ! {
    let mut record = [0u8; 12];
    record[..4].copy_from_slice(&stage.to_ne_bytes());
    record[4..8].copy_from_slice(&index.to_ne_bytes());
    record[8..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(err_write, record.as_ptr().cast(), record.len());
        libc::_exit(127);
    }
}

/// In the child: own process group, death with the parent, the start
/// rendezvous, cgroup joins, standard streams, signal state. Returns its pid.
fn child_prepare(setup: &ChildSetup) -> i32 {
    // SAFETY: only async-signal-safe calls (setpgid, prctl, getppid, read,
    // open, write, close, dup2, sigprocmask, signal, getpid, _exit) on memory
    // prepared before the fork.
    unsafe {
        libc::setpgid(0, 0);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != setup.parent {
            libc::_exit(126);
        }
        let mut go = 0u8;
        if libc::read(setup.go_read, (&mut go as *mut u8).cast(), 1) != 1 {
            // The parent died or gave up: never run unplaced.
            libc::_exit(126);
        }
        let pid = libc::getpid();
        let mut digits = [0u8; 24];
        let len = write_decimal(&mut digits, pid as u64);
        for (i, file) in setup.cgroup_files.iter().enumerate() {
            let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                child_fail(
                    setup.err_write,
                    STAGE_CGROUP,
                    i as i32,
                    *libc::__errno_location(),
                );
            }
            let written = libc::write(fd, digits.as_ptr().cast(), len);
            let errno = *libc::__errno_location();
            libc::close(fd);
            if written != len as isize {
                child_fail(setup.err_write, STAGE_CGROUP, i as i32, errno);
            }
        }
        if libc::dup2(setup.dev_null, 0) < 0
            || libc::dup2(setup.out_write, 1) < 0
            || libc::dup2(setup.out_write, 2) < 0
        {
            child_fail(setup.err_write, STAGE_SETUP, 0, *libc::__errno_location());
        }
        // A Rust parent ignores SIGPIPE and may block signals; the program
        // gets the defaults.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        pid
    }
}

/// In the child: exec the program (never returns).
fn child_exec(
    program: &CString,
    argv: &[CString],
    env: &[CString],
    env_file: &[u8],
    err_write: i32,
) -> ! {
    // The pointer arrays were not built before the fork because env_file
    // only now holds the pid; building them allocates, which is safe here
    // because glibc's malloc is reset in the child of a fork and the
    // controller is single-threaded when it forks (DESIGN.md).
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(env_file.as_ptr().cast());
    env_ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated arrays of NUL-terminated strings that outlive
    // the call; execve and _exit are async-signal-safe.
    unsafe {
        libc::execve(program.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
        child_fail(err_write, STAGE_EXEC, 0, *libc::__errno_location());
    }
}

/// In the (trace-mode) child: run the program under the ptrace engine and
/// send the tree and the root's end to the parent as JSON.
fn run_tracer(
    program: &Path,
    spec: &PayloadSpec,
    channel: OwnedFd,
    ready_dir: &Path,
    err_write: i32,
) -> ! {
    // The tracer's own start is the "exec succeeded" signal for the parent.
    let _ = nix::unistd::close(err_write);
    std::env::set_var(ready::READY_DIR_ENV, ready_dir);
    // The program's pid is not known here; it can use $RUNQ_READY_DIR/runq-ready-$$.
    std::env::remove_var(ready::READY_FILE_ENV);
    let mut argv = vec![spec.binary.clone()];
    argv.extend(spec.args.iter().cloned());
    let config = crate::trace::TraceConfig {
        program: program.to_path_buf(),
        argv,
        follow_exec: true,
        coverage: None,
        program_lines: None,
        on_interrupt: crate::trace::InterruptAction::Kill,
    };
    let tree = match crate::trace::trace(&config) {
        Ok(outcome) => TracedTree {
            processes: outcome
                .processes
                .iter()
                .map(|p| {
                    let exe = p.current_exe();
                    let name = Path::new(exe)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| exe.to_string());
                    (p.pid, name)
                })
                .collect(),
            root_exit: outcome.root_status.map(|s| match s {
                crate::trace::ExitStatus::Exited { code } => ExitShape::Exited(code),
                crate::trace::ExitStatus::Signaled { number, .. } => ExitShape::Signaled(number),
            }),
            error: None,
        },
        Err(e) => TracedTree {
            error: Some(format!("{e:#}")),
            ..TracedTree::default()
        },
    };
    let json = serde_json::to_vec(&tree).unwrap_or_default();
    let mut written = 0;
    while written < json.len() {
        match nix::unistd::write(&channel, &json[written..]) {
            Ok(n) => written += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    // SAFETY: leave without running the parent's atexit handlers or
    // destructors of state copied from it.
    unsafe { libc::_exit(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_digits_without_allocation() {
        let mut buf = [0xffu8; 8];
        assert_eq!(write_decimal(&mut buf, 40321), 5);
        assert_eq!(&buf[..6], b"40321\0");
        assert_eq!(write_decimal(&mut buf, 0), 1);
        assert_eq!(&buf[..2], b"0\0");
    }

    #[test]
    fn metrics_aggregate_streaming() {
        let state = |aggregate| MetricState {
            regex: Regex::new(r"v=(\d+)").unwrap(),
            spec: MetricSpec {
                name: "v".into(),
                pattern: String::new(),
                aggregate,
                unit: None,
            },
            count: 0,
            value: 0.0,
            sum: 0.0,
        };
        for (aggregate, want) in [
            (Aggregate::Last, 3.0),
            (Aggregate::Max, 9.0),
            (Aggregate::Min, 3.0),
            (Aggregate::Sum, 18.0),
            (Aggregate::Mean, 6.0),
        ] {
            let mut m = state(aggregate);
            assert_eq!(m.result(), None);
            for line in ["v=6", "nothing", "v=9", "v=x", "v=3"] {
                m.feed(line);
            }
            assert_eq!(m.result(), Some(want), "{aggregate:?}");
        }
    }

    #[test]
    fn fixtures_validate_and_survive_a_toml_round_trip() {
        for name in FIXTURES {
            let spec = PayloadSpec::fixture(name).unwrap();
            assert_eq!(&spec.name, name);
            // Binaries may be missing here; the patterns and bounds must hold.
            for metric in &spec.metrics {
                compile_pattern(metric).unwrap();
            }
            #[derive(Serialize, Deserialize)]
            struct File {
                payloads: Vec<PayloadSpec>,
            }
            let text = toml::to_string(&File {
                payloads: vec![spec.clone()],
            })
            .unwrap();
            let back: File = toml::from_str(&text).unwrap();
            assert_eq!(back.payloads[0], spec);
        }
        assert!(PayloadSpec::fixture("nope").is_none());
    }
}
