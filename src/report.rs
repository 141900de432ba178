//! The run report: a versioned JSON document (scenario, topology, kernel
//! release, seed, checks, per-cgroup worker reports, statistics, captures,
//! payloads), its text summary, and a side-by-side comparison of two runs.
//! The report records: the verdicts and statistics come from
//! [`crate::check::evaluate`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::check::{AssertResult, CgroupRun, CheckInput, Evaluation, Thresholds};
pub use crate::check::{CgroupStats, Stats};
use crate::error::{RunqError, EXIT_CHECK_FAILED, EXIT_ENVIRONMENT, EXIT_OK};
use crate::host::{HostContext, HostNoise};
use crate::snapshot::SnapshotSection;
use crate::topology::{format_cpu_list, Topology};
use crate::workload::payload::PayloadReport;

/// Bumped whenever a field changes meaning or disappears; readers refuse
/// other versions.
///
/// Version 2: a worker setup's `policy` is written `fifo:50` (was
/// `fifo(50)`), the spelling of the command line and scenario files.
pub const REPORT_SCHEMA_VERSION: u32 = 2;

/// Largest report file `runq report` reads (reports are well under 10 MiB).
pub const MAX_REPORT_BYTES: u64 = 64 << 20;

/// What a `schema_version` value is, for a message that says what is wrong.
fn describe_version(value: Option<&serde_json::Value>) -> String {
    use serde_json::Value;
    match value {
        None => "is missing".to_string(),
        Some(Value::Null) => "is null, not a number".to_string(),
        Some(Value::String(s)) => format!("is the string {s:?}, not a number"),
        Some(Value::Number(n)) if n.as_u64().is_some() => format!("{n} is not supported"),
        Some(Value::Number(n)) => format!("{n} is not a version (a whole number >= 1)"),
        Some(other) => format!("is {other}, not a number"),
    }
}

/// Makes text read from a file safe to print on a terminal: control
/// characters other than newline and tab (escape sequences among them)
/// are shown as `\u{..}` escapes instead of being sent to the terminal.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most this many detail lines per failed check in the text summary
/// (the JSON report keeps them all).
const MAX_TEXT_DETAILS: usize = 12;

/// The machine's topology as the report records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReportTopology {
    /// Spec string, e.g. `1n1l2c1t`.
    pub spec: String,
    pub num_cpus: usize,
    /// Online CPUs as a list, e.g. `0-1`.
    pub cpus: String,
    pub llcs: Vec<Vec<usize>>,
    pub nodes: Vec<Vec<usize>>,
}

impl ReportTopology {
    pub fn from_topology(topo: &Topology) -> Self {
        ReportTopology {
            spec: topo.spec().to_string(),
            num_cpus: topo.num_cpus(),
            cpus: format_cpu_list(&topo.cpu_ids()),
            llcs: topo.llcs(),
            nodes: topo.nodes(),
        }
    }
}

/// The report of one `runq run`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RunReport {
    pub schema_version: u32,
    pub scenario: String,
    pub topology: ReportTopology,
    pub kernel_release: String,
    pub seed: u64,
    pub duration_ms: f64,
    pub thresholds: Thresholds,
    pub checks: AssertResult,
    /// Per-cgroup worker reports, setups and progress samples.
    pub cgroups: Vec<CgroupRun>,
    pub stats: Stats,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captures: Option<SnapshotSection>,
    /// Results of external programs run beside the workers.
    #[serde(default)]
    pub payloads: Vec<PayloadReport>,
    /// The machine the run ran on.
    #[serde(default)]
    pub host: HostContext,
    /// How busy the run's CPUs were with other work during the holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<HostNoise>,
    /// The sched_ext scheduler under test, when the run had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<crate::scheduler::SchedulerReport>,
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Rejects a `--json` path that cannot be written, before the run starts.
pub fn validate_report_path(path: &Path) -> anyhow::Result<()> {
    crate::output::check_output_path("--json", path)
}

