//! Keeps the traced tree killable as a whole, detached members included.
//!
//! Without `--follow-exec`, runq detaches from a process when it execs, so
//! ptrace's exit-kill no longer reaches it, and a detached program may fork,
//! daemonize (`setsid`) or be orphaned. Process groups and parentage are
//! both escapable that way; cgroup membership is not: a child is created in
//! its parent's cgroup and only a privileged writer moves it out. So the
//! traced root is moved into a run root `runq-<pid>` (made by
//! [`CgroupManager`], which also reaps roots of dead runs) while it is held
//! before its exec, and everything it ever starts lands there.
//!
//! "Kill" (interrupt or error) SIGKILLs every member of that cgroup until it
//! is empty, besides the traced tasks.
//!
//! SIGKILL of runq itself cannot be caught, so a guard process does the
//! kill then: a grandchild of runq (double fork: it is not runq's child,
//! so runq's `waitpid(-1)` never sees it), in its own session (a signal to
//! runq's process group or terminal does not reach it), ignoring the usual
//! termination signals, with stdio on /dev/null (it holds no pipe a caller
//! waits on). It blocks reading a pipe whose only writer is runq; end of
//! file means runq is gone, either finished (it removed the cgroup first,
//! so the guard finds nothing to do) or killed (the guard kills every
//! member, removes the cgroup and exits). A subreaper design would need the
//! guard to be the tree's parent, which hides the root's exit from runq
//! once runq detaches from it; a PID namespace needs privileges and changes
//! what the traced program sees.
//!
//! Without usable cgroups (no cpuset and cpu hierarchy, or no permission),
//! tracing still works and a warning says that detached programs are not
//! contained.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::unistd::Pid;

use crate::cgroup::{child_dirs, procs_of_dir, CgroupManager};

/// How long a kill keeps sweeping a cgroup that does not empty.
const KILL_LIMIT: Duration = Duration::from_secs(2);
/// Pause between sweeps.
const SWEEP_PAUSE: Duration = Duration::from_millis(5);

/// The cgroup of a traced tree and its guard.
pub struct Containment {
    manager: Option<CgroupManager>,
    /// Write end of the guard's pipe: closing it (or dying) wakes the guard.
    guard_pipe: Option<OwnedFd>,
}

impl Containment {
    /// No containment: the caller keeps the tree in its own cgroups.
    pub fn none() -> Containment {
        Containment {
            manager: None,
            guard_pipe: None,
        }
    }

    /// A cgroup for the tree plus its guard; without cgroups, an empty
    /// containment (and a warning).
    pub fn start() -> Containment {
        let manager = match CgroupManager::detect() {
            Ok(manager) => manager,
            Err(err) => {
                eprintln!(
                    "runq: warning: no cgroup for the traced tree ({err:#}); programs runq \
                     detaches from are not killed with the tree"
                );
                return Containment {
                    manager: None,
                    guard_pipe: None,
                };
            }
        };
        let guard_pipe = match spawn_guard(manager.paths("")) {
            Ok(fd) => Some(fd),
            Err(err) => {
                eprintln!(
                    "runq: warning: no guard for the traced tree ({err:#}); if runq is \
                     SIGKILLed, programs it detached from keep running"
                );
                None
            }
        };
        Containment {
            manager: Some(manager),
            guard_pipe,
        }
    }

    /// Moves `pid` (held before its exec) into the tree's cgroup.
    pub fn place(&self, pid: Pid) -> anyhow::Result<()> {
        match &self.manager {
            Some(manager) => manager.move_procs("", &[pid.as_raw()]),
            None => Ok(()),
        }
    }

    /// SIGKILLs every process now in the tree's cgroup (one pass: traced
    /// tasks may still need the tracer to move on).
    pub fn sweep(&self) {
        if let Some(manager) = &self.manager {
            let mut members = Vec::new();
            for dir in manager.paths("") {
                collect_members(&dir, &mut members);
            }
            for pid in members {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// SIGKILLs every process in the tree's cgroup until none is left.
    pub fn kill_all(&self) {
        if let Some(manager) = &self.manager {
            kill_members(&manager.paths(""));
        }
    }

    /// Normal end: remove the cgroup (programs still running in it are
    /// moved out and keep running), then let the guard go.
    pub fn release(mut self) {
        if let Some(mut manager) = self.manager.take() {
            if let Err(err) = manager.teardown() {
                tracing::warn!("removing the traced tree's cgroup: {err:#}");
            }
        }
        self.guard_pipe = None;
    }
}

/// SIGKILL every member of the cgroup directories (and their children)
/// until they are empty, for at most [`KILL_LIMIT`].
fn kill_members(dirs: &[PathBuf]) {
    let deadline = Instant::now() + KILL_LIMIT;
    loop {
        let mut members = Vec::new();
        for dir in dirs {
            collect_members(dir, &mut members);
        }
        if members.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in members {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(SWEEP_PAUSE);
    }
}

fn collect_members(dir: &Path, out: &mut Vec<i32>) {
    for child in child_dirs(dir) {
        collect_members(&child, out);
    }
    out.extend(procs_of_dir(dir).unwrap_or_default());
}

fn remove_dirs(dir: &Path) {
    for child in child_dirs(dir) {
        remove_dirs(&child);
    }
    let _ = std::fs::remove_dir(dir);
}

/// Starts the guard (see the module docs); returns the pipe's write end.
fn spawn_guard(dirs: Vec<PathBuf>) -> anyhow::Result<OwnedFd> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    crate::explore::fork::ensure_single_threaded()?;
    // SAFETY: the process is single-threaded (checked above), so the child
    // inherits no lock held by another thread; it only runs the guard and
    // leaves with _exit.
    // No death signal: the guard must outlive runq.
    match unsafe { crate::process::fork_untied() }? {
        crate::process::Forked::Child => {
            drop(write_end);
            // SAFETY: as above; the intermediate child exits at once, so the
            // guard is reparented away from runq.
            match unsafe { crate::process::fork_untied() } {
                Ok(crate::process::Forked::Child) => guard_main(read_end, &dirs),
                _ => crate::explore::fork::exit_now(0),
            }
        }
        crate::process::Forked::Parent(child) => {
            drop(read_end);
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(write_end)
        }
    }
}

/// The guard: wait for runq to go, then kill and remove what it left.
fn guard_main(runq_alive: OwnedFd, dirs: &[PathBuf]) -> ! {
    let _ = nix::unistd::setsid();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGPIPE,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(runq_alive.as_raw_fd(), &mut byte) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    kill_members(dirs);
    for dir in dirs {
        remove_dirs(dir);
    }
    crate::explore::fork::exit_now(0)
}
