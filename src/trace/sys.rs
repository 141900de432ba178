//! The few system calls nix does not wrap, and the launch of the traced
//! command. Every `unsafe` block of the tracer lives here.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::sys::ptrace;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::Pid;

use crate::process::Forked;

/// Restarts a tracee in group-stop without ending the stop (PTRACE_LISTEN),
/// so it stays stopped like an untraced process until SIGCONT.
pub fn ptrace_listen(pid: Pid) -> nix::Result<()> {
    // SAFETY: PTRACE_LISTEN takes no address or data; the kernel validates
    // the pid and the tracee state.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_LISTEN,
            pid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}

/// Whether two tasks share one address space (kcmp KCMP_VM). `None` if the
/// kernel cannot say (no kcmp, or a task is gone).
pub fn same_address_space(a: Pid, b: Pid) -> Option<bool> {
    const KCMP_VM: libc::c_long = 1;
    // SAFETY: kcmp only compares kernel objects of the two pids; it takes
    // no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            libc::c_long::from(a.as_raw()),
            libc::c_long::from(b.as_raw()),
            KCMP_VM,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    match rc {
        0 => Some(true),
        1..=3 => Some(false),
        _ => None,
    }
}

/// The fields of a signal's siginfo the tracer uses.
#[derive(Debug, Clone, Copy)]
pub struct SignalInfo {
    pub code: i32,
    /// The faulting address for SIGSEGV, SIGBUS, SIGILL, SIGFPE and traps.
    pub address: u64,
}

/// Reads the siginfo of a tracee in signal-delivery-stop.
pub fn signal_info(pid: Pid) -> nix::Result<SignalInfo> {
    let info = ptrace::getsiginfo(pid)?;
    // SAFETY: si_addr reads the union member for fault signals; for other
    // signals it yields whatever the union holds, which is only displayed.
    let address = unsafe { info.si_addr() } as u64;
    Ok(SignalInfo {
        code: info.si_code,
        address,
    })
}

/// The instruction pointer of a stopped tracee.
pub fn instruction_pointer(pid: Pid) -> nix::Result<u64> {
    Ok(ptrace::getregs(pid)?.rip)
}

/// Moves a stopped tracee's instruction pointer.
pub fn set_instruction_pointer(pid: Pid, address: u64) -> nix::Result<()> {
    let mut regs = ptrace::getregs(pid)?;
    regs.rip = address;
    ptrace::setregs(pid, regs)
}

/// A launched command, seized before it runs a single instruction of its own.
pub struct Launched {
    pub pid: Pid,
    /// Receives the child's errno if its execv fails (closed on success).
    pub exec_error: OwnedFd,
}

/// Forks, seizes the child with `options` and lets it exec `program`.
///
/// The child waits on a pipe until the parent has seized it, so the exec is
/// its first traced event. `signal_mask` is restored in the child (the
/// caller blocks the signals it reads through a signalfd).
pub fn launch_seized(
    program: &CString,
    argv: &[CString],
    options: ptrace::Options,
    signal_mask: &SigSet,
    place: &dyn Fn(Pid) -> Result<()>,
) -> Result<Launched> {
    // Everything the child touches is prepared before fork: after fork it
    // only makes async-signal-safe calls.
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;

    // SAFETY: the child branch below only calls async-signal-safe functions
    // (sigprocmask, read, execv, write, _exit) on data prepared before fork.
    // No death signal: the tracer decides the tracee's fate (it may detach).
    match unsafe { crate::process::fork_untied() }.context("fork failed")? {
        Forked::Child => {
            // SAFETY: async-signal-safe calls only; the pointers refer to
            // memory the parent prepared and the child still owns.
            unsafe {
                libc::sigprocmask(
                    libc::SIG_SETMASK,
                    signal_mask.as_ref(),
                    std::ptr::null_mut(),
                );
                drop(go_write);
                let mut go = 0u8;
                let n = libc::read(go_read.as_raw_fd(), (&mut go as *mut u8).cast(), 1);
                if n != 1 {
                    // The parent died or refused: never run untraced.
                    libc::_exit(126);
                }
                libc::execv(program.as_ptr(), argv_ptrs.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(err_write.as_raw_fd(), (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        Forked::Parent(child) => {
            drop(go_read);
            drop(err_write);
            if let Err(errno) = ptrace::seize(child, options) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                let hint = match own_tracer() {
                    Some(tracer) => format!(
                        "runq itself is traced (by pid {tracer}), so its children \
                         are too, and a process has only one tracer: run runq \
                         outside strace/gdb/runq trace"
                    ),
                    None => {
                        "run as root or set /proc/sys/kernel/yama/ptrace_scope to 0".to_string()
                    }
                };
                return Err(crate::error::RunqError::environment(format!(
                    "ptrace(PTRACE_SEIZE) failed: {errno}; {hint}"
                )));
            }
            if let Err(err) = place(child) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(err.context("placing the traced command in its cgroup"));
            }
            nix::unistd::write(&go_write, b"g").context("releasing the traced child")?;
            drop(go_write);
            Ok(Launched {
                pid: child,
                exec_error: err_read,
            })
        }
    }
}

/// The pid tracing this process, if any.
fn own_tracer() -> Option<i32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|pid| *pid != 0)
}

/// The errno a failed execv reported, if any (call after the child ended).
pub fn read_exec_error(fd: &OwnedFd) -> Option<i32> {
    let mut buf = [0u8; 4];
    match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
        Ok(4) => Some(i32::from_ne_bytes(buf)),
        _ => None,
    }
}

