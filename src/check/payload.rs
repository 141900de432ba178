//! `payload:<name>`: one check per external program run beside the
//! workers, judged from the facts of its [`PayloadReport`]: its exit
//! against the expected one (a stop at the end of the run, by SIGTERM or
//! SIGKILL, is expected), its timeout, metrics found, bounds, ready marker
//! and cgroup membership. [`judge`] also fills the report's verdict fields
//! for the record.

use super::outcome::CheckOutcome;
use crate::workload::payload::PayloadReport;
use crate::workload::ready::ReadyOutcome;
use crate::workload::ExitShape;

/// One outcome per payload, in the order they were declared.
pub(super) fn checks(payloads: &[PayloadReport]) -> Vec<CheckOutcome> {
    payloads.iter().map(check).collect()
}

/// What the payload check says about one payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PayloadVerdict {
    /// Every reason it failed; empty when it passed.
    pub failures: Vec<String>,
    /// Metrics outside their bounds (also among `failures`).
    pub bound_violations: Vec<String>,
}

impl PayloadVerdict {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Judges a payload from its facts.
pub fn verdict(payload: &PayloadReport) -> PayloadVerdict {
    let mut failures = Vec::new();
    if payload.exit == ExitShape::TimedOut {
        failures.push(format!(
            "did not finish within its timeout of {}",
            crate::duration::format(std::time::Duration::from_millis(payload.timeout_ms))
        ));
    }
    let expected = payload.expected_exit;
    let ended_by_stop = payload.stopped
        && matches!(payload.exit, ExitShape::Signaled(s) if s == libc::SIGTERM || s == libc::SIGKILL);
    match &payload.exit {
        ExitShape::Exited(code) if *code == expected => {}
        _ if ended_by_stop => {}
        ExitShape::TimedOut => {}
        other => failures.push(format!("ended with {other:?}, expected exit {expected}")),
    }
    if !payload.missing_metrics.is_empty() {
        failures.push(format!(
            "metrics not found in the output: {}",
            payload.missing_metrics.join(", ")
        ));
    }
    let bound_violations = bound_violations(payload);
    failures.extend(bound_violations.iter().cloned());
    if payload.ready_required {
        let ready = payload.ready.as_deref().unwrap_or("never ready");
        if ready != ReadyOutcome::Ready.to_string() {
            failures.push(format!("ready marker: {ready}"));
        }
    }
    if !payload.escaped.is_empty() {
        failures.push(format!(
            "{} process(es) of the tree ran outside the payload's cgroups",
            payload.escaped.len()
        ));
    }
    PayloadVerdict {
        failures,
        bound_violations,
    }
}

/// The report with its verdict fields (`passed`, `failures`,
/// `bound_violations`) filled from [`verdict`].
pub fn judge(mut payload: PayloadReport) -> PayloadReport {
    let verdict = verdict(&payload);
    payload.passed = verdict.passed();
    payload.failures = verdict.failures;
    payload.bound_violations = verdict.bound_violations;
    payload
}

fn bound_violations(payload: &PayloadReport) -> Vec<String> {
    let mut violations = Vec::new();
    for bound in &payload.bounds {
        let Some(&value) = payload.metrics.get(&bound.metric) else {
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
    violations
}

fn check(payload: &PayloadReport) -> CheckOutcome {
    let verdict = verdict(payload);
    let metrics: Vec<String> = payload
        .metrics
        .iter()
        .map(|(name, value)| match payload.units.get(name) {
            Some(unit) => format!("{name} = {value} {unit}"),
            None => format!("{name} = {value}"),
        })
        .collect();
    let summary = if verdict.passed() {
        format!(
            "{} ended {:?}{}; {} process{} in its cgroup{}",
            payload.name,
            payload.exit,
            if payload.stopped {
                " (stopped at the end of the run)"
            } else {
                ""
            },
            payload.tree.len(),
            if payload.tree.len() == 1 { "" } else { "es" },
            if metrics.is_empty() {
                String::new()
            } else {
                format!("; {}", metrics.join(", "))
            }
        )
    } else {
        format!("{} failed: {}", payload.name, verdict.failures.join("; "))
    };
    CheckOutcome {
        name: format!("payload:{}", payload.name),
        passed: verdict.passed(),
        skipped: false,
        summary,
        details: verdict.failures.iter().cloned().chain(metrics).collect(),
        value: None,
        limit: None,
        host_busy: None,
    }
}
