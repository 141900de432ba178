//! Forking, and the rule every child of runq follows: ask for SIGKILL when
//! the parent dies (PR_SET_PDEATHSIG), then check that the parent is still
//! the one that forked it, because a parent that died between the fork and
//! the prctl would never deliver the signal. Every `fork` of runq is made
//! here.

use std::io;

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::{getpid, getppid, ForkResult, Pid};

use crate::error::RunqError;

/// Which side of a fork this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The new process.
    Child,
    /// The original process; the child's pid.
    Parent(Pid),
}

/// Arms SIGKILL on the death of the parent and checks that `parent` is
/// still the parent. Async-signal-safe (two system calls, no allocation), so
/// it may run between fork and exec (e.g. in `Command::pre_exec`).
pub fn tie_to_parent(parent: Pid) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if getppid() != parent {
        // The parent died before the death signal was armed.
        return Err(io::Error::other(
            "the parent exited before the child started",
        ));
    }
    Ok(())
}

/// Forks a child that dies with this process ([`tie_to_parent`]); a child
/// whose parent is already gone leaves at once with exit code 1.
///
/// # Safety
/// As for `fork(2)` in Rust: unless this process is single-threaded, the
/// child may only make async-signal-safe calls (no allocation, no locks)
/// until it execs or leaves with [`exit_now`]. runq's controller forks while
/// it is single-threaded (docs/ARCHITECTURE.md, process model); use
/// [`fork_tied_checked`] where that is not known.
pub unsafe fn fork_tied() -> nix::Result<Forked> {
    let parent = getpid();
    // SAFETY: forwarded to the caller (see above).
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            if tie_to_parent(parent).is_err() {
                exit_now(1);
            }
            Ok(Forked::Child)
        }
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

/// Like [`fork_tied`], but refuses (environment error) unless this process
/// is single-threaded, which makes the fork safe whatever the child does.
pub fn fork_tied_checked(what: &str) -> anyhow::Result<Forked> {
    ensure_single_threaded(what)?;
    // SAFETY: the process is single-threaded (checked just above), so the
    // child cannot inherit a lock or allocator state owned by another thread.
    unsafe { fork_tied() }.with_context(|| format!("fork of {what} failed"))
}

/// Forks without a death signal: for a child whose fate the caller manages
/// otherwise (a ptrace tracee, which the tracer may detach and leave running).
///
/// # Safety
/// As for [`fork_tied`].
pub unsafe fn fork_untied() -> nix::Result<Forked> {
    // SAFETY: forwarded to the caller.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => Ok(Forked::Child),
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}

/// Forks a child that leaves at once with `code` and returns its pid (for
/// process-creation workloads). Safe from any thread: the child only calls
/// `_exit`.
pub fn fork_exiting(code: i32) -> nix::Result<Pid> {
    // SAFETY: the child only calls _exit, which is async-signal-safe.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => exit_now(code),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Refuses with an environment error naming `what` unless this process has
/// exactly one thread.
pub fn ensure_single_threaded(what: &str) -> anyhow::Result<()> {
    let threads = super::proc::thread_count()?;
    if threads != 1 {
        return Err(RunqError::environment(format!(
            "{what} forks, which is only safe in a single-threaded process, but this \
             process has {threads} threads; run it from the main thread before starting \
             any other thread (for tests: a `harness = false` test binary)"
        )));
    }
    Ok(())
}

/// Leaves the process at once with `code`, without running destructors,
/// atexit handlers or stdio flushes (the parent owns those).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}
