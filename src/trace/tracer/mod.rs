//! The ptrace event loop and the state machine of traced tasks.
//!
//! Orderings Linux produces that the state machine handles:
//! - a new task's initial stop may arrive before its creator's
//!   PTRACE_EVENT_FORK/VFORK/CLONE: the task is held stopped, unclaimed,
//!   until that event tells who created it (its breakpoint table must be
//!   known before it runs);
//! - execve by a non-leader thread: the exec event arrives with the leader's
//!   pid, the old leader vanishes without a death report, and the execing
//!   thread's old tid is gone;
//! - a leader's death is reported only after its other threads are gone;
//! - the root may exit while descendants live on: the trace ends when every
//!   traced task is gone.
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`trace`] and its request and result types; the tracer's state (tasks, processes, address spaces, timeline) |
//! | `events.rs` | the event loop: wait statuses and signals in, dispatch of ptrace stops and events, resuming |
//! | `tasks.rs` | new tasks: a creator's fork/vfork/clone event, tasks stopped before it (held, or adopted when the creator died), process records |
//! | `exec.rs` | an exec: its record, a fresh address space, detaching when exec is not followed, coverage breakpoints |
//! | `stops.rs` | signal-delivery stops: breakpoint hits, faults to describe, signals to forward |
//! | `ending.rs` | deaths, and the end on SIGINT/SIGTERM/SIGHUP: kill and reap, or restore the code and detach |
//! | `procfs.rs` | what the tracer reads from /proc: thread groups, command lines, mappings, fault locations |
//!
//! The `Tracer` is declared here, above the files that implement its parts,
//! so its fields stay private to this folder.

mod ending;
mod events;
mod exec;
mod procfs;
mod stops;
mod tasks;

use std::collections::HashMap;
use std::ffi::CString;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::ptrace::Options;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use super::breakpoints::{AddressSpace, SpaceId};
use super::contain::Containment;
use super::coverage::Coverage;
use super::lines::{ImageLines, SourceFilter};
use super::model::{Crash, Event, EventKind, ExitStatus, Origin, ProcessRecord};
use super::sys::{self, WaitReport};

/// What runq does with the tree when it gets SIGINT, SIGTERM or SIGHUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptAction {
    /// SIGKILL every traced process and reap it.
    Kill,
    /// Remove all breakpoints and let the processes run on untraced.
    Detach,
}

/// A trace request.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The executable to launch (already resolved against PATH).
    pub program: PathBuf,
    /// Its argv (`argv[0]` as the user wrote it).
    pub argv: Vec<String>,
    /// Keep following processes after they exec another program (and cover
    /// the new program). Otherwise runq detaches from them at the exec.
    pub follow_exec: bool,
    /// Measure line coverage of the executables, keeping these sources.
    pub coverage: Option<SourceFilter>,
    /// The line table of `program`, if the caller already read it with the
    /// same filter (it is then not read again).
    pub program_lines: Option<ImageLines>,
    pub on_interrupt: InterruptAction,
    /// Contain the traced tree in its own cgroup root with a guard (see
    /// `contain.rs`). Off when the caller already holds the tree in its
    /// own cgroups and kills it there (a traced payload stays in its
    /// scenario cgroup).
    pub contain: bool,
}

/// Everything a finished trace knows.
#[derive(Debug)]
pub struct TraceOutcome {
    pub started_unix_ms: u128,
    pub duration: f64,
    pub processes: Vec<ProcessRecord>,
    pub events: Vec<Event>,
    /// The root's end, `None` if runq detached from it before it ended.
    pub root_status: Option<ExitStatus>,
    pub coverage: Option<Coverage>,
    /// The signal that interrupted runq, if one did.
    pub interrupted_by: Option<Signal>,
}

/// One traced thread.
#[derive(Debug)]
struct Task {
    tgid: Pid,
    space: Option<SpaceId>,
    /// Fault info of the last fatal-looking signal delivered to it.
    last_fault: Option<Crash>,
    /// Held stopped while detaching: the signal to deliver at detach.
    held: Option<i32>,
}

impl Task {
    /// A task of thread group `tgid` with nothing pending.
    fn new(tgid: Pid, space: Option<SpaceId>) -> Self {
        Task {
            tgid,
            space,
            last_fault: None,
            held: None,
        }
    }
}

/// A task whose initial stop came before its creator's fork/clone event.
#[derive(Debug)]
struct Unclaimed {
    report: WaitReport,
    /// The process that probably created it (from /proc), if traced.
    creator: Option<Pid>,
    /// Its breakpoint table, taken from that creator when it stopped: the
    /// creator runs no code of its own between the fork and its event, so
    /// the table matches the int3 bytes the task's memory holds.
    space: Option<SpaceId>,
}