impl RunReport {
    /// Records a finished run and its [`Evaluation`] (from
    /// [`crate::check::evaluate`] over the same `input`).
    pub fn new(
        scenario: &str,
        topology: &Topology,
        seed: u64,
        input: CheckInput,
        thresholds: &Thresholds,
        evaluation: Evaluation,
    ) -> RunReport {
        let Evaluation { checks, stats } = evaluation;
        RunReport {
            schema_version: REPORT_SCHEMA_VERSION,
            scenario: scenario.to_string(),
            topology: ReportTopology::from_topology(topology),
            kernel_release: kernel_release(),
            seed,
            duration_ms: input.duration_ms,
            thresholds: thresholds.clone(),
            checks,
            cgroups: input.cgroups,
            stats,
            captures: None,
            payloads: Vec::new(),
            host: HostContext::collect(None),
            noise: None,
            scheduler: None,
        }
    }

    /// 0 when every check passed, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.checks.passed {
            EXIT_OK
        } else {
            EXIT_CHECK_FAILED
        }
    }

    /// Every check failed while the host was busy (see
    /// [`crate::check::CheckOutcome::host_busy`]): the failure may be the
    /// host's, not the scheduler's.
    pub fn failed_on_busy_host(&self) -> bool {
        !self.checks.passed && self.checks.failed().all(|c| c.host_busy.is_some())
    }

    /// Like [`RunReport::exit_code`], but with `strict_host` a failure
    /// while the host was busy is inconclusive: 3 instead of 1.
    pub fn exit_code_strict(&self, strict_host: bool) -> i32 {
        match self.exit_code() {
            EXIT_CHECK_FAILED if strict_host && self.failed_on_busy_host() => EXIT_ENVIRONMENT,
            code => code,
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// Parses a report, refusing other schema versions.
    pub fn from_json(text: &str) -> anyhow::Result<RunReport> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| RunqError::bad_input(format!("report: not JSON: {e}")))?;
        let version = value.get("schema_version");
        if version.and_then(|v| v.as_u64()) != Some(REPORT_SCHEMA_VERSION as u64) {
            return Err(RunqError::bad_input(format!(
                "report: schema_version {}; this runq reads version {REPORT_SCHEMA_VERSION} (re-run the scenario with this runq)",
                describe_version(version)
            )));
        }
        serde_json::from_value(value)
            .map_err(|e| RunqError::bad_input(format!("report: malformed: {e}")))
    }

    /// Writes the JSON report to `path` (see [`crate::output`]: a regular
    /// file is replaced atomically, a device or FIFO is written into).
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        validate_report_path(path)?;
        crate::output::write_output("--json", path, self.to_json().as_bytes())
    }

    /// Reads a JSON report written by [`RunReport::write_json`], at most
    /// [`MAX_REPORT_BYTES`] of it (a device or a huge file is refused).
    pub fn read_json(path: &Path) -> anyhow::Result<RunReport> {
        use std::io::Read;
        let cannot = |e: std::io::Error| {
            RunqError::bad_input(format!("report {}: cannot read: {e}", path.display()))
        };
        let file = std::fs::File::open(path).map_err(cannot)?;
        let mut bytes = Vec::new();
        file.take(MAX_REPORT_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(cannot)?;
        if bytes.len() as u64 > MAX_REPORT_BYTES {
            return Err(RunqError::bad_input(format!(
                "report {}: larger than the limit of {} MiB, so not a runq report; \
                 pass a file written by `runq run --json`",
                path.display(),
                MAX_REPORT_BYTES >> 20
            )));
        }
        let text = String::from_utf8(bytes).map_err(|_| {
            RunqError::bad_input(format!(
                "report {}: not UTF-8 text, so not a runq report",
                path.display()
            ))
        })?;
        Self::from_json(&text).with_context(|| format!("reading {}", path.display()))
    }

    /// One line per check (failed checks followed by their details), then
    /// the statistics.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {} on {} ({} CPUs: {}), kernel {}, seed {}, {:.2} s",
            self.scenario,
            self.topology.spec,
            self.topology.num_cpus,
            self.topology.cpus,
            self.kernel_release,
            self.seed,
            self.duration_ms / 1e3
        );
        let width = self
            .checks
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0);
        for c in &self.checks.checks {
            let note = match &c.host_busy {
                Some(why) => format!(" (host busy: {why})"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "{} {:width$}  {}{note}",
                c.verdict(),
                c.name,
                c.summary
            );
            if !c.passed {
                for d in c.details.iter().take(MAX_TEXT_DETAILS) {
                    let _ = writeln!(out, "       {d}");
                }
                if c.details.len() > MAX_TEXT_DETAILS {
                    let _ = writeln!(
                        out,
                        "       ... {} more (see the JSON report)",
                        c.details.len() - MAX_TEXT_DETAILS
                    );
                }
            }
        }
        out.push('\n');
        out.push_str(&render_stats(&self.stats));
        if let Some(n) = &self.noise {
            let _ = writeln!(
                out,
                "  host noise    {:.0}% foreign on CPUs {} (peak {:.0}% in a second), workers waited {:.0} ms runnable, load up to {:.1}{}",
                n.foreign_share * 100.0,
                format_cpu_list(&n.cpus),
                n.peak_foreign_share * 100.0,
                n.workers_run_delay_ms,
                n.max_load1,
                if n.busy { ": host busy" } else { "" }
            );
        }
        if let Some(scheduler) = &self.scheduler {
            out.push_str(&scheduler.render_text());
        }
        if let Some(section) = self.captures.as_ref().filter(|s| !s.captures.is_empty()) {
            out.push_str(&render_captures(section));
        }
        let failed = self.checks.failed().count();
        let _ = writeln!(
            out,
            "\nresult: {}",
            if self.checks.passed {
                "PASS".to_string()
            } else {
                format!("FAIL ({failed} check(s) failed)")
            }
        );
        out
    }
}

