//! The fork wrapper every timeline goes through.
//!
//! Forking a multi-threaded process copies only the calling thread; locks
//! held by the others stay locked forever in the child. So the wrapper reads
//! `Threads:` from /proc/self/status and refuses with a clear error unless
//! the process is single-threaded. The child asks for SIGKILL when its
//! parent dies and re-checks the parent right after, so no timeline outlives
//! a killed controller. Children leave with `_exit` (no atexit handlers, no
//! flushing of buffers they share with the parent).

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::{getpid, getppid, Pid};

use crate::error::RunqError;

/// Which side of a fork this process is on.
pub enum Forked {
    /// The new process.
    Child,
    /// The original process; the child's pid.
    Parent(Pid),
}

/// Number of threads of this process, from /proc/self/status.
pub fn thread_count() -> anyhow::Result<usize> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .context("no Threads: line in /proc/self/status")
}

/// Refuse to fork when other threads exist.
pub fn ensure_single_threaded() -> anyhow::Result<()> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(RunqError::environment(format!(
            "exploration forks timelines, which is only safe in a single-threaded \
             process, but this process has {threads} threads; run the exploration \
             from the main thread before starting any other thread (for tests: a \
             `harness = false` test binary)"
        )));
    }
    Ok(())
}

/// Fork one timeline. Refuses when the process has other threads.
pub fn fork_timeline() -> anyhow::Result<Forked> {
    ensure_single_threaded()?;
    let parent = getpid();
    // SAFETY: the process is single-threaded (checked just above), so the
    // child cannot inherit a lock or allocator state owned by another thread.
    match unsafe { nix::unistd::fork() }.context("fork of a timeline failed")? {
        nix::unistd::ForkResult::Child => {
            if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || getppid() != parent {
                exit_now(1);
            }
            Ok(Forked::Child)
        }
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

/// Leave the process at once with `code`, without running destructors,
/// atexit handlers or stdio flushes (the parent owns those).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}
