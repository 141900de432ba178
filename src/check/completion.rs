//! `workers_completed`: every worker ran to the end and reported.

use super::outcome::CheckOutcome;
use super::workers::{describe_exit, Entry};
use crate::workload::ExitShape;

pub(super) const NAME: &str = "workers_completed";

pub(super) fn check(entries: &[Entry]) -> CheckOutcome {
    let bad: Vec<&Entry> = entries
        .iter()
        .filter(|e| !(e.report.completed && e.report.exit == ExitShape::Exited(0)))
        .collect();
    if entries.is_empty() {
        return CheckOutcome::new(NAME, false, "no worker ran".into())
            .measured(Some(0.0), Some(1.0));
    }
    let mut out = if bad.is_empty() {
        CheckOutcome::new(
            NAME,
            true,
            format!("all {} workers completed and reported", entries.len()),
        )
    } else {
        CheckOutcome::new(
            NAME,
            false,
            format!(
                "{} of {} workers did not complete",
                bad.len(),
                entries.len()
            ),
        )
    };
    for e in &bad {
        let state = if e.report.completed {
            "reported, then"
        } else {
            "no report:"
        };
        out.details.push(format!(
            "{}: {state} {}",
            e.label,
            describe_exit(&e.report.exit)
        ));
    }
    out.measured(Some(bad.len() as f64), Some(0.0))
}
