//! A supervised external program: what payloads run and what runs a
//! sched_ext scheduler under test.
//!
//! ```no_run
//! use std::time::Duration;
//! use runq::process::{Launch, Exit};
//! # fn main() -> anyhow::Result<()> {
//! let mut child = Launch::new("/usr/bin/stress-ng")
//!     .args(["--cpu", "2", "--timeout", "5s"])
//!     .hold(true) // stopped before exec: place it first
//!     .output_file("/tmp/stress.log")
//!     .spawn()?;
//! // e.g. cgroup.move_procs("cg_0", &[child.pid().as_raw()])?;
//! child.release()?; // execs now; Err if the exec failed
//! while child.try_wait().is_none() {
//!     child.pump(Duration::from_millis(50)); // drain output, or it blocks
//! }
//! let exit: Exit = child.stop(libc::SIGTERM, Duration::from_millis(1500));
//! println!("{exit:?}: {}", child.tail_text());
//! # Ok(()) }
//! ```
//!
//! What every launched program gets:
//! - its own process group (pgid = its pid), so a stop reaches everything it
//!   forked that stayed in the group;
//! - SIGKILL when runq dies (PR_SET_PDEATHSIG, re-checked after arming);
//! - stdin from /dev/null; stdout and stderr into ONE pipe (the tail shows
//!   them interleaved as written), read by the owner without threads: the
//!   owner calls [`Supervised::pump`] (or `try_wait`, `wait_until`, `stop`,
//!   which pump too) every few tens of ms. The pipe holds 1 MiB where the
//!   kernel allows, so a program is not blocked by a late pump. The last
//!   [`Launch::tail_bytes`] bytes are kept; everything can also go to a file
//!   ([`Launch::output_file`]) or be taken as it arrives
//!   ([`Launch::capture`]);
//! - default signal dispositions for SIGPIPE and an empty signal mask (runq
//!   blocks the signals it reads from a signalfd);
//! - optionally ([`Launch::private_shm`]) a private tmpfs on /dev/shm in its
//!   own mount namespace, so POSIX shared memory it forgets (or cannot
//!   remove because it was killed) vanishes with its last process;
//! - optionally ([`Launch::hold`]) a stop before exec: the child exists,
//!   with its pid, in its own group, but runs nothing until
//!   [`Supervised::release`], so the caller can move it into cgroups first
//!   and everything it starts is born there.
//!
//! Ending: [`Supervised::stop`] signals the group, waits up to a grace
//! period (pumping output), then SIGKILLs the group and reaps. Dropping a
//! [`Supervised`] that has not been reaped SIGKILLs the group and reaps.
//!
//! The owner must be single-threaded when it calls [`Launch::spawn`] only
//! for [`Launch::function`] children (they run Rust code after the fork);
//! an exec'd program's child side makes async-signal-safe calls only.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::fork::{exit_now, fork_tied, Forked};

/// Default number of output bytes a [`Supervised`] keeps.
pub const DEFAULT_TAIL_BYTES: usize = 4096;
/// Size asked for the output pipe (the kernel may grant less).
const PIPE_BYTES: i32 = 1 << 20;
/// After the program ended, how long `stop` keeps reading output that
/// members of the group which left it may still write.
const FINAL_DRAIN: Duration = Duration::from_millis(200);

/// How a launched program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// It exited with this code.
    Exited(i32),
    /// A signal (this number) ended it.
    Signaled(i32),
}

impl Exit {
    /// True for `Exited(0)`.
    pub fn success(&self) -> bool {
        *self == Exit::Exited(0)
    }
}

