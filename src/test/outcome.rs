//! What a body returns ([`Outcome`]), the result of one case as it travels
//! from the guest back to the host ([`CaseResult`], versioned JSON), and
//! the verdict, including `expect_fail`.

use serde::{Deserialize, Serialize};

use crate::report::RunReport;

/// Version of the [`CaseResult`] JSON.
pub const CASE_RESULT_SCHEMA: u32 = 1;

/// What a test body ended with.
#[derive(Debug)]
pub enum Outcome {
    /// A report: its checks decide.
    Report(Box<RunReport>),
    /// The body made its own assertions and returned normally.
    Asserted,
    /// The body returned an error (or panicked).
    Failed(String),
}

/// Types a test body may return.
#[diagnostic::on_unimplemented(
    message = "a runq test returns a RunReport, (), or a Result of either",
    label = "returns `{Self}`",
    note = "return `ctx.run(&scenario)` to let the default checks decide, or assert and return Ok(())"
)]
pub trait IntoOutcome {
    fn into_outcome(self) -> Outcome;
}

impl IntoOutcome for RunReport {
    fn into_outcome(self) -> Outcome {
        Outcome::Report(Box::new(self))
    }
}

impl IntoOutcome for () {
    fn into_outcome(self) -> Outcome {
        Outcome::Asserted
    }
}

impl IntoOutcome for Outcome {
    fn into_outcome(self) -> Outcome {
        self
    }
}

impl<T: IntoOutcome, E: Into<anyhow::Error>> IntoOutcome for Result<T, E> {
    fn into_outcome(self) -> Outcome {
        match self {
            Ok(value) => value.into_outcome(),
            Err(err) => Outcome::Failed(format!("{:#}", err.into())),
        }
    }
}

/// How a case ended, as judged in the process that ran its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    Passed,
    Failed,
    /// `expect_fail`: a run completed and its checks (or the body's
    /// assertions on it) failed, as they should.
    ExpectedFailure,
    /// `expect_fail`, but everything passed.
    UnexpectedPass,
}

impl CaseStatus {
    pub fn is_success(self) -> bool {
        matches!(self, CaseStatus::Passed | CaseStatus::ExpectedFailure)
    }
}

/// The result of one case, written by the process that ran the body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseResult {
    pub schema_version: u32,
    pub case: String,
    pub status: CaseStatus,
    /// Why it failed (the body's error or panic, or the failed checks'
    /// names); for an expected failure, what failed.
    pub message: Option<String>,
    /// Every scenario the body ran through the context, in order (the
    /// returned report last when it came from elsewhere).
    pub reports: Vec<RunReport>,
    pub elapsed_ms: f64,
}

impl CaseResult {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a case result always serializes")
    }

    /// Parses a result, refusing other schema versions.
    pub fn from_json(text: &str) -> anyhow::Result<CaseResult> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("case result: not JSON: {e}"))?;
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        if version != Some(CASE_RESULT_SCHEMA as u64) {
            anyhow::bail!(
                "case result: schema_version {version:?}; this harness reads {CASE_RESULT_SCHEMA} \
                 (the test binary and the guest disagree: rebuild)"
            );
        }
        serde_json::from_value(value).map_err(|e| anyhow::anyhow!("case result: malformed: {e}"))
    }
}

/// Judges a body's outcome. `reports` are the runs the context recorded;
/// a returned report not among them is appended.
pub fn judge(
    case: &str,
    outcome: Outcome,
    mut reports: Vec<RunReport>,
    expect_fail: Option<&str>,
    elapsed_ms: f64,
) -> CaseResult {
    let (failed, message) = match outcome {
        Outcome::Report(report) => {
            let failed_checks: Vec<&str> =
                report.checks.failed().map(|c| c.name.as_str()).collect();
            let failed = !report.checks.passed;
            let message = failed.then(|| format!("checks failed: {}", failed_checks.join(", ")));
            if reports.last() != Some(&*report) {
                reports.push(*report);
            }
            (failed, message)
        }
        Outcome::Asserted => (false, None),
        Outcome::Failed(text) => (true, Some(text)),
    };
    let status = match (expect_fail, failed) {
        (None, false) => CaseStatus::Passed,
        (None, true) => CaseStatus::Failed,
        // A failure before any run completed (a missing scheduler, a bad
        // scenario) is not the failure the test expects.
        (Some(_), true) if !reports.is_empty() => CaseStatus::ExpectedFailure,
        (Some(_), true) => CaseStatus::Failed,
        (Some(_), false) => CaseStatus::UnexpectedPass,
    };
    let message = match (status, expect_fail) {
        (CaseStatus::UnexpectedPass, Some(why)) => {
            Some(format!("expected to fail ({why}), but every check passed"))
        }
        (CaseStatus::Failed, Some(why)) => Some(format!(
            "expected to fail ({why}) after a completed run, but no run completed: {}",
            message.unwrap_or_default()
        )),
        _ => message,
    };
    CaseResult {
        schema_version: CASE_RESULT_SCHEMA,
        case: case.to_string(),
        status,
        message,
        reports,
        elapsed_ms,
    }
}
