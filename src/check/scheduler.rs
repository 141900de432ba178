//! The scheduler under test ([`SchedulerReport`]):
//!
//! - `scheduler_attached`: the kernel reported it attached within
//!   `attach_timeout`, it stayed attached for the whole run, and `state`
//!   went back to `disabled` after the stop. On failure the details quote
//!   the kernel's reason and detail lines, its exit and its last output.
//! - `workers_on_scheduler`: every worker seen while it was attached was on
//!   sched_ext (`ext.enabled`; in partial mode only workers with policy
//!   `ext` are expected there).
//! - `scheduler_events`: the `root/events` counters stayed within
//!   `thresholds.max_scx_events` over the run (skipped without bounds).

use super::outcome::CheckOutcome;
use super::thresholds::Thresholds;
use crate::scheduler::{describe_exit, Ejection, SchedulerReport};

pub(super) const ATTACHED: &str = "scheduler_attached";
pub(super) const ON_SCHEDULER: &str = "workers_on_scheduler";
pub(super) const EVENTS: &str = "scheduler_events";

/// Last output lines quoted in a failure's details (the JSON report keeps
/// the whole tail).
const TAIL_LINES: usize = 8;
/// Stack lines of the kernel's report quoted in a failure's details.
const STACK_LINES: usize = 3;

pub(super) fn checks(report: &SchedulerReport, t: &Thresholds) -> Vec<CheckOutcome> {
    vec![attached(report), on_scheduler(report), events(report, t)]
}

/// The scheduler's name for messages: its ops name once known.
fn name(report: &SchedulerReport) -> &str {
    report.ops.as_deref().unwrap_or(&report.binary)
}

fn output_lines(tail: &str) -> Vec<String> {
    let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return vec!["  | (no output)".into()];
    }
    let start = lines.len().saturating_sub(TAIL_LINES);
    // The scheduler's own account of its exit, wherever it is in the tail.
    let exit_lines = lines[..start].iter().filter(|l| l.contains("EXIT:"));
    exit_lines
        .chain(&lines[start..])
        .map(|l| format!("  | {l}"))
        .collect()
}

fn exit_text(report: &SchedulerReport) -> String {
    match &report.exit {
        Some(exit) => describe_exit(exit),
        None => "still running".into(),
    }
}

fn attached(report: &SchedulerReport) -> CheckOutcome {
    if let Some(why) = &report.attach_failure {
        return never_attached(report, why);
    }
    if let Some(ejection) = &report.ejection {
        return ejected(report, ejection);
    }
    if report.state_after_stop != "disabled" {
        let mut out = CheckOutcome::new(
            ATTACHED,
            false,
            format!(
                "{} was stopped ({}) but sched_ext stayed {}",
                name(report),
                exit_text(report),
                report.state_after_stop
            ),
        );
        out.details.extend(output_lines(&report.output_tail));
        return out;
    }
    let attach_ms = report.attach_ms.unwrap_or(0.0);
    let mut out = CheckOutcome::new(
        ATTACHED,
        true,
        format!(
            "{} attached in {attach_ms:.0} ms and stayed attached for the whole run; stopped: {}{}",
            name(report),
            exit_text(report),
            if report.killed {
                " (it ignored SIGINT and was killed)"
            } else {
                ""
            }
        ),
    );
    out.details.push(format!(
        "enable_seq {}, switch_all {}, nr_rejected {}",
        opt(report.enable_seq),
        opt(report.switch_all),
        opt(report.nr_rejected)
    ));
    out.measured(Some(attach_ms), Some(report.attach_timeout_ms))
}

/// The failure of a scheduler that never attached: its command line, its
/// exit and its output.
fn never_attached(report: &SchedulerReport, why: &str) -> CheckOutcome {
    let mut out = CheckOutcome::new(
        ATTACHED,
        false,
        format!(
            "{} never attached: {why}; no worker was started",
            report.binary
        ),
    );
    out.details
        .push(format!("{} {}", report.path, report.args.join(" ")));
    out.details
        .push(format!("it ended with {}; its output:", exit_text(report)));
    out.details.extend(output_lines(&report.output_tail));
    out
}

