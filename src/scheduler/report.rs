//! What a run records about its scheduler under test: the `scheduler`
//! section of the JSON report (stable field names; the report's
//! `schema_version` covers them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kmsg::ScxLogEvent;
use super::sysfs::EventCounters;
use crate::process::Exit;

/// The scheduler under test, from start to stop.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedulerReport {
    /// As the scenario or command line named it.
    pub binary: String,
    /// The executable that ran.
    pub path: String,
    pub args: Vec<String>,
    /// The name the kernel knows it by (`root/ops`), once attached.
    pub ops: Option<String>,
    /// Milliseconds from its start until the kernel reported it attached.
    pub attach_ms: Option<f64>,
    pub attach_timeout_ms: f64,
    /// Why it never attached (it exited first, or the timeout passed).
    pub attach_failure: Option<String>,
    /// `enable_seq` once attached (attachments since boot).
    pub enable_seq: Option<u64>,
    /// Whether it took every task (`switch_all`), or only SCHED_EXT ones.
    pub switch_all: Option<bool>,
    /// `nr_rejected` at the end of the run.
    pub nr_rejected: Option<u64>,
    /// The kernel took it off while the run went on.
    pub ejection: Option<Ejection>,
    /// How it ended.
    pub exit: Option<Exit>,
    /// runq stopped it (SIGINT) rather than it ending on its own.
    pub stopped_by_runq: bool,
    /// It ignored SIGINT for `stop_timeout` and was killed.
    pub killed: bool,
    /// `state` after it was stopped (`disabled` when all went well).
    pub state_after_stop: String,
    /// The end of its output (stdout and stderr interleaved): the debug
    /// dump of an error exit is there.
    pub output_tail: String,
    /// `root/events` counters.
    pub events: EventsRecord,
    /// The sched_ext lines the kernel logged during the run.
    pub kernel_log: Vec<ScxLogEvent>,
    /// What `/proc/TID/sched` said about each worker while it was attached.
    pub workers: Vec<WorkerOnExt>,
}

/// The moment the kernel ejected the scheduler.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ejection {
    /// Milliseconds since the run's start, as captures count them: the
    /// kernel's own time of the ejection when it logged one, else when runq
    /// noticed. Negative when it came before the run started (a scheduler
    /// that starves runq itself).
    pub at_ms: f64,
    /// Milliseconds it stayed attached: between the kernel's enabled and
    /// disabled log lines when both were logged, else until runq noticed.
    pub after_attach_ms: f64,
    /// The step that was running (1-based, as captures count them).
    pub step: usize,
    /// How runq noticed: `state` (left enabled), `exit` (the process ended)
    /// or `kernel_log` (a disable line).
    pub noticed_by: String,
    /// The kernel's reason (`runnable task stall`, `disabled by sysrq-S`,
    /// ...), from its log; empty when it logged none.
    pub reason: String,
    /// The kernel's detail lines (exit message, stack).
    pub details: Vec<String>,
    /// The scheduler's exit and output tail.
    pub exit: Option<Exit>,
    pub output_tail: String,
}

/// `root/events` at the start and end of the run, per step, and at each
/// capture.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsRecord {
    pub start: Option<EventCounters>,
    pub end: Option<EventCounters>,
    /// `end - start` over the run (while it stayed attached).
    pub total: Option<EventCounters>,
    /// What each step added.
    pub steps: Vec<StepEvents>,
    pub captures: Vec<CaptureEvents>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepEvents {
    /// 1-based.
    pub step: usize,
    pub delta: EventCounters,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureEvents {
    pub tag: String,
    pub step: usize,
    pub at_ms: f64,
    pub counters: EventCounters,
}

/// Observations of one worker: how often it was seen while the scheduler
/// was attached, and how often it was on sched_ext then.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerOnExt {
    /// The batch label (the cgroup, or `cgroup@stepN` for spawned works).
    pub cgroup: String,
    pub tid: i32,
    pub seen: u32,
    pub on_ext: u32,
}

impl Ejection {
    /// When it happened, in the run's terms: `1520 ms into the run, in step
    /// 2`, or `before the run started` (a scheduler that starves every
    /// task, runq included, is ejected before runq gets to start the run).
    pub fn when(&self) -> String {
        if self.at_ms < 0.0 {
            format!("{:.0} ms before the run started", -self.at_ms)
        } else {
            format!("{:.0} ms into the run, in step {}", self.at_ms, self.step)
        }
    }
}

/// Counters shown per line in text (the JSON report has them all).
const TEXT_COUNTERS: usize = 6;

/// `NAME +N` for the non-zero counters of `delta`, largest first.
fn nonzero(delta: &BTreeMap<String, u64>) -> String {
    let mut changed: Vec<(&String, &u64)> = delta.iter().filter(|(_, v)| **v > 0).collect();
    changed.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = changed
        .iter()
        .take(TEXT_COUNTERS)
        .map(|(k, v)| format!("{} +{v}", k.trim_start_matches("SCX_EV_")))
        .collect();
    match (shown.is_empty(), changed.len() > TEXT_COUNTERS) {
        (true, _) => "no change".into(),
        (false, true) => format!(
            "{} (+{} more)",
            shown.join(", "),
            changed.len() - TEXT_COUNTERS
        ),
        (false, false) => shown.join(", "),
    }
}

impl SchedulerReport {
    /// The scheduler's section of `runq run`'s summary.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = write!(out, "\nscheduler {}", self.binary);
        match (&self.ops, self.attach_ms) {
            (Some(ops), Some(ms)) => {
                let _ = writeln!(
                    out,
                    ": ops {ops}, attached in {ms:.0} ms, enable_seq {}, {}",
                    self.enable_seq
                        .map_or_else(|| "-".into(), |v| v.to_string()),
                    match self.switch_all {
                        Some(false) => "partial (SCHED_EXT tasks only)",
                        _ => "switch_all",
                    }
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    ": never attached ({})",
                    self.attach_failure.as_deref().unwrap_or("unknown")
                );
            }
        }
        if let Some(e) = &self.ejection {
            let _ = writeln!(
                out,
                "  ejected {} ({:.0} ms after attaching): {}",
                e.when(),
                e.after_attach_ms,
                if e.reason.is_empty() {
                    "no reason logged"
                } else {
                    &e.reason
                }
            );
        }
        let _ = writeln!(
            out,
            "  stopped: {}{}; state {}",
            self.exit
                .as_ref()
                .map_or_else(|| "-".into(), super::lifecycle::describe_exit),
            if self.killed {
                " (killed after SIGINT)"
            } else {
                ""
            },
            self.state_after_stop
        );
        if let Some(total) = &self.events.total {
            let _ = writeln!(out, "  events over the run: {}", nonzero(total));
        }
        for step in &self.events.steps {
            let _ = writeln!(
                out,
                "  events in step {}: {}",
                step.step,
                nonzero(&step.delta)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ejection_before_the_run_started_says_so() {
        let during = Ejection {
            at_ms: 1520.4,
            step: 2,
            ..Ejection::default()
        };
        assert_eq!(during.when(), "1520 ms into the run, in step 2");
        let before = Ejection {
            at_ms: -48.0,
            step: 1,
            ..Ejection::default()
        };
        assert_eq!(before.when(), "48 ms before the run started");
    }
}
