//! Signal-delivery stops: a SIGTRAP from one of runq's int3s records a
//! line and rewinds the instruction pointer; a fatal-looking signal gets
//! its fault described; every other signal is forwarded.
//!
//! Separate because telling runq's breakpoints from the program's own
//! signals is what keeps tracing invisible to the traced program.

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::unistd::Pid;

use super::procfs::locate;
use super::Tracer;
use crate::trace::breakpoints::{Hit, SpaceId};
use crate::trace::model::{signal_name, Crash, EventKind};
use crate::trace::sys::{self, WaitReport};

impl Tracer<'_> {
    /// A signal-delivery-stop: a breakpoint hit, or a signal to forward.
    pub(super) fn signal_stop(&mut self, pid: Pid, sig: i32) -> Result<()> {
        let Some(task) = self.tasks.get(&pid) else {
            return self.hold_unclaimed(WaitReport::SignalStop(pid, sig));
        };
        let tgid = task.tgid;
        let space = task.space;
        if sig == libc::SIGTRAP {
            if let Some(space) = space {
                if self.breakpoint_hit(pid, space)? {
                    return self.resume(pid, 0);
                }
            }
        }
        if matches!(
            sig,
            libc::SIGSEGV
                | libc::SIGBUS
                | libc::SIGILL
                | libc::SIGFPE
                | libc::SIGABRT
                | libc::SIGTRAP
        ) {
            let crash = self.describe_fault(pid, sig);
            if let Some(task) = self.tasks.get_mut(&pid) {
                task.last_fault = crash;
            }
        }
        self.event(
            tgid,
            EventKind::Signal {
                tid: pid.as_raw(),
                signal: signal_name(sig),
            },
        );
        self.resume(pid, sig)
    }

    /// Whether the SIGTRAP that stopped `pid` came from one of our int3s; if
    /// so the hit is recorded and the instruction pointer rewound.
    fn breakpoint_hit(&mut self, pid: Pid, space: SpaceId) -> Result<bool> {
        let info = match sys::signal_info(pid) {
            Ok(info) => info,
            Err(Errno::ESRCH) => return Ok(true),
            Err(e) => return Err(e).context("PTRACE_GETSIGINFO"),
        };
        const TRAP_BRKPT: i32 = 1;
        if info.code != libc::SI_KERNEL && info.code != TRAP_BRKPT {
            return Ok(false);
        }
        let ip = match sys::instruction_pointer(pid) {
            Ok(ip) => ip,
            Err(Errno::ESRCH) => return Ok(true),
            Err(e) => return Err(e).context("PTRACE_GETREGS"),
        };
        let address = ip.wrapping_sub(1);
        let Some(table) = self.spaces.get_mut(&space) else {
            return Ok(false);
        };
        let hit = match table.take_hit(pid, address)? {
            Some(hit) => hit,
            None => return Ok(false),
        };
        if let (Hit::First(pending), Some(coverage)) = (hit, self.coverage.as_mut()) {
            coverage.record_hit(pending.image, pending.link_address);
        }
        match sys::set_instruction_pointer(pid, address) {
            Ok(()) | Err(Errno::ESRCH) => Ok(true),
            Err(e) => Err(e).context("PTRACE_SETREGS"),
        }
    }

    /// Where a fault happened, read while the task is still stopped.
    fn describe_fault(&self, pid: Pid, sig: i32) -> Option<Crash> {
        let info = sys::signal_info(pid).ok()?;
        let ip = sys::instruction_pointer(pid).ok()?;
        Some(Crash {
            signal: signal_name(sig),
            tid: pid.as_raw(),
            fault_address: format!("{:#x}", info.address),
            instruction_pointer: format!("{ip:#x}"),
            location: locate(pid, ip),
        })
    }
}
