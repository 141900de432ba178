//! The event loop: every wait status is drained and dispatched (death,
//! signal-delivery stop, ptrace event, group-stop), then the loop sleeps
//! until SIGCHLD or an interrupting signal.
//!
//! Separate because it is the one place that decides what kind of stop a
//! wait status is and how a stopped task is resumed (or held, while
//! detaching); the handlers it calls live by what they handle.

use std::os::fd::AsFd;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::ptrace::{self, Event as PtraceEvent};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

use super::Tracer;
use crate::trace::model::{signal_name, EventKind, ExitStatus, Origin};
use crate::trace::sys::{self, WaitReport};

impl Tracer<'_> {
    /// The event loop: drain every wait status, then sleep until SIGCHLD or
    /// an interrupting signal (with a timeout as a safety net).
    pub(super) fn run(&mut self, signals: &SignalFd) -> Result<()> {
        loop {
            loop {
                match sys::wait_any_nohang() {
                    Ok(None) => break,
                    Ok(Some(report)) => self.handle(report)?,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::ECHILD) => {
                        // Nothing left that could report: whatever the table
                        // still holds is gone.
                        self.tasks.clear();
                        self.unclaimed.clear();
                        self.root_reaped = true;
                        break;
                    }
                    Err(e) => return Err(e).context("waitpid"),
                }
            }
            if self.detaching && self.all_held() {
                self.detach_all()?;
            }
            if self.done() {
                return Ok(());
            }
            if self.killing {
                self.containment.sweep();
            }
            let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            while let Ok(Some(info)) = signals.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo != libc::SIGCHLD {
                    if let Ok(sig) = Signal::try_from(signo) {
                        self.interrupt(sig);
                    }
                }
            }
        }
    }

    pub(super) fn handle(&mut self, report: WaitReport) -> Result<()> {
        match report {
            WaitReport::Exited(pid, code) => self.task_gone(pid, ExitStatus::Exited { code }),
            WaitReport::Signaled(pid, sig, core) => {
                self.task_gone(pid, ExitStatus::signaled(sig, core))
            }
            WaitReport::SignalStop(pid, sig) => self.signal_stop(pid, sig),
            WaitReport::EventStop(pid, sig, event) => self.ptrace_event(pid, sig, event),
            WaitReport::OtherStop(pid) => self.resume(pid, 0),
            WaitReport::Continued(_) => Ok(()),
        }
    }

    /// Resumes a stopped task, or holds it when detaching. A task that
    /// vanished meanwhile (SIGKILL) is not an error: its death report follows.
    pub(super) fn resume(&mut self, pid: Pid, signal: i32) -> Result<()> {
        if self.detaching {
            if let Some(task) = self.tasks.get_mut(&pid) {
                task.held = Some(signal);
                return Ok(());
            }
        }
        match sys::cont(pid, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("PTRACE_CONT {pid}")),
        }
    }

    fn ptrace_event(&mut self, pid: Pid, sig: i32, event: i32) -> Result<()> {
        const FORK: i32 = PtraceEvent::PTRACE_EVENT_FORK as i32;
        const VFORK: i32 = PtraceEvent::PTRACE_EVENT_VFORK as i32;
        const CLONE: i32 = PtraceEvent::PTRACE_EVENT_CLONE as i32;
        const EXEC: i32 = PtraceEvent::PTRACE_EVENT_EXEC as i32;
        const EXIT: i32 = PtraceEvent::PTRACE_EVENT_EXIT as i32;
        const STOP: i32 = PtraceEvent::PTRACE_EVENT_STOP as i32;
        match event {
            FORK | VFORK | CLONE => {
                let origin = match event {
                    FORK => Origin::Fork,
                    VFORK => Origin::Vfork,
                    _ => Origin::Clone,
                };
                match ptrace::getevent(pid) {
                    Ok(child) => self.new_task(pid, Pid::from_raw(child as i32), origin)?,
                    Err(Errno::ESRCH) => return Ok(()),
                    Err(e) => return Err(e).context("PTRACE_GETEVENTMSG"),
                }
                self.resume(pid, 0)
            }
            EXEC => {
                let former = match ptrace::getevent(pid) {
                    Ok(former) => Pid::from_raw(former as i32),
                    Err(Errno::ESRCH) => return Ok(()),
                    Err(e) => return Err(e).context("PTRACE_GETEVENTMSG"),
                };
                self.exec(pid, former)
            }
            EXIT => self.resume(pid, 0),
            STOP => {
                if !self.tasks.contains_key(&pid) {
                    return self.hold_unclaimed(WaitReport::EventStop(pid, sig, event));
                }
                self.event_stop(pid, sig)
            }
            _ => self.resume(pid, 0),
        }
    }

    /// PTRACE_EVENT_STOP: a new task's initial stop, a group-stop, or the
    /// end of a PTRACE_INTERRUPT / PTRACE_LISTEN.
    fn event_stop(&mut self, pid: Pid, sig: i32) -> Result<()> {
        let group_stop = matches!(
            sig,
            libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
        );
        if !group_stop {
            return self.resume(pid, 0);
        }
        let tgid = self.tasks.get(&pid).map(|t| t.tgid).unwrap_or(pid);
        self.event(
            tgid,
            EventKind::GroupStop {
                tid: pid.as_raw(),
                signal: signal_name(sig),
            },
        );
        if self.detaching {
            return self.resume(pid, 0);
        }
        match sys::ptrace_listen(pid) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("PTRACE_LISTEN {pid}")),
        }
    }
}