/// Blocks `signals` in this thread and returns the previous mask.
pub fn block_signals(signals: &SigSet) -> Result<SigSet> {
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(signals), Some(&mut old))?;
    Ok(old)
}

/// Restores a signal mask saved by [`block_signals`].
pub fn restore_signals(mask: &SigSet) {
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
}

/// A wait status of a traced task, with raw signal numbers (nix's decoder
/// rejects real-time signals, which programs do use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReport {
    Exited(Pid, i32),
    /// Killed by a signal (number, core dumped).
    Signaled(Pid, i32, bool),
    /// Signal-delivery-stop.
    SignalStop(Pid, i32),
    /// A PTRACE_EVENT_* stop: (signal, event).
    EventStop(Pid, i32, i32),
    /// Any other stop (syscall stops are not requested).
    OtherStop(Pid),
    /// Continued (not reported for tracees; listed for completeness).
    Continued(Pid),
}

impl WaitReport {
    pub fn pid(&self) -> Pid {
        match *self {
            WaitReport::Exited(pid, _)
            | WaitReport::Signaled(pid, _, _)
            | WaitReport::SignalStop(pid, _)
            | WaitReport::EventStop(pid, _, _)
            | WaitReport::OtherStop(pid)
            | WaitReport::Continued(pid) => pid,
        }
    }

    fn decode(pid: Pid, status: i32) -> Self {
        if libc::WIFEXITED(status) {
            WaitReport::Exited(pid, libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            WaitReport::Signaled(pid, libc::WTERMSIG(status), libc::WCOREDUMP(status))
        } else if libc::WIFSTOPPED(status) {
            let sig = libc::WSTOPSIG(status);
            let event = status >> 16;
            if event != 0 {
                WaitReport::EventStop(pid, sig, event)
            } else if sig == libc::SIGTRAP | 0x80 {
                WaitReport::OtherStop(pid)
            } else {
                WaitReport::SignalStop(pid, sig)
            }
        } else {
            WaitReport::Continued(pid)
        }
    }
}

/// waitpid(-1, __WALL | WNOHANG): the next report of any task, if one is
/// ready.
pub fn wait_any_nohang() -> nix::Result<Option<WaitReport>> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes only to `status`, a valid c_int.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
    match nix::errno::Errno::result(pid)? {
        0 => Ok(None),
        pid => Ok(Some(WaitReport::decode(Pid::from_raw(pid), status))),
    }
}

/// PTRACE_CONT delivering signal number `sig` (0 for none), real-time
/// signals included.
pub fn cont(pid: Pid, sig: i32) -> nix::Result<()> {
    ptrace_request(libc::PTRACE_CONT, pid, sig)
}

/// PTRACE_DETACH delivering signal number `sig` (0 for none).
pub fn detach(pid: Pid, sig: i32) -> nix::Result<()> {
    ptrace_request(libc::PTRACE_DETACH, pid, sig)
}

fn ptrace_request(request: libc::c_uint, pid: Pid, sig: i32) -> nix::Result<()> {
    // SAFETY: PTRACE_CONT and PTRACE_DETACH take no address and pass the
    // signal number as the data word; nothing is read or written through it.
    let rc = unsafe {
        libc::ptrace(
            request,
            pid.as_raw(),
            std::ptr::null_mut::<libc::c_void>(),
            sig as libc::c_long as *mut libc::c_void,
        )
    };
    nix::errno::Errno::result(rc).map(drop)
}
