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

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::ptrace::{self, Event as PtraceEvent, Options};
use nix::sys::signal::{self, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

use super::breakpoints::{AddressSpace, Hit, SpaceId};
use super::contain::Containment;
use super::coverage::Coverage;
use super::lines::{ImageLines, SourceFilter};
use super::model::{
    signal_name, Crash, Event, EventKind, ExecRecord, ExitStatus, Origin, ProcessRecord,
};
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
    /// Its argv (argv[0] as the user wrote it).
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

    /// The event loop: drain every wait status, then sleep until SIGCHLD or
    /// an interrupting signal (with a timeout as a safety net).
    fn run(&mut self, signals: &SignalFd) -> Result<()> {
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

    fn handle(&mut self, report: WaitReport) -> Result<()> {
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
    fn resume(&mut self, pid: Pid, signal: i32) -> Result<()> {
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

    /// Holds a task that stopped before its creator's event, with a copy
    /// of its probable creator's breakpoint table.
    fn hold_unclaimed(&mut self, report: WaitReport) -> Result<()> {
        let pid = report.pid();
        tracing::debug!("pid {pid} stopped before its creator's event");
        if self.killing {
            let _ = signal::kill(pid, Signal::SIGKILL);
        }
        let creator = match proc_ids(pid) {
            Some((tgid, _)) if tgid != pid => Some(tgid),
            Some((_, parent)) => Some(parent),
            None => None,
        }
        .filter(|c| self.live.contains_key(c));
        let creator_task = creator.and_then(|c| {
            self.tasks
                .iter()
                .find(|(_, t)| t.tgid == c && t.space.is_some())
                .map(|(p, t)| (*p, t.space))
        });
        let space = match creator_task {
            Some((creator_pid, Some(id))) => {
                if sys::same_address_space(creator_pid, pid) == Some(true) {
                    Some(id)
                } else {
                    let copy = self.spaces.get(&id).cloned().unwrap_or_default();
                    let new_id = self.next_space;
                    self.next_space += 1;
                    self.spaces.insert(new_id, copy);
                    Some(new_id)
                }
            }
            _ => None,
        };
        self.unclaimed.insert(
            pid,
            Unclaimed {
                report,
                creator,
                space,
            },
        );
        if creator.is_none() {
            // No traced creator will ever report it.
            self.adopt_orphans()?;
        }
        Ok(())
    }

    /// Starts unclaimed tasks whose creator is no longer traced: it died
    /// between the fork and its event (SIGKILL), so the event never comes.
    fn adopt_orphans(&mut self) -> Result<()> {
        let orphans: Vec<Pid> = self
            .unclaimed
            .iter()
            .filter(|(_, u)| u.creator.is_none_or(|c| !self.live.contains_key(&c)))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in orphans {
            let Some(unclaimed) = self.unclaimed.remove(&pid) else {
                continue;
            };
            tracing::debug!("pid {pid}: its creator is gone, adopting it");
            let creator_record = unclaimed
                .creator
                .and_then(|c| self.processes.iter().rposition(|p| p.pid == c.as_raw()));
            let program = match creator_record {
                Some(i) => self.program_of(i),
                None => (read_cmdline(pid), String::new(), false),
            };
            let start = self.now();
            self.add_process(ProcessRecord::started(
                pid.as_raw(),
                unclaimed.creator.map(Pid::as_raw),
                Origin::Fork,
                program,
                start,
            ));
            self.event(
                unclaimed.creator.unwrap_or(pid),
                EventKind::Fork {
                    child: pid.as_raw(),
                },
            );
            self.tasks.insert(pid, Task::new(pid, unclaimed.space));
            self.handle(unclaimed.report)?;
        }
        Ok(())
    }

    /// A creator's fork/vfork/clone event: record the new task, then start it
    /// if its initial stop already arrived.
    fn new_task(&mut self, parent: Pid, child: Pid, origin: Origin) -> Result<()> {
        let Some(parent_task) = self.tasks.get(&parent) else {
            return Ok(());
        };
        let parent_tgid = parent_task.tgid;
        if self.tasks.contains_key(&child) {
            // Adopted early (its /proc parent was not its creator, as with
            // CLONE_PARENT): only the record's parent needs fixing.
            if let Some(process) = self.process_mut(child) {
                process.parent = Some(parent_tgid.as_raw());
            }
            return Ok(());
        }
        let parent_space = parent_task.space;
        let is_thread = origin == Origin::Clone && thread_group_of(child) == Some(parent_tgid);
        let shares_memory =
            sys::same_address_space(parent, child).unwrap_or(is_thread || origin == Origin::Vfork);
        let space = self.space_for_child(parent_space, shares_memory);
        if is_thread {
            self.tasks.insert(child, Task::new(parent_tgid, space));
            self.start_thread(parent_tgid, child);
        } else {
            self.tasks.insert(child, Task::new(child, space));
            // clone(CLONE_VM | SIGCHLD) is reported as a fork event: call a
            // process that shares its creator's memory a clone.
            let origin = if origin == Origin::Fork && shares_memory {
                Origin::Clone
            } else {
                origin
            };
            self.start_process(parent_tgid, child, origin);
        }
        if self.killing {
            let _ = signal::kill(child, Signal::SIGKILL);
        }
        if let Some(unclaimed) = self.unclaimed.remove(&child) {
            self.handle(unclaimed.report)?;
        }
        Ok(())
    }

    /// The address space of a new task: its creator's when they share
    /// memory, else a copy of it (breakpoints included).
    fn space_for_child(
        &mut self,
        parent_space: Option<SpaceId>,
        shares_memory: bool,
    ) -> Option<SpaceId> {
        match parent_space {
            Some(id) if !shares_memory => {
                let copy = self.spaces.get(&id).cloned().unwrap_or_default();
                let new_id = self.next_space;
                self.next_space += 1;
                self.spaces.insert(new_id, copy);
                Some(new_id)
            }
            other => other,
        }
    }

    /// A new thread of `tgid`: counted in its process and in the timeline.
    fn start_thread(&mut self, tgid: Pid, tid: Pid) {
        if let Some(process) = self.process_mut(tgid) {
            process.threads_live += 1;
            process.threads_total += 1;
            process.threads_max = process.threads_max.max(process.threads_live);
        }
        self.event(tgid, EventKind::Thread { tid: tid.as_raw() });
    }

    /// A new process created by `parent_tgid`: it starts with its
    /// creator's program.
    fn start_process(&mut self, parent_tgid: Pid, child: Pid, origin: Origin) {
        let program = match self.live.get(&parent_tgid) {
            Some(&i) => self.program_of(i),
            None => (Vec::new(), String::new(), false),
        };
        let start = self.now();
        self.add_process(ProcessRecord::started(
            child.as_raw(),
            Some(parent_tgid.as_raw()),
            origin,
            program,
            start,
        ));
        let child = child.as_raw();
        let kind = match origin {
            Origin::Fork => EventKind::Fork { child },
            Origin::Vfork => EventKind::Vfork { child },
            _ => EventKind::Clone { child },
        };
        self.event(parent_tgid, kind);
    }

    /// The program record `index` runs now: (argv, exe, execd), what a
    /// process it forks starts with.
    fn program_of(&self, index: usize) -> (Vec<String>, String, bool) {
        let p = &self.processes[index];
        (
            p.current_command().to_vec(),
            p.current_exe().to_string(),
            p.execd,
        )
    }

    /// Records a new live process.
    fn add_process(&mut self, record: ProcessRecord) {
        self.live
            .insert(Pid::from_raw(record.pid), self.processes.len());
        self.processes.push(record);
    }

    /// PTRACE_EVENT_EXEC at `pid` (the thread group id), called by `former`.
    fn exec(&mut self, pid: Pid, former: Pid) -> Result<()> {
        let tgid = self.tasks.get(&pid).map(|t| t.tgid).unwrap_or(pid);
        if former != pid {
            // The execing thread took over the leader's pid.
            self.tasks.remove(&former);
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        // The root's first exec is the traced program starting, not an exec
        // of the process tree.
        let initial = pid == self.root && !self.root_exec_seen;
        self.root_exec_seen |= pid == self.root;
        self.record_exec(pid, tgid, former, initial, &exe);
        let space = self.fresh_space(pid, tgid);

        if !initial && !self.config.follow_exec && !self.detaching {
            return self.detach_unfollowed(pid, tgid, &exe);
        }
        if self.coverage.is_some() && !self.killing {
            // Breakpoints already inserted stay consistent on failure: the
            // program runs on with partial coverage of this executable.
            if let Err(err) = self.instrument(pid, space, Path::new(&exe)) {
                tracing::warn!("coverage of {exe} in pid {pid} is incomplete: {err:#}");
            }
        }
        self.resume(pid, 0)
    }

    /// Notes the exec in the process record and, unless it is the initial
    /// one, as an event of the timeline.
    fn record_exec(&mut self, pid: Pid, tgid: Pid, former: Pid, initial: bool, exe: &str) {
        let command = read_cmdline(pid);
        let live_threads = self
            .tasks
            .values()
            .filter(|t| t.tgid == tgid)
            .count()
            .max(1);
        let now = self.now();
        if let Some(process) = self.process_mut(tgid) {
            process.threads_live = live_threads;
            if initial {
                process.exe = exe.to_string();
            } else {
                process.execs.push(ExecRecord {
                    time: now,
                    exe: exe.to_string(),
                    command: command.clone(),
                });
                process.execd = true;
            }
        }
        if !initial {
            self.event(
                tgid,
                EventKind::Exec {
                    exe: exe.to_string(),
                    command,
                    from_tid: (former != pid).then_some(former.as_raw()),
                },
            );
        }
    }

    /// Gives `pid` a fresh address space with no breakpoints (an exec
    /// replaced its memory) and drops spaces no task uses any more.
    fn fresh_space(&mut self, pid: Pid, tgid: Pid) -> SpaceId {
        let space = self.next_space;
        self.next_space += 1;
        self.spaces.insert(space, AddressSpace::default());
        if let Some(task) = self.tasks.get_mut(&pid) {
            task.space = Some(space);
        } else {
            self.tasks.insert(pid, Task::new(tgid, Some(space)));
        }
        self.collect_spaces();
        space
    }

    /// Lets a process that exec'd go untraced (exec is not followed).
    fn detach_unfollowed(&mut self, pid: Pid, tgid: Pid, exe: &str) -> Result<()> {
        let reason = format!("exec'd {exe} (not following exec)");
        self.event(
            tgid,
            EventKind::Detach {
                reason: reason.clone(),
            },
        );
        if let Some(process) = self.process_mut(tgid) {
            process.detached = Some(reason);
        }
        self.live.remove(&tgid);
        self.tasks.remove(&pid);
        self.collect_spaces();
        // The process keeps running untraced; its other threads are
        // dying and still report to us.
        match sys::detach(pid, 0) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e).context("PTRACE_DETACH"),
        }
    }

    /// Puts breakpoints on every line address of `exe` in the fresh address
    /// space of `pid` (stopped at its exec, single-threaded).
    fn instrument(&mut self, pid: Pid, space: SpaceId, exe: &Path) -> Result<()> {
        let Some(coverage) = self.coverage.as_mut() else {
            return Ok(());
        };
        let image_index = match coverage.image_for(exe) {
            Ok(Some(index)) => index,
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::warn!("no coverage for {}: {err:#}", exe.display());
                return Ok(());
            }
        };
        let image = &coverage.images[image_index];
        let bias = if image.position_independent {
            load_bias(pid, exe, image.first_segment_vaddr).with_context(|| {
                format!("finding where {} is mapped in pid {pid}", exe.display())
            })?
        } else {
            0
        };
        // Lines an earlier process already ran need no breakpoint here.
        let sites: Vec<(u64, usize, u64)> = image
            .sites
            .keys()
            .filter(|&&link| coverage.site_pending(image_index, link))
            .map(|&link| (link.wrapping_add(bias), image_index, link))
            .collect();
        let table = self.spaces.entry(space).or_default();
        let count = table
            .insert_all(pid, sites)
            .with_context(|| format!("inserting breakpoints into pid {pid}"))?;
        let tgid = self.tasks.get(&pid).map(|t| t.tgid).unwrap_or(pid);
        self.event(
            tgid,
            EventKind::Breakpoints {
                exe: exe.display().to_string(),
                count,
            },
        );
        Ok(())
    }

    /// A signal-delivery-stop: a breakpoint hit, or a signal to forward.
    fn signal_stop(&mut self, pid: Pid, sig: i32) -> Result<()> {
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

    /// A task's death report.
    fn task_gone(&mut self, pid: Pid, status: ExitStatus) -> Result<()> {
        if pid == self.root {
            self.root_reaped = true;
        }
        self.unclaimed.remove(&pid);
        let Some(task) = self.tasks.remove(&pid) else {
            // Our own child after runq detached from it: still its end.
            if pid == self.root {
                let now = self.now();
                let process = &mut self.processes[0];
                process.end = Some(now);
                process.status = Some(status);
                self.live.remove(&pid);
            }
            return Ok(());
        };
        let now = self.now();
        if pid == task.tgid {
            let crash = match status {
                ExitStatus::Signaled { number, .. } => {
                    task.last_fault.filter(|c| c.signal == signal_name(number))
                }
                _ => None,
            };
            if let Some(index) = self.live.remove(&pid) {
                let process = &mut self.processes[index];
                process.end = Some(now);
                process.status = Some(status);
                process.threads_live = 0;
                process.crash = crash;
            }
            self.event(pid, EventKind::Exit { status });
            if !self.unclaimed.is_empty() {
                self.adopt_orphans()?;
            }
        } else {
            if let Some(process) = self.process_mut(task.tgid) {
                process.threads_live = process.threads_live.saturating_sub(1);
            }
            self.event(
                task.tgid,
                EventKind::ThreadExit {
                    tid: pid.as_raw(),
                    status,
                },
            );
        }
        self.collect_spaces();
        Ok(())
    }

    /// Drops breakpoint tables no task uses any more.
    fn collect_spaces(&mut self) {
        let used: std::collections::HashSet<SpaceId> = self
            .tasks
            .values()
            .filter_map(|t| t.space)
            .chain(self.unclaimed.values().filter_map(|u| u.space))
            .collect();
        self.spaces.retain(|id, _| used.contains(id));
    }

    /// runq got SIGINT/SIGTERM/SIGHUP.
    fn interrupt(&mut self, sig: Signal) {
        let repeated = self.interrupted_by.is_some();
        self.interrupted_by.get_or_insert(sig);
        if self.config.on_interrupt == InterruptAction::Detach && !repeated {
            self.detaching = true;
            let pids: Vec<Pid> = self.tasks.keys().copied().collect();
            for pid in pids {
                // Tasks already stopped here are held as their stop is handled.
                let _ = ptrace::interrupt(pid);
            }
            // Tasks stopped before their creator's event are already stopped.
            let unclaimed: Vec<Pid> = self.unclaimed.keys().copied().collect();
            for pid in unclaimed {
                let Some(held) = self.unclaimed.remove(&pid) else {
                    continue;
                };
                let tgid = thread_group_of(pid).unwrap_or(pid);
                let task = Task {
                    held: Some(0),
                    ..Task::new(tgid, held.space)
                };
                self.tasks.insert(pid, task);
            }
        } else {
            self.detaching = false;
            self.kill_everything();
        }
    }

    fn kill_everything(&mut self) {
        self.killing = true;
        for pid in self.tasks.keys().chain(self.unclaimed.keys()) {
            let _ = signal::kill(*pid, Signal::SIGKILL);
        }
        // Programs runq detached from are only reachable through the cgroup.
        self.containment.sweep();
    }

    /// After [`Self::kill_everything`] on an error: collect the death
    /// reports, for at most `limit`.
    fn reap_after_kill(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !(self.tasks.is_empty() && self.unclaimed.is_empty()) {
            match sys::wait_any_nohang() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Ok(Some(WaitReport::Exited(pid, _)))
                | Ok(Some(WaitReport::Signaled(pid, _, _))) => {
                    self.tasks.remove(&pid);
                    self.unclaimed.remove(&pid);
                }
                Ok(Some(report)) => {
                    // Stopped on the way out: let the SIGKILL act.
                    let _ = sys::cont(report.pid(), 0);
                }
                Err(Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    fn all_held(&self) -> bool {
        self.unclaimed.is_empty() && self.tasks.values().all(|t| t.held.is_some())
    }

    /// Every task is stopped: restore all original bytes, then let go.
    fn detach_all(&mut self) -> Result<()> {
        let mut restored = std::collections::HashSet::new();
        let tasks: Vec<(Pid, Option<SpaceId>, i32)> = self
            .tasks
            .iter()
            .map(|(pid, t)| (*pid, t.space, t.held.unwrap_or(0)))
            .collect();
        for &(pid, space, _) in &tasks {
            if let Some(space) = space {
                if restored.insert(space) {
                    if let Some(table) = self.spaces.get_mut(&space) {
                        if let Err(err) = table.remove_all(pid) {
                            tracing::warn!("restoring code of pid {pid}: {err:#}");
                        }
                    }
                }
            }
        }
        for (pid, _, signal) in tasks {
            let tgid = self.tasks.get(&pid).map(|t| t.tgid).unwrap_or(pid);
            let _ = sys::detach(pid, signal);
            if pid == tgid {
                let reason = "runq was interrupted".to_string();
                if let Some(process) = self.process_mut(tgid) {
                    process.detached = Some(reason.clone());
                }
                self.event(tgid, EventKind::Detach { reason });
            }
        }
        self.tasks.clear();
        self.spaces.clear();
        Ok(())
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

/// The thread group a task belongs to, from /proc.
fn thread_group_of(tid: Pid) -> Option<Pid> {
    proc_ids(tid).map(|(tgid, _)| tgid)
}

/// (thread group id, parent pid) of a task, from /proc/TID/status.
fn proc_ids(tid: Pid) -> Option<(Pid, Pid)> {
    let (tgid, ppid) = crate::process::proc::ids(tid.as_raw())?;
    Some((Pid::from_raw(tgid), Pid::from_raw(ppid)))
}

fn read_cmdline(pid: Pid) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One line of /proc/PID/maps.
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

fn read_maps(pid: Pid) -> Result<Vec<Mapping>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let _perms = fields.next()?;
            let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
            let _dev = fields.next()?;
            let _inode = fields.next()?;
            let path = fields.collect::<Vec<_>>().join(" ");
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset,
                path: path.trim_end_matches(" (deleted)").to_string(),
            })
        })
        .collect())
}

/// Run-time address minus link-time address of a position-independent
/// executable: where its first segment (file offset 0) is mapped.
fn load_bias(pid: Pid, exe: &Path, first_segment_vaddr: u64) -> Result<u64> {
    let exe = exe.display().to_string();
    let mapping = read_maps(pid)?
        .into_iter()
        .find(|m| m.path == exe && m.offset == 0)
        .with_context(|| format!("{exe} is not mapped at offset 0"))?;
    Ok(mapping.start.wrapping_sub(first_segment_vaddr))
}

/// "file:line" of an instruction address of a stopped task, or
/// "object+offset" when the object has no line information.
fn locate(pid: Pid, ip: u64) -> Option<String> {
    let maps = read_maps(pid).ok()?;
    let mapping = maps
        .iter()
        .find(|m| ip >= m.start && ip < m.end && m.path.starts_with('/'))?;
    let base = maps
        .iter()
        .filter(|m| m.path == mapping.path)
        .map(|m| m.start.wrapping_sub(m.offset))
        .min()?;
    let relative = ip.wrapping_sub(base);
    let fallback = format!("{}+{relative:#x}", mapping.path);
    let Ok(loader) = addr2line::Loader::new(&mapping.path) else {
        return Some(fallback);
    };
    // Object-relative to link-time address: add the first segment's vaddr.
    let probe = relative.wrapping_add(loader.relative_address_base());
    match loader.find_location(probe) {
        Ok(Some(location)) => match (location.file, location.line) {
            (Some(file), Some(line)) => Some(format!("{file}:{line}")),
            _ => Some(fallback),
        },
        _ => Some(fallback),
    }
}
