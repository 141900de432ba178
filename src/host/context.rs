//! [`HostContext`]: what the machine was when a run ran, recorded in every
//! report so two runs can be told apart by more than their numbers.
//!
//! Everything is read from `/proc` and `/sys`; a source that is missing
//! (no cpufreq in a guest, no SMT control) is recorded as absent, never
//! guessed.

use std::path::Path;

use procfs::Current;
use serde::{Deserialize, Serialize};

/// The scheduler under test as the report names it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SchedulerIdentity {
    /// The sched_ext ops name the kernel reported (`root/ops`).
    pub ops: String,
    /// The binary that was started.
    pub binary: String,
    pub args: Vec<String>,
}

impl SchedulerIdentity {
    /// The identity from a run report as JSON (`scheduler.ops`, `.binary`,
    /// `.args`), `None` when no scheduler ran.
    pub fn from_report(report: &serde_json::Value) -> Option<SchedulerIdentity> {
        let s = report.get("scheduler").filter(|s| s.is_object())?;
        let text = |k: &str| s.get(k).and_then(|v| v.as_str()).map(str::to_string);
        Some(SchedulerIdentity {
            ops: text("ops").unwrap_or_else(|| "not attached".into()),
            binary: text("binary")?,
            args: s
                .get("args")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

impl std::fmt::Display for SchedulerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.ops, self.binary)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        write!(f, ")")
    }
}

/// cpufreq policy of the online CPUs (all policies folded together).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CpuFreq {
    /// Distinct `scaling_governor` values, sorted.
    pub governors: Vec<String>,
    /// Lowest `scaling_min_freq` over the policies, in kHz.
    pub min_khz: u64,
    /// Highest `scaling_max_freq` over the policies, in kHz.
    pub max_khz: u64,
}

impl std::fmt::Display for CpuFreq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}-{} MHz",
            self.governors.join("/"),
            self.min_khz / 1000,
            self.max_khz / 1000
        )
    }
}

/// The machine a run ran on. Fields a reader cannot find in an older
/// report stay at their defaults (`unknown`, absent).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct HostContext {
    pub kernel_release: String,
    /// `/proc/cmdline`.
    pub kernel_cmdline: String,
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu_model: String,
    pub online_cpus: usize,
    /// `/sys/devices/system/cpu/smt/control` (`on`, `off`, `forceoff`,
    /// `notsupported`, `notimplemented`), or `unknown`.
    pub smt: String,
    /// `None` when the machine exposes no cpufreq (most guests).
    pub cpufreq: Option<CpuFreq>,
    /// `MemTotal` of `/proc/meminfo`, in kB.
    pub memory_kb: u64,
    /// The CPU says it runs under a hypervisor.
    pub virtualized: bool,
    /// The scheduler under test; `None` is the kernel's own.
    pub scheduler: Option<SchedulerIdentity>,
    pub runq_version: String,
}

impl Default for HostContext {
    fn default() -> Self {
        HostContext {
            kernel_release: "unknown".into(),
            kernel_cmdline: "unknown".into(),
            cpu_model: "unknown".into(),
            online_cpus: 0,
            smt: "unknown".into(),
            cpufreq: None,
            memory_kb: 0,
            virtualized: false,
            scheduler: None,
            runq_version: "unknown".into(),
        }
    }
}

/// One way two contexts differ that can move the numbers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ContextDifference {
    pub field: String,
    pub a: String,
    pub b: String,
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn cpuinfo_field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

fn read_cpufreq() -> Option<CpuFreq> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpufreq").ok()?;
    let mut governors = Vec::new();
    let mut min_khz = u64::MAX;
    let mut max_khz = 0;
    for entry in dir.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("policy") {
            continue;
        }
        let p = entry.path();
        if let Some(g) = read_trimmed(p.join("scaling_governor")) {
            governors.push(g);
        }
        if let Some(v) = read_trimmed(p.join("scaling_min_freq")).and_then(|s| s.parse().ok()) {
            min_khz = min_khz.min(v);
        }
        if let Some(v) = read_trimmed(p.join("scaling_max_freq")).and_then(|s| s.parse().ok()) {
            max_khz = max_khz.max(v);
        }
    }
    governors.sort();
    governors.dedup();
    (!governors.is_empty() || max_khz > 0).then_some(CpuFreq {
        governors,
        min_khz: if min_khz == u64::MAX { 0 } else { min_khz },
        max_khz,
    })
}

