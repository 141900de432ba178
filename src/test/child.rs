//! Running one case's body in this process: the test binary re-run for
//! exactly that case, inside the guest (started by the guest's init) or on
//! the host (started by the harness for `host = true`). The verdict goes
//! to the file named by [`RESULT_ENV`] as a [`CaseResult`].
//!
//! Running every body in a process of its own keeps the harness's threads
//! out of the process that forks workers (the executor forks from a
//! single-threaded controller), and a crashing body cannot take the
//! harness down.

use std::path::PathBuf;
use std::time::Instant;

use libtest_mimic::Failed;

use super::case::Case;
use super::context::Context;
use super::outcome::{judge, CaseResult, CaseStatus, Outcome};

/// Where the child writes its [`CaseResult`]; set only for a child.
pub const RESULT_ENV: &str = "RUNQ_CASE_RESULT";

/// The result file when this process is a case child.
pub fn result_path() -> Option<PathBuf> {
    std::env::var_os(RESULT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Runs the body and writes the result. The verdict is the file, which
/// the parent reads and tells; this process's libtest line only says
/// whether the file was written, so the parent's failure message does not
/// repeat itself.
pub fn run_case(case: &Case, result_path: &std::path::Path) -> Result<(), Failed> {
    let result = run_body(case);
    std::fs::write(result_path, result.to_json()).map_err(|e| {
        Failed::from(format!(
            "writing the case result to {}: {e}",
            result_path.display()
        ))
    })
}

fn run_body(case: &Case) -> CaseResult {
    let started = Instant::now();
    let elapsed = || started.elapsed().as_secs_f64() * 1000.0;
    let mut context = match Context::new(case.clone()) {
        Ok(context) => context,
        Err(err) => {
            return CaseResult {
                schema_version: super::CASE_RESULT_SCHEMA,
                case: case.name.clone(),
                status: CaseStatus::Failed,
                message: Some(format!("setting up the context: {err:#}")),
                reports: Vec::new(),
                elapsed_ms: elapsed(),
            }
        }
    };
    let body = case.def.body;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut context)))
        .unwrap_or_else(|payload| {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".to_string());
            Outcome::Failed(format!("the body panicked: {text}"))
        });
    judge(
        &case.name,
        outcome,
        context.into_reports(),
        case.def.expect_fail,
        elapsed(),
    )
}
