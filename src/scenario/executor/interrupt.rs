//! The SIGINT/SIGTERM handler that lets a run end cleanly.
//!
//! Separate because it is process-wide state (one static the signal handler
//! writes) read well beyond the executor: the hold loop and the step
//! boundaries here, and `runq workload` and exploration's driver, which
//! wait on their own processes.

use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Context;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use crate::error::RunqError;

/// The signal that asked the run to end (0: none), set by the handler that
/// [`install_interrupt_handler`] installs.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_interrupt(signal: libc::c_int) {
    INTERRUPTED.store(signal, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM end a run cleanly: the hold loop notices within
/// one sample interval and the run fails with an environment error after
/// stopping every worker and removing its cgroups. Forked workers inherit
/// the handler, so a Ctrl-C sent to the whole process group leaves them to
/// the controller's prompt stop.
pub fn install_interrupt_handler() -> anyhow::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(note_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is
        // async-signal-safe; no previous handler is relied upon.
        unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing a {signal} handler"))?;
    }
    Ok(())
}

/// The signal (SIGINT or SIGTERM) that arrived since
/// [`install_interrupt_handler`] ran, if any.
pub fn interrupt_signal() -> Option<Signal> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Signal::try_from(signal).ok(),
    }
}

/// Fails when SIGINT or SIGTERM arrived since the handler was installed.
pub fn check_interrupted() -> anyhow::Result<()> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => Ok(()),
        signal => Err(RunqError::environment(format!(
            "interrupted by {}: the workers were stopped and the run's cgroups removed",
            Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.to_string())
        ))),
    }
}