impl HostContext {
    /// Reads the context of this machine now. `scheduler` is what the run
    /// attached, if anything.
    pub fn collect(scheduler: Option<SchedulerIdentity>) -> HostContext {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let memory_kb = procfs::Meminfo::current()
            .map(|m| m.mem_total / 1024)
            .unwrap_or(0);
        HostContext {
            kernel_release: crate::report::kernel_release(),
            kernel_cmdline: read_trimmed("/proc/cmdline").unwrap_or_else(|| "unknown".into()),
            cpu_model: cpuinfo_field(&cpuinfo, "model name")
                .unwrap_or("unknown")
                .to_string(),
            online_cpus: crate::topology::Topology::host()
                .map(|t| t.num_cpus())
                .unwrap_or(0),
            smt: read_trimmed("/sys/devices/system/cpu/smt/control")
                .unwrap_or_else(|| "unknown".into()),
            cpufreq: read_cpufreq(),
            memory_kb,
            virtualized: cpuinfo_field(&cpuinfo, "flags")
                .is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor")),
            scheduler,
            runq_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The scheduler as words: its identity, or the kernel's own.
    pub fn scheduler_label(&self) -> String {
        match &self.scheduler {
            Some(s) => s.to_string(),
            None => "kernel default".to_string(),
        }
    }

    /// Every field, as (name, value) pairs for display.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("kernel", self.kernel_release.clone()),
            ("kernel cmdline", self.kernel_cmdline.clone()),
            ("CPU model", self.cpu_model.clone()),
            ("online CPUs", self.online_cpus.to_string()),
            ("SMT", self.smt.clone()),
            (
                "cpufreq",
                self.cpufreq
                    .as_ref()
                    .map_or("not exposed".to_string(), |c| c.to_string()),
            ),
            ("memory", format!("{} MiB", self.memory_kb / 1024)),
            (
                "virtualized",
                if self.virtualized { "yes" } else { "no" }.to_string(),
            ),
            ("scheduler", self.scheduler_label()),
            ("runq", self.runq_version.clone()),
        ]
    }

    /// The fields that differ between `self` (A) and `other` (B) and can
    /// move the numbers. Memory counts when it differs by more than 5%
    /// (kernels reserve slightly different amounts on one machine).
    pub fn differences(&self, other: &HostContext) -> Vec<ContextDifference> {
        let mut out = Vec::new();
        for ((field, a), (_, b)) in self.fields().into_iter().zip(other.fields()) {
            let differs = if field == "memory" {
                let (x, y) = (self.memory_kb as f64, other.memory_kb as f64);
                (x - y).abs() > 0.05 * x.max(y)
            } else {
                a != b
            };
            if differs {
                out.push(ContextDifference {
                    field: field.to_string(),
                    a,
                    b,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_kernel_and_cpus() {
        let c = HostContext::collect(None);
        assert_ne!(c.kernel_release, "unknown");
        assert!(c.online_cpus >= 1);
        assert!(c.memory_kb > 0);
        assert!(c.differences(&c).is_empty());
    }

    #[test]
    fn the_scheduler_identity_comes_from_the_report() {
        let v = serde_json::json!({"scheduler": {"binary": "scx_bpfland", "ops": "bpfland_1.1",
            "args": ["-k"], "path": "/x"}});
        let id = SchedulerIdentity::from_report(&v).unwrap();
        assert_eq!(id.to_string(), "bpfland_1.1 (scx_bpfland -k)");
        assert!(SchedulerIdentity::from_report(&serde_json::json!({"scheduler": null})).is_none());
        assert!(SchedulerIdentity::from_report(&serde_json::json!({})).is_none());
    }

    #[test]
    fn a_different_scheduler_and_kernel_are_differences() {
        let a = HostContext::collect(None);
        let mut b = a.clone();
        b.kernel_release = "7.0.0-test".into();
        b.scheduler = Some(SchedulerIdentity {
            ops: "bpfland".into(),
            binary: "scx_bpfland".into(),
            args: vec![],
        });
        b.memory_kb = a.memory_kb + a.memory_kb / 100;
        let fields: Vec<String> = a.differences(&b).into_iter().map(|d| d.field).collect();
        assert_eq!(fields, ["kernel", "scheduler"]);
    }
}
