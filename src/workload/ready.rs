//! Ready markers: how a worker or payload tells the harness "I reached my
//! ready point", and how the harness waits for it.
//!
//! The marker is a file named `runq-ready-<pid>` in the ready directory:
//! `$RUNQ_READY_DIR` when set, else `/tmp`. Writers and readers both take
//! the path from this module, so they cannot drift. A Rust writer calls
//! [`mark_ready`]; an external program writes (or just creates) the file
//! named by `$RUNQ_READY_FILE`, which runq sets for the payloads it spawns,
//! e.g. `touch "${RUNQ_READY_DIR:-/tmp}/runq-ready-$$"` in a shell.
//!
//! The reader ([`wait_ready`]) polls with a bounded, growing interval and
//! tells three outcomes apart: the marker appeared ([`ReadyOutcome::Ready`]),
//! the process ended first ([`ReadyOutcome::DiedBefore`], with its exit
//! status when it is a child of the caller, taken without reaping it so its
//! owner still can), or the time ran out ([`ReadyOutcome::NeverReady`]).
//! A marker is removed once read.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::workload::ExitShape;

/// Environment variable naming the directory that holds the markers.
pub const READY_DIR_ENV: &str = "RUNQ_READY_DIR";
/// Environment variable runq sets for a payload: the full path of the
/// marker it should write.
pub const READY_FILE_ENV: &str = "RUNQ_READY_FILE";
/// The directory used when [`READY_DIR_ENV`] is unset or empty.
pub const DEFAULT_READY_DIR: &str = "/tmp";
/// Marker file names are this prefix followed by the decimal pid.
pub const MARKER_PREFIX: &str = "runq-ready-";

/// The first poll interval of [`wait_ready`]; it doubles up to
/// [`MAX_POLL_INTERVAL`], so a fast process is seen quickly and a slow one
/// costs few wake-ups.
pub const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// The longest pause between two polls.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The ready directory: `$RUNQ_READY_DIR`, or `/tmp`.
pub fn ready_dir() -> PathBuf {
    match std::env::var_os(READY_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_READY_DIR),
    }
}

/// The marker path of `pid` in the ready directory.
pub fn marker_path(pid: i32) -> PathBuf {
    marker_path_in(&ready_dir(), pid)
}

/// The marker path of `pid` in `dir`.
pub fn marker_path_in(dir: &Path, pid: i32) -> PathBuf {
    dir.join(format!("{MARKER_PREFIX}{pid}"))
}

/// The pid a marker file name belongs to (`runq-ready-123` -> 123).
pub fn parse_marker_name(name: &str) -> Option<i32> {
    let digits = name.strip_prefix(MARKER_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|pid| *pid > 0)
}

/// Marks the calling process ready. Returns the marker's path.
pub fn mark_ready() -> io::Result<PathBuf> {
    mark_ready_for(std::process::id() as i32)
}

/// Marks `id` (a pid, or a tid for a thread worker) ready.
///
/// The content goes to a temporary name first and is renamed into place,
/// so a reader never sees a half-written marker.
pub fn mark_ready_for(id: i32) -> io::Result<PathBuf> {
    let dir = ready_dir();
    let path = marker_path_in(&dir, id);
    let staging = dir.join(format!(".{MARKER_PREFIX}{id}.tmp"));
    let written = (|| {
        let mut file = std::fs::File::create(&staging)?;
        writeln!(file, "{id}")?;
        std::fs::rename(&staging, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written.map(|_| path)
}

/// Removes the marker of `pid`, if any (a stale one left by an earlier
/// process with the same pid, or one written after its reader gave up).
pub fn clear_marker(pid: i32) -> io::Result<()> {
    match std::fs::remove_file(marker_path(pid)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What [`wait_ready`] saw.
#[derive(Clone, Debug, PartialEq)]
pub enum ReadyOutcome {
    /// The marker appeared (and was removed).
    Ready,
    /// The process ended without writing the marker. For a child of the
    /// caller this is its exit status (the child is NOT reaped); for any
    /// other process, `ExitShape::WaitFailed` saying the status is unknown.
    DiedBefore(ExitShape),
    /// The process was still alive and unmarked when the time ran out.
    NeverReady,
}

impl ReadyOutcome {
    pub fn is_ready(&self) -> bool {
        matches!(self, ReadyOutcome::Ready)
    }
}

impl std::fmt::Display for ReadyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadyOutcome::Ready => write!(f, "ready"),
            ReadyOutcome::DiedBefore(exit) => write!(f, "died before ready ({exit:?})"),
            ReadyOutcome::NeverReady => write!(f, "never ready"),
        }
    }
}

/// Waits up to `timeout` for `pid`'s marker.
pub fn wait_ready(pid: i32, timeout: Duration) -> ReadyOutcome {
    wait_ready_with(pid, timeout, |_| {})
}

/// Like [`wait_ready`], calling `between(pause)` instead of sleeping between
/// polls, so a single-threaded caller can keep draining the process's output
/// (a payload blocked on a full pipe would never get ready). `between` must
/// return within about `pause`.
pub fn wait_ready_with(
    pid: i32,
    timeout: Duration,
    mut between: impl FnMut(Duration),
) -> ReadyOutcome {
    let path = marker_path(pid);
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_POLL_INTERVAL;
    loop {
        if take_marker(&path) {
            return ReadyOutcome::Ready;
        }
        if let Some(exit) = ended(pid) {
            // It may have marked and then ended between the two checks.
            if take_marker(&path) {
                return ReadyOutcome::Ready;
            }
            return ReadyOutcome::DiedBefore(exit);
        }
        let now = Instant::now();
        if now >= deadline {
            return ReadyOutcome::NeverReady;
        }
        let pause_now = pause.min(deadline - now);
        let before = Instant::now();
        between(pause_now);
        let spent = before.elapsed();
        if spent < pause_now {
            std::thread::sleep(pause_now - spent);
        }
        pause = (pause * 2).min(MAX_POLL_INTERVAL);
    }
}

/// True (and the marker removed) if the marker exists.
fn take_marker(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        // Present but not removable: still a marker; leave it to the owner.
        Err(_) => path.exists(),
    }
}

/// `Some(exit)` if `pid` has ended. Children are probed with `WNOWAIT`, so
/// the status stays available to whoever reaps them.
fn ended(pid: i32) -> Option<ExitShape> {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::Exited(_, code)) => return Some(ExitShape::Exited(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Some(ExitShape::Signaled(signal as i32))
            }
            Ok(_) => return None,
            Err(Errno::EINTR) => continue,
            // Not our child (or already reaped): ask /proc.
            Err(_) => return ended_not_child(pid),
        }
    }
}

fn ended_not_child(pid: i32) -> Option<ExitShape> {
    let unknown = || {
        Some(ExitShape::WaitFailed(format!(
            "pid {pid} ended; it is not a child of this process, so its exit status is unknown"
        )))
    };
    // /proc/<tid> resolves thread ids too.
    match crate::process::stat(pid) {
        Some(stat) if !stat.is_ended() => None,
        _ => unknown(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_round_trip() {
        let path = marker_path_in(Path::new("/x"), 4321);
        assert_eq!(path, Path::new("/x/runq-ready-4321"));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_marker_name(name), Some(4321));
        for bad in [
            "runq-ready-",
            "runq-ready-12a",
            "runq-ready--3",
            "ready-12",
            "runq-ready-0",
        ] {
            assert_eq!(parse_marker_name(bad), None, "{bad}");
        }
    }
}
