//! How a run ended: [`VmOutcome`] when the guest reported an exit code,
//! else the error the user sees (timeout, panic, early death) with the
//! guest kernel's report or the console's last lines and where the whole
//! console was kept.
//!
//! Separate because turning a run's end into a message is where the
//! console is read and judged, after qemu is gone.

use std::time::Duration;

use super::files::RunFiles;
use super::supervise::{End, Watch};
use super::{Accel, PreparedBoot, VmConfig};
use crate::error::RunqError;
use crate::vm::console;

/// How a run ended (when the guest reported an exit code).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VmOutcome {
    /// The guest command's exit code.
    pub exit_code: i32,
    pub accel: Accel,
    /// From starting qemu to the guest's init reporting in.
    pub boot_to_init: Option<Duration>,
    /// The guest's own uptime when init started.
    pub guest_uptime_at_init: Option<Duration>,
    /// From starting qemu to qemu exiting.
    pub total: Duration,
    /// Whether the cached base image had to be built.
    pub image_built: bool,
}

/// Turns how the run ended into the outcome or the error the user sees.
pub(super) fn outcome(
    watch: Watch,
    total: Duration,
    config: &VmConfig,
    boot: &PreparedBoot,
    files: &RunFiles,
    shell: bool,
) -> anyhow::Result<VmOutcome> {
    let failure = match watch.end {
        End::Interrupted(signal) => {
            return Err(RunqError::environment(format!(
                "interrupted by {signal:?}; qemu was stopped"
            )))
        }
        End::Exited {
            exit_code: Some(code),
            ..
        } => {
            return Ok(VmOutcome {
                exit_code: code,
                accel: boot.accel,
                boot_to_init: watch.boot_to_init,
                guest_uptime_at_init: watch.guest_uptime_at_init,
                total,
                image_built: boot.image_built,
            })
        }
        End::TimedOut => format!(
            "the guest did not finish within --timeout {}s ({}); qemu was killed",
            config.timeout.as_secs_f64(),
            if watch.boot_to_init.is_some() {
                "init was running: the command hung or is slower than the timeout"
            } else {
                "init never started: boot hung or is slow"
            }
        ),
        End::Exited { status, .. } => {
            let console_text = console::read(&files.console);
            let what = if console::panicked(&console_text) {
                "the guest kernel panicked".to_string()
            } else if !status.success() {
                format!("qemu failed ({status})")
            } else if watch.boot_to_init.is_none() {
                "the guest stopped before init started".to_string()
            } else {
                "the guest stopped before reporting an exit code".to_string()
            };
            let mut text = what;
            for note in &watch.notes {
                text.push_str(&format!("\n{note}"));
            }
            let stderr = files.qemu_stderr_text();
            if !stderr.is_empty() {
                text.push_str(&format!("\nqemu said: {stderr}"));
            }
            text
        }
    };
    Err(RunqError::environment(failure_message(
        failure,
        &boot.kernel_description,
        files,
        shell,
    )))
}

/// A failure's message: what happened, the kernel, the guest kernel's
/// report (or the console's last lines) and where the whole console is.
fn failure_message(what: String, kernel: &str, files: &RunFiles, shell: bool) -> String {
    if shell {
        return format!("{what} (kernel {kernel})");
    }
    let console_text = console::read(&files.console);
    let kept = match files.keep_console() {
        Some(path) => format!("\nthe whole guest console: {}", path.display()),
        None => String::new(),
    };
    format!(
        "{what} (kernel {kernel})\n{}{kept}",
        console::excerpt(&console_text)
    )
}