/// Runs `config` to completion.
pub fn trace(config: &TraceConfig) -> Result<TraceOutcome> {
    let argv: Vec<CString> = config
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            crate::error::RunqError::bad_input("command arguments must not contain NUL bytes")
        })?;
    let program = CString::new(config.program.as_os_str().as_encoded_bytes()).map_err(|_| {
        crate::error::RunqError::bad_input("command path must not contain NUL bytes")
    })?;

    let mut watched = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
    ] {
        watched.add(s);
    }
    let containment = if config.contain {
        Containment::start()
    } else {
        Containment::none()
    };
    let old_mask = sys::block_signals(&watched)?;
    let result = (|| {
        let signals =
            SignalFd::with_flags(&watched, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
                .context("creating a signalfd")?;
        let options = Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_TRACEVFORK
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEEXEC
            | Options::PTRACE_O_TRACEEXIT
            | Options::PTRACE_O_EXITKILL;
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let launched = sys::launch_seized(&program, &argv, options, &old_mask, &|pid| {
            containment.place(pid)
        })?;
        let mut tracer = Tracer::new(config, launched.pid, &containment);
        let run = tracer.run(&signals);
        if run.is_err() {
            // Leave nothing behind: kill the tree and reap what reports.
            tracer.kill_everything();
            tracer.reap_after_kill(Duration::from_secs(2));
        }
        if tracer.killing {
            // Detached members still starting up or forking: until none is left.
            containment.kill_all();
        }
        run?;
        if !tracer.root_exec_seen {
            if let Some(errno) = sys::read_exec_error(&launched.exec_error) {
                return Err(crate::error::RunqError::bad_input(format!(
                    "cannot execute {}: {}",
                    config.program.display(),
                    Errno::from_raw(errno).desc()
                )));
            }
        }
        Ok(tracer.finish(started_unix_ms))
    })();
    sys::restore_signals(&old_mask);
    containment.release();
    result
}

struct Tracer<'c> {
    config: &'c TraceConfig,
    containment: &'c Containment,
    start: Instant,
    root: Pid,
    root_exec_seen: bool,
    root_reaped: bool,
    tasks: HashMap<Pid, Task>,
    /// Tasks whose initial stop came before their creator's event.
    unclaimed: HashMap<Pid, Unclaimed>,
    processes: Vec<ProcessRecord>,
    /// Live thread group id -> index in `processes`.
    live: HashMap<Pid, usize>,
    spaces: HashMap<SpaceId, AddressSpace>,
    next_space: SpaceId,
    coverage: Option<Coverage>,
    events: Vec<Event>,
    interrupted_by: Option<Signal>,
    killing: bool,
    detaching: bool,
}

impl<'c> Tracer<'c> {
    fn new(config: &'c TraceConfig, root: Pid, containment: &'c Containment) -> Self {
        let mut tracer = Tracer {
            config,
            containment,
            start: Instant::now(),
            root,
            root_exec_seen: false,
            root_reaped: false,
            tasks: HashMap::new(),
            unclaimed: HashMap::new(),
            processes: Vec::new(),
            live: HashMap::new(),
            spaces: HashMap::new(),
            next_space: 0,
            coverage: config.coverage.clone().map(|filter| {
                let mut coverage = Coverage::new(filter);
                if let (Some(lines), Ok(exe)) =
                    (&config.program_lines, config.program.canonicalize())
                {
                    coverage.add_image(&exe, Some(lines.clone()));
                }
                coverage
            }),
            events: Vec::new(),
            interrupted_by: None,
            killing: false,
            detaching: false,
        };
        tracer.tasks.insert(root, Task::new(root, None));
        let program = (
            config.argv.clone(),
            config.program.display().to_string(),
            false,
        );
        tracer.add_process(ProcessRecord::started(
            root.as_raw(),
            None,
            Origin::Root,
            program,
            0.0,
        ));
        tracer.event(
            root,
            EventKind::Spawn {
                command: config.argv.clone(),
            },
        );
        tracer
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn event(&mut self, pid: Pid, kind: EventKind) {
        let time = self.now();
        self.events.push(Event {
            time,
            pid: pid.as_raw(),
            kind,
        });
    }

    fn process_mut(&mut self, tgid: Pid) -> Option<&mut ProcessRecord> {
        let index = *self.live.get(&tgid)?;
        self.processes.get_mut(index)
    }

    fn done(&self) -> bool {
        self.tasks.is_empty() && self.unclaimed.is_empty() && (self.root_reaped || self.detaching)
    }

    fn finish(self, started_unix_ms: u128) -> TraceOutcome {
        TraceOutcome {
            started_unix_ms,
            duration: self.now(),
            root_status: self.processes[0].status,
            processes: self.processes,
            events: self.events,
            coverage: self.coverage,
            interrupted_by: self.interrupted_by,
        }
    }
}