/// How many captures the run took, its unusual events, and what the
/// scheduler did in each phase according to them.
fn render_captures(section: &SnapshotSection) -> String {
    let mut out = String::new();
    let periodic = section
        .captures
        .iter()
        .filter(|c| crate::snapshot::parse_periodic_tag(&c.tag).is_some())
        .count();
    let _ = writeln!(
        out,
        "\ncaptures: {} ({} periodic, {} tagged), {} event(s)",
        section.captures.len(),
        periodic,
        section.captures.len() - periodic,
        section.events.len()
    );
    let summaries = crate::snapshot::summarize_phases(&section.captures);
    out.push_str(&crate::snapshot::render_phase_summaries(&summaries));
    out
}

fn opt(v: Option<f64>, unit: &str, decimals: usize) -> String {
    match v {
        Some(v) => format!("{v:.decimals$}{unit}"),
        None => "-".to_string(),
    }
}

fn render_stats(s: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "stats");
    let _ = writeln!(out, "  workers       {}", s.workers);
    let _ = writeln!(
        out,
        "  CPUs          {} ({})",
        s.cpus,
        if s.cpus_used.is_empty() {
            "none".to_string()
        } else {
            format_cpu_list(&s.cpus_used)
        }
    );
    let _ = writeln!(out, "  migrations    {}", s.migrations);
    let _ = writeln!(out, "  worst spread  {}", opt(s.worst_spread, "", 2));
    let _ = writeln!(out, "  worst gap     {}", opt(s.worst_gap_ms, " ms", 1));
    let _ = writeln!(out, "  p99 wake      {}", opt(s.p99_wake_us, " us", 1));
    let _ = writeln!(out, "  iterations    {}", s.iterations);
    if !s.per_cgroup.is_empty() {
        let name_w = s
            .per_cgroup
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max("cgroup".len());
        let _ = writeln!(
            out,
            "  {:name_w$}  {:>7}  {:>6}  {:>10}  {:>6}  {:>9}  {:>11}  {:>12}  {:>10}",
            "cgroup",
            "workers",
            "CPUs",
            "migrations",
            "spread",
            "gap ms",
            "p99 wake us",
            "iterations",
            "cpu ms"
        );
        for c in &s.per_cgroup {
            let cpus = if c.cpus_used.is_empty() {
                "-".to_string()
            } else {
                format_cpu_list(&c.cpus_used)
            };
            let _ = writeln!(
                out,
                "  {:name_w$}  {:>7}  {:>6}  {:>10}  {:>6}  {:>9}  {:>11}  {:>12}  {:>10.1}",
                c.name,
                c.workers,
                cpus,
                c.migrations,
                opt(c.spread, "", 2),
                opt(c.worst_gap_ms, "", 1),
                opt(c.p99_wake_us, "", 1),
                c.iterations,
                c.cpu_time_ms
            );
        }
    }
    out
}

