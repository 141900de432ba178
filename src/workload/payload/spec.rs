//! What a payload is: [`PayloadSpec`] (program, arguments, expected exit,
//! metrics, bounds, timeout, ready marker, tracing, cgroup, RT budget), its
//! TOML form (every field optional when a `fixture` names a starting point),
//! the canned fixtures, and validation before anything is spawned.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::binary::resolve_binary;
use super::metrics::compile_pattern;
use crate::error::RunqError;

/// The default time limit of a payload.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest timeout a payload may have.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

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
    /// [`crate::workload::ready`]); not reaching it fails the payload.
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
            timeout: Some(crate::duration::format(spec.timeout)),
            ready_marker: Some(spec.ready_marker),
            trace: Some(spec.trace),
            cgroup: spec.cgroup,
            rt_runtime_us: spec.rt_runtime_us,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
