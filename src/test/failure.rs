//! What the host got back for one case ([`CaseRun`]) and how a failure is
//! told: the body's message, every failed check with its details, the
//! scheduler's ejection if any, the body's output, the guest console's
//! last lines, and the command that reruns exactly this case.

use std::fmt::Write as _;
use std::time::Duration;

use super::case::Case;
use super::outcome::{CaseResult, CaseStatus};

/// Lines of the body's output shown with a failure.
const OUTPUT_TAIL_LINES: usize = 40;

/// One case as seen from the harness.
#[derive(Debug, Clone)]
pub struct CaseRun {
    /// The verdict the case's process wrote; `None` when it never did.
    pub result: Option<CaseResult>,
    /// The case process's stdout and stderr.
    pub output: String,
    /// Why no result came back (boot failure, timeout, crash).
    pub error: Option<String>,
    /// The guest console's last lines (VM cases).
    pub console_tail: Option<String>,
    pub elapsed: Duration,
}

impl CaseRun {
    pub fn passed(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.status.is_success())
    }

    /// A run that produced no result, for errors before the case started.
    pub fn failed_to_start(error: String) -> CaseRun {
        CaseRun {
            result: None,
            output: String::new(),
            error: Some(error),
            console_tail: None,
            elapsed: Duration::ZERO,
        }
    }
}

/// The failure message libtest prints for a case.
pub fn render(case: &Case, run: &CaseRun) -> String {
    let mut out = String::new();
    match &run.result {
        Some(result) => render_result(&mut out, result),
        None => {
            let _ = writeln!(
                out,
                "{} produced no result after {:.1}s: {}",
                case.name,
                run.elapsed.as_secs_f64(),
                run.error.as_deref().unwrap_or("unknown reason")
            );
        }
    }
    let output = tail(&without_libtest_framing(&run.output), OUTPUT_TAIL_LINES);
    if !output.trim().is_empty() {
        let _ = writeln!(out, "--- output of the case (last lines) ---\n{output}");
    }
    if let Some(console) = run.console_tail.as_deref().filter(|c| !c.trim().is_empty()) {
        let _ = writeln!(out, "--- last lines of the guest console ---\n{console}");
    }
    let _ = writeln!(out, "rerun this case: {}", rerun_command(case));
    out
}

fn render_result(out: &mut String, result: &CaseResult) {
    let what = match result.status {
        CaseStatus::Passed | CaseStatus::ExpectedFailure => "passed",
        CaseStatus::Failed => "FAILED",
        CaseStatus::UnexpectedPass => "passed but was expected to fail",
    };
    let _ = writeln!(out, "{} {what}", result.case);
    if let Some(message) = &result.message {
        let _ = writeln!(out, "  {message}");
    }
    for (index, report) in result.reports.iter().enumerate() {
        if let Some(ejection) = report.scheduler.as_ref().and_then(|s| s.ejection.as_ref()) {
            let _ = writeln!(
                out,
                "run {}: the scheduler was ejected {} ({:.0} ms after attaching): {}",
                index + 1,
                ejection.when(),
                ejection.after_attach_ms,
                if ejection.reason.is_empty() {
                    "no reason logged"
                } else {
                    &ejection.reason
                }
            );
            // The failed scheduler_attached check below quotes the kernel's
            // lines; an expected failure has no such check to show them.
            let quoted = report
                .checks
                .get("scheduler_attached")
                .is_some_and(|c| !c.passed);
            if !quoted {
                for line in &ejection.details {
                    let _ = writeln!(out, "       {line}");
                }
            }
        }
        let failed: Vec<_> = report.checks.failed().collect();
        if failed.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "run {} ({}, seed {}): {} failed check(s)",
            index + 1,
            report.scenario,
            report.seed,
            failed.len()
        );
        for check in failed {
            let _ = writeln!(out, "  FAIL {}: {}", check.name, check.summary);
            for detail in &check.details {
                let _ = writeln!(out, "       {detail}");
            }
        }
    }
}

/// The command line that reruns exactly this case, from the package and
/// test target of the running binary.
pub fn rerun_command(case: &Case) -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .map(|stem| match stem.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => stem,
        })
        .unwrap_or_default();
    let release = if exe.components().any(|c| c.as_os_str() == "release") {
        " --release"
    } else {
        ""
    };
    let package = std::env::var("CARGO_PKG_NAME")
        .map(|p| format!(" -p {p}"))
        .unwrap_or_default();
    let kernel = std::env::var("RUNQ_KERNEL")
        .map(|k| format!("RUNQ_KERNEL={k} "))
        .unwrap_or_default();
    format!(
        "{kernel}cargo test{release}{package} --test {target} -- --exact '{}'",
        case.name
    )
}

/// The case process is a libtest run of one trial, whose own `running 1
/// test` / `test result: ok` lines would read as a verdict: the verdict is
/// the host's, above, so they are left out.
fn without_libtest_framing(output: &str) -> String {
    output
        .lines()
        .filter(|line| {
            let line = line.trim();
            !(line.is_empty()
                || line == "."
                || line.starts_with("running 1 test")
                || line.starts_with("test result: "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_framing_is_left_out_of_the_case_output() {
        let output = "\nrunning 1 test\nbody says hi\n.\ntest result: ok. 1 passed; 0 failed\n\n";
        assert_eq!(without_libtest_framing(output), "body says hi");
    }
}
