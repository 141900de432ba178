//! VM mode: boot a real kernel under qemu (KVM, or TCG when KVM is not
//! usable) with a requested topology and run a runq command line inside.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | the VM options' parsers: durations (at most a week) and memory sizes |
//! | [`kernel`] | which kernel to boot (`--kernel` / `$RUNQ_KERNEL`: a path, a cached release or `sched_ext`; else /boot) and its config |
//! | [`initramfs`] | the cpio image with runq as `/init`, its libraries and busybox, cached by content hash |
//! | [`qemu`] | accelerator, qemu arguments (topology, NUMA memory), the run itself with timeout, console capture and report channel (a folder; its `mod.rs` has a table of its files) |
//! | [`guest`] | what runq does as the guest's init |
//! | [`guest_cases`] | several test cases in one boot, the guest reset between them |
//! | [`channel`] | the framing on the report serial port |
//! | [`console`] | the guest kernel's panic/oops report and kept consoles |

pub mod channel;
pub mod console;
pub mod guest;
pub mod guest_cases;
pub mod initramfs;
pub mod kernel;
pub mod qemu;

pub use qemu::{run, Accel, AccelChoice, GuestTask, VmConfig, VmOutcome};

use std::time::Duration;

use crate::error::RunqError;

/// The longest a VM option's duration may be.
pub const MAX_VM_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Reads a duration option (`60s`, `2m`, `500ms`, `1h`, a bare number of
/// seconds; grammar in [`crate::duration`]) of at most a week. `what` names
/// the option in errors.
pub fn parse_duration(text: &str, what: &str) -> anyhow::Result<Duration> {
    let d =
        crate::duration::parse(text).map_err(|e| RunqError::bad_input(format!("{what}: {e}")))?;
    crate::duration::check_range(what, text, d, Duration::ZERO, MAX_VM_DURATION)
        .map_err(RunqError::bad_input)
}

/// Parses a memory size such as `512M`, `1G` or `1536` (MiB) into MiB.
pub fn parse_memory_mib(text: &str) -> anyhow::Result<u64> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let bad = || {
        RunqError::bad_input(format!(
            "--memory {text:?}: expected a size like 512M or 1G"
        ))
    };
    let value: u64 = number.parse().map_err(|_| bad())?;
    let mib = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => Some(value),
        "G" | "GB" | "GIB" => value.checked_mul(1024),
        _ => return Err(bad()),
    };
    match mib {
        Some(mib) if mib <= 1 << 20 => Ok(mib),
        _ => Err(RunqError::bad_input(format!(
            "--memory {text:?}: too large; use at most 1024G"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(
            parse_duration("60s", "--timeout").unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            parse_duration("2m", "--timeout").unwrap(),
            Duration::from_secs(120)
        );
        assert_eq!(
            parse_duration("250ms", "--timeout").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration("5", "--timeout").unwrap(),
            Duration::from_secs(5)
        );
        assert!(parse_duration("soon", "--timeout").is_err());
        assert!(parse_duration("5y", "--timeout").is_err());
        assert_eq!(parse_memory_mib("1G").unwrap(), 1024);
        assert_eq!(parse_memory_mib("768M").unwrap(), 768);
        assert!(parse_memory_mib("lots").is_err());
        assert!(parse_memory_mib("99999999999999G").is_err());
    }
}
