//! `payload:<name>`: one check per external program run beside the
//! workers, worded from its [`PayloadReport`]: its exit, metrics, bounds,
//! ready marker and cgroup membership.
//!
//! The reasons a payload failed (`PayloadReport::failures`) are still
//! gathered by the payload handle when it finishes; this file turns them
//! into the check the report records.

use super::outcome::CheckOutcome;
use crate::workload::payload::PayloadReport;

/// One outcome per payload, in the order they were declared.
pub(super) fn checks(payloads: &[PayloadReport]) -> Vec<CheckOutcome> {
    payloads.iter().map(check).collect()
}

fn check(payload: &PayloadReport) -> CheckOutcome {
    let metrics: Vec<String> = payload
        .metrics
        .iter()
        .map(|(name, value)| match payload.units.get(name) {
            Some(unit) => format!("{name} = {value} {unit}"),
            None => format!("{name} = {value}"),
        })
        .collect();
    let summary = if payload.passed {
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
        format!("{} failed: {}", payload.name, payload.failures.join("; "))
    };
    CheckOutcome {
        name: format!("payload:{}", payload.name),
        passed: payload.passed,
        skipped: false,
        summary,
        details: payload.failures.iter().cloned().chain(metrics).collect(),
        value: None,
        limit: None,
    }
}
