//! Presenting a finished trace: the process tree as text, the JSON report.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::coverage::CoverageSummary;
use super::model::{Event, ExitStatus, Origin, ProcessRecord};
use super::tracer::TraceOutcome;

/// Version of the JSON layout written by `--json`.
pub const JSON_VERSION: u32 = 1;

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct TraceReport<'a> {
    pub version: u32,
    pub command: &'a [String],
    pub started_unix_ms: u128,
    pub duration_s: f64,
    /// The root's end (null if runq detached before it ended).
    pub root_status: Option<ExitStatus>,
    /// The exit code `runq trace` returned.
    pub exit_code: i32,
    pub interrupted_by: Option<&'static str>,
    pub processes: &'a [ProcessRecord],
    pub events: &'a [Event],
    pub coverage: Option<CoverageSummary>,
}

impl<'a> TraceReport<'a> {
    pub fn new(command: &'a [String], outcome: &'a TraceOutcome, exit_code: i32) -> Self {
        TraceReport {
            version: JSON_VERSION,
            command,
            started_unix_ms: outcome.started_unix_ms,
            duration_s: outcome.duration,
            root_status: outcome.root_status,
            exit_code,
            interrupted_by: outcome.interrupted_by.map(|s| s.as_str()),
            processes: &outcome.processes,
            events: &outcome.events,
            coverage: outcome.coverage.as_ref().map(|c| c.summary()),
        }
    }
}

/// The process tree, one line per process, children indented under their
/// creator, with times in seconds since launch.
pub fn process_tree(processes: &[ProcessRecord]) -> String {
    let mut children: HashMap<Option<i32>, Vec<usize>> = HashMap::new();
    let known: std::collections::HashSet<i32> = processes.iter().map(|p| p.pid).collect();
    for (index, process) in processes.iter().enumerate() {
        // A parent we never traced (cannot happen for forks we saw) roots
        // its own subtree.
        let parent = process.parent.filter(|p| known.contains(p));
        children.entry(parent).or_default().push(index);
    }
    let mut out = String::from("process tree (seconds since launch):\n");
    let mut stack: Vec<(usize, String, bool, bool)> = children
        .get(&None)
        .map(|roots| {
            roots
                .iter()
                .rev()
                .map(|&i| (i, String::new(), true, true))
                .collect()
        })
        .unwrap_or_default();
    while let Some((index, prefix, last, top)) = stack.pop() {
        let process = &processes[index];
        let branch = if top {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        let _ = writeln!(out, "{prefix}{branch}{}", describe(process));
        let child_prefix = if top {
            prefix.clone()
        } else if last {
            format!("{prefix}   ")
        } else {
            format!("{prefix}│  ")
        };
        if let Some(kids) = children.get(&Some(process.pid)) {
            // Later processes may reuse a pid: only those started after this
            // one and before it ended are its children.
            let kids: Vec<usize> = kids
                .iter()
                .copied()
                .filter(|&k| {
                    k > index
                        && processes[k].start >= process.start
                        && process.end.is_none_or(|end| processes[k].start <= end)
                })
                .collect();
            for (n, &kid) in kids.iter().enumerate().rev() {
                stack.push((kid, child_prefix.clone(), n == kids.len() - 1, false));
            }
        }
    }
    out
}

fn describe(process: &ProcessRecord) -> String {
    let mut line = format!("{} ", process.pid);
    match process.origin {
        Origin::Root => {}
        Origin::Fork => line.push_str("(fork) "),
        Origin::Vfork => line.push_str("(vfork) "),
        Origin::Clone => line.push_str("(clone) "),
    }
    line.push_str(&shell_words(&process.command));
    for exec in &process.execs {
        let _ = write!(line, " => exec {}", shell_words(&exec.command));
    }
    let end = process
        .end
        .map(|e| format!("{e:.3}"))
        .unwrap_or_else(|| "?".into());
    let _ = write!(line, "  {:.3}-{end}s", process.start);
    match (&process.status, &process.detached) {
        (Some(status), _) => {
            let _ = write!(line, "  {status}");
        }
        (None, Some(reason)) => {
            let _ = write!(line, "  detached: {reason}");
        }
        (None, None) => line.push_str("  (end not seen)"),
    }
    if process.threads_total > 1 {
        let _ = write!(
            line,
            "  threads: {} (max {} at once)",
            process.threads_total, process.threads_max
        );
    }
    if let Some(crash) = &process.crash {
        let _ = write!(
            line,
            "\n      crash: {} at ip {} (fault address {}) in {}",
            crash.signal,
            crash.instruction_pointer,
            crash.fault_address,
            crash.location.as_deref().unwrap_or("unknown code")
        );
    }
    line
}

fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: i32, parent: Option<i32>, origin: Origin, start: f64) -> ProcessRecord {
        ProcessRecord {
            pid,
            parent,
            origin,
            command: vec!["prog".into(), "a b".into()],
            exe: "/bin/prog".into(),
            execs: vec![],
            execd: false,
            start,
            end: Some(start + 1.0),
            status: Some(ExitStatus::Exited { code: 0 }),
            threads_total: 1,
            threads_max: 1,
            threads_live: 0,
            crash: None,
            detached: None,
        }
    }

    #[test]
    fn tree_nests_children_under_parents() {
        let processes = vec![
            record(10, None, Origin::Root, 0.0),
            record(11, Some(10), Origin::Fork, 0.1),
            record(12, Some(11), Origin::Vfork, 0.2),
            record(13, Some(10), Origin::Fork, 0.3),
        ];
        let text = process_tree(&processes);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("10 prog 'a b'"), "{text}");
        assert!(lines[2].starts_with("├─ 11 (fork)"), "{text}");
        assert!(lines[3].starts_with("│  └─ 12 (vfork)"), "{text}");
        assert!(lines[4].starts_with("└─ 13 (fork)"), "{text}");
    }
}
