//! The fork every timeline goes through: `process::fork_tied_checked`.
//!
//! Forking a multi-threaded process copies only the calling thread; locks
//! held by the others stay locked forever in the child. So exploration
//! refuses with a clear error unless the process is single-threaded. The
//! child dies with its parent (death signal, parent re-checked), so no
//! timeline outlives a killed controller. Children leave with `_exit` (no
//! atexit handlers, no flushing of buffers they share with the parent).

pub use crate::process::{exit_now, Forked};

/// What the single-threaded guard's message calls the forking work.
const WHAT: &str = "exploration of timelines";

/// Refuse to fork when other threads exist.
pub fn ensure_single_threaded() -> anyhow::Result<()> {
    crate::process::ensure_single_threaded(WHAT)
}

/// Fork one timeline. Refuses when the process has other threads.
pub fn fork_timeline() -> anyhow::Result<Forked> {
    crate::process::fork_tied_checked(WHAT)
}