/// The failure of a scheduler the kernel ejected: the kernel's reason, its
/// messages and the top of its stack, then the scheduler's exit and output.
fn ejected(report: &SchedulerReport, ejection: &Ejection) -> CheckOutcome {
    let reason = if ejection.reason.is_empty() {
        format!(
            "no reason in the kernel log (noticed by {})",
            ejection.noticed_by
        )
    } else {
        ejection.reason.clone()
    };
    let mut out = CheckOutcome::new(
        ATTACHED,
        false,
        format!(
            "{} was ejected {:.0} ms after attaching, {}: {reason}",
            name(report),
            ejection.after_attach_ms,
            ejection.when()
        ),
    );
    let (stack, messages): (Vec<&String>, Vec<&String>) =
        ejection.details.iter().partition(|d| d.starts_with(' '));
    out.details
        .extend(messages.iter().map(|d| format!("kernel: {d}")));
    out.details.extend(
        stack
            .iter()
            .take(STACK_LINES)
            .map(|d| format!("kernel: {d}")),
    );
    out.details.push(format!(
        "it ended with {}; its output:",
        ejection
            .exit
            .as_ref()
            .map_or_else(|| exit_text(report), describe_exit)
    ));
    out.details.extend(output_lines(&ejection.output_tail));
    out.measured(Some(ejection.after_attach_ms), None)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn on_scheduler(report: &SchedulerReport) -> CheckOutcome {
    if report.attach_failure.is_some() {
        return CheckOutcome::skipped(ON_SCHEDULER, "the scheduler never attached");
    }
    let seen: Vec<_> = report.workers.iter().filter(|w| w.seen > 0).collect();
    if seen.is_empty() {
        let why = match (&report.ejection, report.switch_all) {
            (Some(_), _) => "no worker was seen before the ejection",
            (None, Some(false)) => {
                "the scheduler is not in switch-all mode and no worker has policy ext"
            }
            (None, _) => "no worker was seen while it was attached",
        };
        return CheckOutcome::skipped(ON_SCHEDULER, why);
    }
    let offenders: Vec<String> = seen
        .iter()
        .filter(|w| w.on_ext < w.seen)
        .map(|w| {
            format!(
                "{} thread {}: on sched_ext in {} of {} looks",
                w.cgroup, w.tid, w.on_ext, w.seen
            )
        })
        .collect();
    let looks: u32 = seen.iter().map(|w| w.seen).sum();
    let passed = offenders.is_empty();
    let summary = if passed {
        format!(
            "all {} workers seen were on sched_ext ({looks} looks while {} was attached)",
            seen.len(),
            name(report)
        )
    } else {
        format!(
            "{} of {} workers were not always on sched_ext while {} was attached",
            offenders.len(),
            seen.len(),
            name(report)
        )
    };
    let mut out = CheckOutcome::new(ON_SCHEDULER, passed, summary);
    out.details = offenders;
    out
}

fn events(report: &SchedulerReport, t: &Thresholds) -> CheckOutcome {
    if t.max_scx_events.is_empty() {
        return CheckOutcome::skipped(EVENTS, "no max_scx_events bounds set");
    }
    let Some(total) = &report.events.total else {
        return CheckOutcome::new(
            EVENTS,
            false,
            "no event counters over the whole run (the scheduler did not stay attached, or the \
             kernel has no root/events)"
                .into(),
        );
    };
    let mut offenders = Vec::new();
    let mut lines = Vec::new();
    for (counter, bound) in &t.max_scx_events {
        match total.get(counter) {
            None => offenders.push(format!("{counter}: not reported by this kernel")),
            Some(v) if v > bound => offenders.push(format!("{counter}: {v}, above {bound}")),
            Some(v) => lines.push(format!("{counter}: {v} (max {bound})")),
        }
    }
    let passed = offenders.is_empty();
    let summary = format!(
        "{} of {} bounded counters within their bounds",
        lines.len(),
        t.max_scx_events.len()
    );
    let mut out = CheckOutcome::new(EVENTS, passed, summary);
    out.details = offenders;
    out.details.extend(lines);
    out
}
