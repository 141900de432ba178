//! `cpuset_isolation`: no worker ran on a CPU outside its cgroup's cpuset
//! or its declared affinity.

use std::collections::BTreeSet;

use super::input::CheckInput;
use super::outcome::CheckOutcome;
use super::workers::{declared_cpuset, format_set, unreported_note, Entry};

pub(super) const NAME: &str = "cpuset_isolation";

pub(super) fn check(input: &CheckInput, entries: &[Entry]) -> CheckOutcome {
    let mut offenders = Vec::new();
    let mut notes = Vec::new();
    let mut checked = 0;
    for (ci, cg) in input.cgroups.iter().enumerate() {
        if matches!(&cg.cpuset, Some(c) if c.is_empty()) && !cg.workers.is_empty() {
            notes.push(format!(
                "{}: empty cpuset (inherits its parent's CPUs): not checked",
                cg.name
            ));
        }
        let cpuset = declared_cpuset(cg);
        for e in entries.iter().filter(|e| e.cgroup == ci && e.reported) {
            let affinity: Option<BTreeSet<usize>> = e
                .setup
                .affinity
                .as_ref()
                .filter(|a| !a.is_empty())
                .map(|a| a.iter().copied().collect());
            if cpuset.is_none() && affinity.is_none() {
                continue;
            }
            checked += 1;
            if let Some(c) = &cpuset {
                let outside: BTreeSet<usize> = e.report.cpus_used.difference(c).copied().collect();
                if !outside.is_empty() {
                    offenders.push(format!(
                        "{}: ran on CPUs {} outside cpuset {} of {}",
                        e.label,
                        format_set(&outside),
                        format_set(c),
                        cg.name
                    ));
                }
            }
            if let Some(a) = &affinity {
                let outside: BTreeSet<usize> = e.report.cpus_used.difference(a).copied().collect();
                if !outside.is_empty() {
                    offenders.push(format!(
                        "{}: ran on CPUs {} outside its affinity {}",
                        e.label,
                        format_set(&outside),
                        format_set(a)
                    ));
                }
            }
        }
    }
    if checked == 0 {
        let mut out =
            CheckOutcome::skipped(NAME, "no worker ran under a cpuset or a declared affinity");
        out.details = notes;
        out.details.extend(unreported_note(entries));
        return out;
    }
    let violations = offenders.len();
    let mut out = CheckOutcome::new(
        NAME,
        violations == 0,
        if violations == 0 {
            format!("{checked} restricted workers stayed on their CPUs")
        } else {
            format!("{violations} violation(s) among {checked} restricted workers")
        },
    );
    out.details = offenders;
    out.details.extend(notes);
    out.details.extend(unreported_note(entries));
    out.measured(Some(violations as f64), Some(0.0))
}