/// Why a program could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Preparing the launch failed in runq (pipes, fork, the output file).
    #[error("{what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An argument or environment entry contains a NUL byte.
    #[error("{0:?} contains a NUL byte")]
    Nul(OsString),
    /// The child started but could not exec the program.
    #[error("cannot execute {}: {}", program.display(), errno.desc())]
    Exec { program: PathBuf, errno: Errno },
    /// The child could not set itself up (stdio redirection).
    #[error("the child of {} could not set up its standard streams: {}", program.display(), errno.desc())]
    ChildSetup { program: PathBuf, errno: Errno },
    /// The parent could not release a held child (it died meanwhile).
    #[error("releasing {}: {source}", program.display())]
    Release {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn setup_error(what: &'static str) -> impl FnOnce(Errno) -> LaunchError {
    move |errno| LaunchError::Setup {
        what,
        source: errno.into(),
    }
}

/// What the child runs after its setup.
enum Body {
    Exec(PathBuf),
    /// Rust code in the forked child; its return value is the exit code.
    Function(Box<dyn FnOnce() -> i32>),
}

/// How to launch a program: a builder, consumed by [`Launch::spawn`].
pub struct Launch {
    body: Body,
    /// Name used in messages (the program path, or the function's name).
    name: PathBuf,
    argv0: OsString,
    args: Vec<OsString>,
    env_set: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    env_own_pid: Option<(OsString, OsString)>,
    hold: bool,
    tail_bytes: usize,
    output_file: Option<PathBuf>,
    capture: bool,
    private_shm: bool,
}

impl Launch {
    /// Runs `program` (a path; no PATH search) with `argv[0]` = `program`.
    pub fn new(program: impl Into<PathBuf>) -> Launch {
        let program = program.into();
        Launch::with_body(program.clone(), Body::Exec(program))
    }

    /// Runs `body` in the forked child instead of exec'ing a program (with
    /// the same group, death signal, streams and supervision); its return
    /// value is the exit code. The spawning process must be single-threaded
    /// (the child runs Rust code after the fork). `name` is used in
    /// messages.
    pub fn function(name: &str, body: impl FnOnce() -> i32 + 'static) -> Launch {
        Launch::with_body(PathBuf::from(name), Body::Function(Box::new(body)))
    }

    fn with_body(name: PathBuf, body: Body) -> Launch {
        Launch {
            argv0: name.clone().into_os_string(),
            body,
            name,
            args: Vec::new(),
            env_set: Vec::new(),
            env_remove: Vec::new(),
            env_own_pid: None,
            hold: false,
            tail_bytes: DEFAULT_TAIL_BYTES,
            output_file: None,
            capture: false,
            private_shm: false,
        }
    }

    /// `argv[0]` as the program sees it (default: the program path).
    pub fn argv0(mut self, argv0: impl Into<OsString>) -> Launch {
        self.argv0 = argv0.into();
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Launch {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Launch {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (the rest is inherited from runq).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Launch {
        self.env_set.push((key.into(), value.into()));
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Launch {
        self.env_remove.push(key.into());
        self
    }

    /// Sets `key` to `prefix` followed by the child's own pid (known only
    /// after the fork), e.g. a marker file named after the program's pid.
    pub fn env_own_pid(mut self, key: impl Into<OsString>, prefix: impl Into<OsString>) -> Launch {
        self.env_own_pid = Some((key.into(), prefix.into()));
        self
    }

    /// Holds the child before exec until [`Supervised::release`].
    pub fn hold(mut self, hold: bool) -> Launch {
        self.hold = hold;
        self
    }

    /// Bytes of output kept for [`Supervised::tail`] (default 4096).
    pub fn tail_bytes(mut self, bytes: usize) -> Launch {
        self.tail_bytes = bytes;
        self
    }

    /// Also writes all output to `path` (created or truncated at spawn).
    pub fn output_file(mut self, path: impl Into<PathBuf>) -> Launch {
        self.output_file = Some(path.into());
        self
    }

    /// Keeps the output read since the last [`Supervised::take_output`],
    /// for a caller that parses it as it comes. Take it at every pump: it
    /// grows until taken.
    pub fn capture(mut self, capture: bool) -> Launch {
        self.capture = capture;
        self
    }

    /// Gives the child a private tmpfs on /dev/shm in a new mount namespace
    /// (needs CAP_SYS_ADMIN; without it, or without /dev/shm, the child
    /// silently runs with the shared /dev/shm).
    pub fn private_shm(mut self, private: bool) -> Launch {
        self.private_shm = private;
        self
    }

    /// Forks the child. Without [`hold`](Self::hold) it also releases it and
    /// returns once the exec succeeded, or the error the child reported.
    pub fn spawn(self) -> Result<Supervised, LaunchError> {
        let hold = self.hold;
        let mut child = spawn_held(self)?;
        if !hold {
            child.release()?;
        }
        Ok(child)
    }
}

/// A launched program and its output. See the module header.
pub struct Supervised {
    pid: Pid,
    name: PathBuf,
    /// Write end of the start pipe while the child is held.
    go: Option<OwnedFd>,
    /// Read end of the exec-report pipe until the start was confirmed.
    exec_report: Option<OwnedFd>,
    output: Option<OwnedFd>,
    file: Option<File>,
    tail: VecDeque<u8>,
    tail_bytes: usize,
    captured: Option<Vec<u8>>,
    exit: Option<Exit>,
    started: Instant,
}

impl Supervised {
    /// The child's pid, which is also its process group id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// True while the child waits before exec for [`release`](Self::release).
    pub fn is_held(&self) -> bool {
        self.go.is_some()
    }

    /// When the child was forked.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Lets a held child exec, and waits until it did (the exec closed the
    /// report pipe) or reported why it could not: then the child is reaped
    /// and the error returned. Does nothing for a released child.
    pub fn release(&mut self) -> Result<(), LaunchError> {
        if let Some(go) = self.go.take() {
            if let Err(errno) = nix::unistd::write(&go, b"g") {
                self.kill();
                return Err(LaunchError::Release {
                    program: self.name.clone(),
                    source: errno.into(),
                });
            }
        }
        let Some(report) = self.exec_report.take() else {
            return Ok(());
        };
        match read_child_report(&report) {
            None => Ok(()),
            Some((stage, errno)) => {
                self.kill();
                let program = self.name.clone();
                Err(match stage {
                    STAGE_EXEC => LaunchError::Exec { program, errno },
                    _ => LaunchError::ChildSetup { program, errno },
                })
            }
        }
    }

    /// Reads what the output pipe holds, waiting up to `max_wait` for the
    /// first bytes (sleeps `max_wait` once the pipe is closed). Returns the
    /// number of bytes read.
    pub fn pump(&mut self, max_wait: Duration) -> usize {
        let Some(fd) = self.output.as_ref() else {
            if !max_wait.is_zero() {
                std::thread::sleep(max_wait);
            }
            return 0;
        };
        let millis = max_wait.as_millis().min(60_000) as u16;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
        self.drain()
    }

    /// Reads until the pipe is empty (non-blocking); closes it at EOF.
    fn drain(&mut self) -> usize {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0;
        while let Some(fd) = self.output.as_ref() {
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => self.output = None,
                Ok(n) => {
                    total += n;
                    self.absorb(&buf[..n]);
                }
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        total
    }

    fn absorb(&mut self, chunk: &[u8]) {
        let keep = chunk.len().min(self.tail_bytes);
        let overflow = (self.tail.len() + keep).saturating_sub(self.tail_bytes);
        self.tail.drain(..overflow);
        self.tail.extend(&chunk[chunk.len() - keep..]);
        if let Some(file) = self.file.as_mut() {
            if let Err(err) = file.write_all(chunk) {
                tracing::warn!("{}: writing its output file: {err}", self.name.display());
                self.file = None;
            }
        }
        if let Some(captured) = self.captured.as_mut() {
            captured.extend_from_slice(chunk);
        }
    }

    /// True once every writer of the output pipe has closed it.
    pub fn output_closed(&self) -> bool {
        self.output.is_none()
    }

    /// Output read since the last call (only with [`Launch::capture`]).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.captured
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The last output bytes (at most [`Launch::tail_bytes`]).
    pub fn tail(&self) -> Vec<u8> {
        self.tail.iter().copied().collect()
    }

    /// [`tail`](Self::tail) as text (invalid UTF-8 replaced).
    pub fn tail_text(&self) -> String {
        String::from_utf8_lossy(&self.tail()).into_owned()
    }

    /// How it ended, once reaped.
    pub fn exit(&self) -> Option<Exit> {
        self.exit
    }

    /// Drains output, then reaps the child if it has ended. A held child
    /// is never reported as ended.
    pub fn try_wait(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            self.pump(Duration::ZERO);
            self.reap(WaitPidFlag::WNOHANG);
        }
        self.exit
    }

    /// Pumps output until the child ends or `deadline` passes.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<Exit> {
        loop {
            if let Some(exit) = self.try_wait() {
                return Some(exit);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.pump((deadline - now).min(Duration::from_millis(20)));
        }
    }

    /// Sends `signal` to the child's process group.
    pub fn signal_group(&self, signal: Signal) -> nix::Result<()> {
        killpg(self.pid, signal)
    }

    /// Ends the program: `signal` (a raw number, e.g. `libc::SIGTERM`) to
    /// its group, up to `grace` for it to exit (output pumped meanwhile),
    /// then SIGKILL to the group; reaps it and reads the output that is
    /// left. A program that already ended is only reaped. Members of the
    /// group outliving the program are SIGKILLed too.
    pub fn stop(&mut self, signal: i32, grace: Duration) -> Exit {
        if self.exit.is_none() && !self.is_held() {
            if let Ok(signal) = Signal::try_from(signal) {
                let _ = killpg(self.pid, signal);
            }
            let _ = self.wait_until(Instant::now() + grace);
        }
        self.kill()
    }

    /// SIGKILLs the group (a held child too) and reaps; reads the output
    /// that is left for a moment.
    pub fn kill(&mut self) -> Exit {
        // The group may outlive its reaped leader; the pid alone may not be
        // signalled once reaped (it could belong to someone else by now).
        let _ = killpg(self.pid, Signal::SIGKILL);
        if self.exit.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
        self.go = None;
        self.exec_report = None;
        if self.exit.is_none() {
            self.reap(WaitPidFlag::empty());
        }
        let end = Instant::now() + FINAL_DRAIN;
        while self.output.is_some() && Instant::now() < end {
            self.pump(Duration::from_millis(10));
        }
        self.output = None;
        self.exit.unwrap_or(Exit::Signaled(libc::SIGKILL))
    }

    fn reap(&mut self, flags: WaitPidFlag) {
        loop {
            match waitpid(self.pid, Some(flags)) {
                Err(Errno::EINTR) => continue,
                Ok(WaitStatus::Exited(_, code)) => self.exit = Some(Exit::Exited(code)),
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    self.exit = Some(Exit::Signaled(signal as i32))
                }
                Ok(_) => {}
                Err(errno) => {
                    // Not our child any more (reaped elsewhere): it ended.
                    tracing::warn!("{}: waitpid: {errno}", self.name.display());
                    self.exit = Some(Exit::Exited(-1));
                }
            }
            return;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = killpg(self.pid, Signal::SIGKILL);
            let _ = kill(self.pid, Signal::SIGKILL);
            self.go = None;
            self.reap(WaitPidFlag::empty());
        }
    }
}

/// Stages the child reports over the exec-report pipe.
const STAGE_EXEC: i32 = 1;
const STAGE_STREAMS: i32 = 2;

/// Reads the child's (stage, errno) record; `None` at EOF without one
/// (the exec succeeded, or the function body started).
fn read_child_report(fd: &OwnedFd) -> Option<(i32, Errno)> {
    let mut record = [0u8; 8];
    let mut got = 0;
    while got < record.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut record[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if got < record.len() {
        return None;
    }
    let stage = i32::from_ne_bytes(record[..4].try_into().unwrap());
    let errno = i32::from_ne_bytes(record[4..].try_into().unwrap());
    Some((stage, Errno::from_raw(errno)))
}

/// Everything the child touches, prepared before the fork so that the
/// child only makes async-signal-safe calls.
struct ChildPlan {
    program: Option<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    /// `KEY=prefix` plus room for the pid's digits and the NUL.
    own_pid_entry: Option<(Vec<u8>, usize)>,
    go_read: OwnedFd,
    report_write: OwnedFd,
    out_write: OwnedFd,
    dev_null: OwnedFd,
    private_shm: bool,
}

fn cstring(bytes: &OsStr) -> Result<CString, LaunchError> {
    CString::new(bytes.as_bytes()).map_err(|_| LaunchError::Nul(bytes.to_os_string()))
}

fn env_entry(key: &OsStr, value: &OsStr) -> Vec<u8> {
    let mut entry = key.as_bytes().to_vec();
    entry.push(b'=');
    entry.extend_from_slice(value.as_bytes());
    entry
}

impl ChildPlan {
    fn new(
        launch: &Launch,
        go_read: OwnedFd,
        report_write: OwnedFd,
        out_write: OwnedFd,
    ) -> Result<ChildPlan, LaunchError> {
        let program = match &launch.body {
            Body::Exec(path) => Some(cstring(path.as_os_str())?),
            Body::Function(_) => None,
        };
        let mut argv = vec![cstring(&launch.argv0)?];
        for arg in &launch.args {
            argv.push(cstring(arg)?);
        }
        let replaced = |key: &OsStr| {
            launch.env_remove.iter().any(|k| k == key)
                || launch.env_set.iter().any(|(k, _)| k == key)
                || launch.env_own_pid.as_ref().is_some_and(|(k, _)| k == key)
        };
        let mut env = Vec::new();
        for (key, value) in std::env::vars_os().filter(|(k, _)| !replaced(k)) {
            env.push(cstring(OsStr::from_bytes(&env_entry(&key, &value)))?);
        }
        for (key, value) in &launch.env_set {
            env.push(cstring(OsStr::from_bytes(&env_entry(key, value)))?);
        }
        let own_pid_entry = launch.env_own_pid.as_ref().map(|(key, prefix)| {
            let mut entry = env_entry(key, prefix);
            let digits_at = entry.len();
            entry.extend_from_slice(&[0u8; 24]);
            (entry, digits_at)
        });
        let dev_null = nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(setup_error("opening /dev/null"))?;
        Ok(ChildPlan {
            program,
            argv,
            env,
            own_pid_entry,
            go_read,
            report_write,
            out_write,
            // SAFETY: `open` just returned this descriptor; nothing else owns it.
            dev_null: unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dev_null) },
            private_shm: launch.private_shm,
        })
    }
}

/// The output pipe: (read end, write end). The parent reads without
/// blocking (its owner polls); the child's write end stays blocking.
fn output_pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup_error("output pipe"))?;
    let flags = OFlag::from_bits_truncate(
        fcntl(read.as_raw_fd(), FcntlArg::F_GETFL).map_err(setup_error("output pipe"))?,
    );
    fcntl(
        read.as_raw_fd(),
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )
    .map_err(setup_error("output pipe"))?;
    // Best effort: slack for a program that writes while its owner is busy.
    let _ = fcntl(read.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    Ok((read, write))
}

/// Forks the child, which stops before exec until released.
fn spawn_held(launch: Launch) -> Result<Supervised, LaunchError> {
    let (out_read, out_write) = output_pipe()?;
    let (report_read, report_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup_error("exec-report pipe"))?;
    let (go_read, go_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(setup_error("start pipe"))?;
    let file = match &launch.output_file {
        Some(path) => Some(File::create(path).map_err(|source| LaunchError::Setup {
            what: "creating the output file",
            source,
        })?),
        None => None,
    };
    let mut plan = ChildPlan::new(&launch, go_read, report_write, out_write)?;
    let env_ptrs = pointer_array(
        &plan.env,
        plan.own_pid_entry.as_ref().map(|(e, _)| e.as_slice()),
    );
    let argv_ptrs = pointer_array(&plan.argv, None);
    let (tail_bytes, capture) = (launch.tail_bytes, launch.capture);
    let Launch { body, name, .. } = launch;

    // SAFETY: in the child, `run_child` makes async-signal-safe calls on
    // memory prepared above, then execs; a `Function` body runs Rust code,
    // which the caller allows by being single-threaded (documented on
    // `Launch::function`).
    match unsafe { fork_tied() }.map_err(setup_error("fork"))? {
        Forked::Child => {
            drop((go_write, out_read, report_read));
            run_child(&mut plan);
            match body {
                Body::Exec(_) => {
                    // SAFETY: NUL-terminated arrays of NUL-terminated
                    // strings that outlive the call.
                    unsafe {
                        libc::execve(
                            plan.program
                                .as_ref()
                                .map_or(std::ptr::null(), |p| p.as_ptr()),
                            argv_ptrs.as_ptr(),
                            env_ptrs.as_ptr(),
                        )
                    };
                    child_fail(plan.report_write.as_raw_fd(), STAGE_EXEC, Errno::last_raw())
                }
                Body::Function(function) => {
                    // Closing the report pipe tells the parent it started.
                    drop(plan.report_write);
                    exit_now(function())
                }
            }
        }
        Forked::Parent(pid) => {
            drop(plan);
            // Both sides set the group, so it exists whichever runs first.
            let _ = nix::unistd::setpgid(pid, pid);
            Ok(Supervised {
                pid,
                name,
                go: Some(go_write),
                exec_report: Some(report_read),
                output: Some(out_read),
                file,
                tail: VecDeque::with_capacity(tail_bytes.min(1 << 16)),
                tail_bytes,
                captured: capture.then(Vec::new),
                exit: None,
                started: Instant::now(),
            })
        }
    }
}

/// A NULL-terminated array of pointers to `strings` (and `extra`, a
/// NUL-terminated byte string) for execve.
fn pointer_array(strings: &[CString], extra: Option<&[u8]>) -> Vec<*const libc::c_char> {
    let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    if let Some(extra) = extra {
        ptrs.push(extra.as_ptr().cast());
    }
    ptrs.push(std::ptr::null());
    ptrs
}

/// In the child: own group, the start rendezvous, the pid in the
/// environment, the private /dev/shm, standard streams, signal state.
/// Async-signal-safe calls only, on memory prepared before the fork.
fn run_child(plan: &mut ChildPlan) {
    let report = plan.report_write.as_raw_fd();
    // SAFETY: setpgid, read, getpid, unshare, mount, dup2, signal and
    // sigprocmask are async-signal-safe system calls; the pointers refer to
    // memory prepared before the fork that the child still owns.
    unsafe {
        libc::setpgid(0, 0);
        let mut go = 0u8;
        if libc::read(plan.go_read.as_raw_fd(), (&mut go as *mut u8).cast(), 1) != 1 {
            // The parent died or gave up: never run unplaced.
            exit_now(126);
        }
        if let Some((entry, digits_at)) = plan.own_pid_entry.as_mut() {
            write_decimal(&mut entry[*digits_at..], libc::getpid() as u64);
        }
        if plan.private_shm {
            private_dev_shm();
        }
        let null = plan.dev_null.as_raw_fd();
        let out: RawFd = plan.out_write.as_raw_fd();
        if libc::dup2(null, 0) < 0 || libc::dup2(out, 1) < 0 || libc::dup2(out, 2) < 0 {
            child_fail(report, STAGE_STREAMS, Errno::last_raw());
        }
        // A Rust parent ignores SIGPIPE and may block signals; the program
        // gets the defaults.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// In the child: a new mount namespace whose /dev/shm is a fresh tmpfs.
/// Mount events are made private first, so the tmpfs never shows outside.
/// Any failure leaves the shared /dev/shm in place.
///
/// # Safety
/// Async-signal-safe system calls with static strings only.
unsafe fn private_dev_shm() {
    // SAFETY: see the function's contract.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return;
        }
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            private,
            std::ptr::null(),
        ) != 0
        {
            return;
        }
        libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev/shm".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=1777".as_ptr().cast(),
        );
    }
}

/// Writes `value`'s decimal digits and a NUL into `out` without
/// allocating. Returns the number of digits.
pub(crate) fn write_decimal(out: &mut [u8], mut value: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        value /= 10;
        n += 1;
        if value == 0 {
            break;
        }
    }
    let n = n.min(out.len().saturating_sub(1));
    for i in 0..n {
        out[i] = digits[n - 1 - i];
    }
    out[n] = 0;
    n
}

/// In the child: reports (stage, errno) to the parent and exits 127.
fn child_fail(report: RawFd, stage: i32, errno: i32) -> ! {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&stage.to_ne_bytes());
    record[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write is async-signal-safe; the buffer lives on the stack.
    unsafe { libc::write(report, record.as_ptr().cast(), record.len()) };
    exit_now(127)
}
