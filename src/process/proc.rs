//! What runq reads about processes from /proc, through the `procfs` crate:
//! state, command name and start time (`/proc/PID/stat`), thread group and
//! parent (`/proc/PID/status`), children (`/proc/PID/task/TID/children`),
//! and the pid lists of cgroup files (`cgroup.procs`, `cgroup.threads`).
//!
//! A process that is gone reads as `None` / empty: callers race with exits
//! all the time, and a vanished process is an answer, not an error.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::path::Path;

use anyhow::Context;
use procfs::process::Process;

/// What `/proc/PID/stat` says about a process (or thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command name (at most 15 bytes, as the kernel keeps it).
    pub comm: String,
    /// The state letter: `R`, `S`, `D`, `T`, `t`, `Z`, `X`, ...
    pub state: char,
    /// Start time in clock ticks after boot: with the pid, it tells a reused
    /// pid from the process seen before.
    pub start_ticks: u64,
}

impl Stat {
    /// Ended but not yet reaped (`Z`), or being torn down (`X`).
    pub fn is_ended(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// `/proc/PID/stat` of a process or thread, if it exists.
pub fn stat(pid: i32) -> Option<Stat> {
    let stat = Process::new(pid).ok()?.stat().ok()?;
    Some(Stat {
        comm: stat.comm,
        state: stat.state,
        start_ticks: stat.starttime,
    })
}

/// True if `pid` exists and has not ended: zombies (`Z`) count as dead,
/// because a dead process's unreaped entry must not keep its resources
/// (a run root, a stale marker) alive. When /proc cannot tell (not
/// mounted, no permission), the existence of the pid decides.
pub fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let target = nix::unistd::Pid::from_raw(pid);
    if let Err(nix::errno::Errno::ESRCH) = nix::sys::signal::kill(target, None) {
        return false;
    }
    match Process::new(pid).and_then(|p| p.stat()) {
        Ok(stat) => !matches!(stat.state, 'Z' | 'X' | 'x'),
        Err(procfs::ProcError::NotFound(_)) => false,
        Err(_) => true,
    }
}

/// (thread group id, parent pid) of a task.
pub fn ids(tid: i32) -> Option<(i32, i32)> {
    let status = Process::new(tid).ok()?.status().ok()?;
    Some((status.tgid, status.ppid))
}

/// The thread group (process) a thread belongs to.
pub fn tgid_of(tid: i32) -> anyhow::Result<i32> {
    let status = Process::new(tid)
        .and_then(|p| p.status())
        .with_context(|| format!("thread {tid}: reading /proc/{tid}/status"))?;
    Ok(status.tgid)
}

/// Number of threads of this process.
pub fn thread_count() -> anyhow::Result<usize> {
    let status = Process::myself()
        .and_then(|p| p.status())
        .context("reading /proc/self/status")?;
    Ok(status.threads as usize)
}

/// Children of every thread of `pid`, sorted.
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = Process::new(pid).and_then(|p| p.tasks()) else {
        return Vec::new();
    };
    let mut out: Vec<i32> = tasks
        .flatten()
        .filter_map(|task| task.children().ok())
        .flatten()
        .filter_map(|child| i32::try_from(child).ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Every descendant of `pid` (not `pid` itself), parents before children.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut queue = VecDeque::from([pid]);
    let mut seen = HashSet::from([pid]);
    while let Some(p) = queue.pop_front() {
        for child in children_of(p) {
            if seen.insert(child) {
                out.push(child);
                queue.push_back(child);
            }
        }
    }
    out
}

/// The ids listed in a file of whitespace-separated ids (`cgroup.procs`,
/// `cgroup.threads`), sorted and without duplicates.
pub fn read_pid_list(path: &Path) -> io::Result<Vec<i32>> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse_pid_list(&text))
}

/// The ids in `text` (whitespace-separated), sorted and without duplicates;
/// anything that is not an id is skipped.
pub fn parse_pid_list(text: &str) -> Vec<i32> {
    let mut ids: Vec<i32> = text
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_alive_and_running() {
        let me = std::process::id() as i32;
        let stat = stat(me).expect("own stat");
        assert!(!stat.is_ended());
        assert!(is_alive(me));
        assert_eq!(ids(me).map(|(tgid, _)| tgid), Some(me));
        assert_eq!(tgid_of(me).unwrap(), me);
        assert!(thread_count().unwrap() >= 1);
    }

    #[test]
    fn pid_lists_sort_and_skip_junk() {
        assert_eq!(parse_pid_list("12\n3\n12 x 7\n"), vec![3, 7, 12]);
        assert!(parse_pid_list("").is_empty());
    }

    #[test]
    fn absent_pids_are_dead() {
        assert!(!is_alive(0));
        assert!(!is_alive(-5));
        assert!(stat(i32::MAX).is_none());
        assert!(!is_alive(i32::MAX));
    }
}