/// How `b` differs from `a`: a ratio when both are positive.
fn change(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b >= 0.0 => format!("x{:.2}", b / a),
        (Some(a), Some(b)) => format!("{:+.2}", b - a),
        _ => "-".to_string(),
    }
}

/// Two rows per cgroup of either run: its iterations and CPU time.
fn compare_cgroups(a: &RunReport, b: &RunReport) -> String {
    let mut out = String::new();
    let names: BTreeSet<&str> = a
        .stats
        .per_cgroup
        .iter()
        .chain(&b.stats.per_cgroup)
        .map(|c| c.name.as_str())
        .collect();
    for name in names {
        let ca = a.stats.per_cgroup.iter().find(|c| c.name == name);
        let cb = b.stats.per_cgroup.iter().find(|c| c.name == name);
        let it = |c: Option<&CgroupStats>| c.map(|c| c.iterations as f64);
        let cpu = |c: Option<&CgroupStats>| c.map(|c| c.cpu_time_ms);
        number_row(&mut out, &format!("{name} iterations"), it(ca), it(cb), 0);
        number_row(&mut out, &format!("{name} cpu ms"), cpu(ca), cpu(cb), 1);
    }
    out
}

/// One compared number: A, B (with `decimals`) and how B differs.
fn number_row(out: &mut String, name: &str, a: Option<f64>, b: Option<f64>, decimals: usize) {
    let _ = writeln!(
        out,
        "{name:22}  {:>16}  {:>16}  {:>8}",
        opt(a, "", decimals),
        opt(b, "", decimals),
        change(a, b)
    );
}

/// One row per check of either run: both verdicts, marked when they differ.
fn compare_checks(a: &RunReport, b: &RunReport) -> String {
    let mut out = String::new();
    let mut checks: Vec<&str> = Vec::new();
    for c in a.checks.checks.iter().chain(&b.checks.checks) {
        if !checks.contains(&c.name.as_str()) {
            checks.push(&c.name);
        }
    }
    for name in checks {
        let va = a.checks.get(name).map_or("-", |c| c.verdict());
        let vb = b.checks.get(name).map_or("-", |c| c.verdict());
        let mark = if va != vb { "changed" } else { "" };
        let _ = writeln!(out, "{name:22}  {va:>16}  {vb:>16}  {mark:>8}");
    }
    out
}

/// A side-by-side comparison of two runs' statistics and check verdicts.
pub fn compare(a: &RunReport, b: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:22}  {:>16}  {:>16}  {:>8}",
        "",
        format!("A {}", a.scenario),
        format!("B {}", b.scenario),
        "B/A"
    );
    let _ = writeln!(
        out,
        "{:22}  {:>16}  {:>16}",
        "kernel", a.kernel_release, b.kernel_release
    );
    let rows: Vec<(&str, Option<f64>, Option<f64>, usize)> = vec![
        (
            "workers",
            Some(a.stats.workers as f64),
            Some(b.stats.workers as f64),
            0,
        ),
        (
            "CPUs",
            Some(a.stats.cpus as f64),
            Some(b.stats.cpus as f64),
            0,
        ),
        (
            "migrations",
            Some(a.stats.migrations as f64),
            Some(b.stats.migrations as f64),
            0,
        ),
        (
            "worst spread",
            a.stats.worst_spread,
            b.stats.worst_spread,
            2,
        ),
        (
            "worst gap ms",
            a.stats.worst_gap_ms,
            b.stats.worst_gap_ms,
            1,
        ),
        ("p99 wake us", a.stats.p99_wake_us, b.stats.p99_wake_us, 1),
        (
            "iterations",
            Some(a.stats.iterations as f64),
            Some(b.stats.iterations as f64),
            0,
        ),
    ];
    for (name, va, vb, decimals) in rows {
        number_row(&mut out, name, va, vb, decimals);
    }
    out.push_str(&compare_cgroups(a, b));
    out.push_str(&compare_checks(a, b));
    out
}
