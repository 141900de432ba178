//! [`PayloadHandle`]: a running payload and its event loop. [`tick`]
//! drains the output (feeding the metrics), samples the process tree and
//! reaps the program; the ways to end it ([`wait`], [`stop_and_collect`],
//! drop) all stop it gracefully (SIGTERM to its group, [`STOP_GRACE`], then
//! SIGKILL) and return the facts ([`PayloadReport`]) for the payload check
//! to judge.
//!
//! [`tick`]: PayloadHandle::tick
//! [`wait`]: PayloadHandle::wait
//! [`stop_and_collect`]: PayloadHandle::stop_and_collect

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::binary::resolve_binary;
use super::launch::{start, TracedTree};
use super::metrics::LineFeed;
use super::report::PayloadReport;
use super::spec::PayloadSpec;
use super::tree::Tree;
use crate::cgroup::CgroupBackend;
use crate::error::RunqError;
use crate::process::{self, Exit, Supervised};
use crate::workload::ready::{self, ReadyOutcome};
use crate::workload::ExitShape;

/// Time a stopped payload gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_millis(1500);
/// The default wait for a ready marker.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `cgroup.procs` files of cgroup `rel` in every hierarchy a backend
/// uses: what [`PayloadHandle::spawn`] takes.
pub fn cgroup_procs_files(backend: &dyn CgroupBackend, rel: &str) -> Vec<PathBuf> {
    backend
        .paths(rel)
        .into_iter()
        .map(|dir| dir.join("cgroup.procs"))
        .collect()
}

impl From<Exit> for ExitShape {
    fn from(exit: Exit) -> ExitShape {
        match exit {
            Exit::Exited(code) => ExitShape::Exited(code),
            Exit::Signaled(signal) => ExitShape::Signaled(signal),
        }
    }
}

/// A running payload. Dropping it stops the whole tree (gracefully, as
/// [`PayloadHandle::stop_and_collect`] does) and reaps it.
pub struct PayloadHandle {
    spec: PayloadSpec,
    /// The program (normal mode) or the tracing process (trace mode).
    process: Supervised,
    /// Trace mode: the tracing process writes its tree here as JSON.
    trace_channel: Option<OwnedFd>,
    trace_json: Vec<u8>,
    lines: LineFeed,
    tree: Tree,
    started: Instant,
    ready: Option<ReadyOutcome>,
    finished: bool,
    /// `tick` found it running past its timeout and stopped it.
    timed_out: bool,
    /// A stop is under way (the grace period runs the event loop).
    stopping: bool,
}

impl PayloadHandle {
    /// Starts `spec` in cgroup `rel` of `backend`, first giving the cgroup
    /// the real-time budget the spec asks for (a backend operation: v1 only).
    pub fn spawn_in(spec: &PayloadSpec, backend: &dyn CgroupBackend, rel: &str) -> Result<Self> {
        if let Some(budget) = spec.rt_runtime_us {
            backend
                .grant_rt_runtime(rel, &[budget])
                .with_context(|| format!("payload \"{}\": real-time budget", spec.name))?;
        }
        PayloadHandle::spawn(spec, &cgroup_procs_files(backend, rel))
    }

    /// Validates `spec`, then starts it with its pid already in every
    /// `cgroup.procs` file of `cgroup_procs` (pass the files themselves,
    /// e.g. `/sys/fs/cgroup/cpu/runq-1/cg0/cgroup.procs`). Real-time budgets
    /// are the caller's business here (see [`spawn_in`](Self::spawn_in)).
    pub fn spawn(spec: &PayloadSpec, cgroup_procs: &[PathBuf]) -> Result<PayloadHandle> {
        spec.validate()?;
        let program = resolve_binary(&spec.binary).map_err(RunqError::bad_input)?;
        for procs in cgroup_procs {
            if !procs.exists() {
                return Err(RunqError::environment(format!(
                    "payload \"{}\": cgroup file {} does not exist; create the cgroup first",
                    spec.name,
                    procs.display()
                )));
            }
        }
        let lines = LineFeed::new(&spec.metrics).map_err(RunqError::bad_input)?;
        let started = Instant::now();
        let launched = start(spec, &program, cgroup_procs)?;
        Ok(PayloadHandle {
            spec: spec.clone(),
            process: launched.process,
            trace_channel: launched.trace_channel,
            trace_json: Vec::new(),
            lines,
            tree: Tree::new(&spec.name, cgroup_procs),
            started,
            ready: None,
            finished: false,
            timed_out: false,
            stopping: false,
        })
    }

    /// The pid runq forked: the program itself, or in trace mode the
    /// tracing process (whose only child is the program).
    pub fn pid(&self) -> i32 {
        self.process.pid().as_raw()
    }

    /// The program's pid: in trace mode the tracer's child, once it exists.
    pub fn program_pid(&self) -> Option<i32> {
        if !self.spec.trace {
            return Some(self.pid());
        }
        process::children_of(self.pid()).into_iter().next()
    }

    pub fn spec(&self) -> &PayloadSpec {
        &self.spec
    }

    /// True once the program ended (it has been reaped).
    pub fn has_exited(&self) -> bool {
        self.process.exit().is_some()
    }

    /// One round of the event loop, waiting at most `max_wait` for output:
    /// drains the output, samples the tree, reaps the program if it ended.
    /// Returns true once it has ended. Call it every few tens of ms while the
    /// payload runs, or the program blocks when its output pipe is full.
    pub fn tick(&mut self, max_wait: Duration) -> bool {
        self.pump_output(max_wait);
        self.sample_tree(false);
        let ended = self.process.try_wait().is_some();
        self.feed_metrics();
        if !ended && !self.stopping && self.started.elapsed() >= self.spec.timeout {
            self.timed_out = true;
            self.terminate();
        }
        self.process.exit().is_some()
    }

    /// Waits (draining output) up to `timeout` for the program's ready
    /// marker; the outcome goes into the report.
    pub fn wait_ready(&mut self, timeout: Duration) -> ReadyOutcome {
        let Some(pid) = self.wait_program_pid(timeout) else {
            let outcome = match self.process.exit() {
                Some(exit) => ReadyOutcome::DiedBefore(exit.into()),
                None => ReadyOutcome::NeverReady,
            };
            self.ready = Some(outcome.clone());
            return outcome;
        };
        let outcome = {
            let this = &mut *self;
            ready::wait_ready_with(pid, timeout, |pause| {
                this.pump_output(pause);
                this.sample_tree(false);
            })
        };
        self.ready = Some(outcome.clone());
        outcome
    }

    /// Lets the program finish; at its timeout (counted from spawn) it is
    /// stopped and its exit is `TimedOut`.
    pub fn wait(self) -> PayloadReport {
        let deadline = self.started + self.spec.timeout;
        self.wait_until(deadline)
    }

    /// Like [`wait`](Self::wait) with an explicit deadline.
    pub fn wait_until(mut self, deadline: Instant) -> PayloadReport {
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.tick((deadline - now).min(Duration::from_millis(20))) {
                return self.finish(false, false);
            }
        }
        self.terminate();
        self.finish(false, true)
    }

    /// Stops the program now (SIGTERM to its group, SIGKILL after
    /// [`STOP_GRACE`]) unless it already ended, and reports.
    pub fn stop_and_collect(mut self) -> PayloadReport {
        if self.tick(Duration::ZERO) {
            return self.finish(false, false);
        }
        self.terminate();
        self.finish(true, false)
    }

    /// The program's pid, waiting (trace mode) until the tracer forked it.
    fn wait_program_pid(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = self.program_pid() {
                return Some(pid);
            }
            if self.tick(Duration::from_millis(5)) || Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// SIGTERM, a grace period (the event loop keeps running), then SIGKILL
    /// of the group and of members that left it; reaps the program.
    fn terminate(&mut self) {
        if self.process.exit().is_some() || self.stopping {
            return;
        }
        self.stopping = true;
        self.sample_tree(true);
        if self.spec.trace {
            // The tracer forwards signals to the traced processes; signalling
            // the tracer itself would make it kill the tree at once.
            for pid in process::descendants(self.pid()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        } else {
            let _ = self.process.signal_group(Signal::SIGTERM);
        }
        let grace_end = Instant::now() + STOP_GRACE;
        while Instant::now() < grace_end {
            if self.tick(Duration::from_millis(10)) {
                return;
            }
        }
        self.tree.kill_leftovers(self.pid());
        self.process.kill();
        self.feed_metrics();
    }

    /// Reads output (and the trace channel), waiting up to `max_wait`.
    fn pump_output(&mut self, max_wait: Duration) {
        self.process.pump(max_wait);
        self.feed_metrics();
        self.drain_trace_channel();
    }

    fn feed_metrics(&mut self) {
        let fresh = self.process.take_output();
        self.lines.absorb(&fresh);
    }

    fn drain_trace_channel(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        while let Some(fd) = self.trace_channel.as_ref() {
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => self.trace_channel = None,
                Ok(n) => self.trace_json.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn sample_tree(&mut self, force: bool) {
        if self.process.exit().is_none() {
            self.tree.sample(self.pid(), !self.spec.trace, force);
        }
    }

    /// Tears down what is left of the tree: stragglers that outlived the
    /// program (its group, or members that left it) are killed, the output
    /// and the trace channel read to their end, the cgroups left empty, the
    /// ready marker removed.
    fn tear_down(&mut self) {
        self.tree.kill_leftovers(self.pid());
        self.process.kill();
        self.feed_metrics();
        let drain_end = Instant::now() + Duration::from_millis(500);
        while self.trace_channel.is_some() && Instant::now() < drain_end {
            std::thread::sleep(Duration::from_millis(5));
            self.drain_trace_channel();
        }
        self.trace_channel = None;
        self.lines.end_line();
        self.tree.await_gone(self.pid(), Duration::from_secs(2));
        if let Some(pid) = self.program_pid_for_marker() {
            let _ = ready::clear_marker(pid);
        }
        self.finished = true;
    }

    /// Tears down and reports what happened (the payload check judges it).
    fn finish(mut self, stopped: bool, timed_out: bool) -> PayloadReport {
        let timed_out = timed_out || self.timed_out;
        // Whether it marked readiness is read before the marker goes.
        let ready = self.spec.ready_marker.then(|| {
            self.ready.clone().unwrap_or_else(|| {
                // Never waited for: was it marked by the end?
                match self.program_pid_for_marker() {
                    Some(pid) if ready::marker_path(pid).exists() => ReadyOutcome::Ready,
                    _ => ReadyOutcome::NeverReady,
                }
            })
        });
        self.tear_down();
        let (exit, tree) = self.exit_and_tree(timed_out);
        let metrics = self.lines.results();
        let root = if self.spec.trace {
            tree.first().map_or(-1, |(pid, _)| *pid)
        } else {
            self.pid()
        };
        PayloadReport {
            name: self.spec.name.clone(),
            pid: root,
            exit,
            expected_exit: self.spec.expected_exit(),
            stopped,
            timeout_ms: self.spec.timeout.as_millis() as u64,
            metrics: metrics.values,
            units: metrics.units,
            missing_metrics: metrics.missing,
            bounds: self.spec.bounds.clone(),
            bound_violations: Vec::new(),
            escaped: self.tree.escaped(),
            ready_required: self.spec.ready_marker,
            ready: ready.map(|r| r.to_string()),
            failures: Vec::new(),
            passed: false,
            stdout_tail: self.process.tail_text(),
            tree,
            traced: self.spec.trace,
            wall_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// How the program ended and its tree: from the tracing process's
    /// report in trace mode, from the samples otherwise.
    fn exit_and_tree(&self, timed_out: bool) -> (ExitShape, Vec<(i32, String)>) {
        let mut exit = self.process.exit().map_or_else(
            || ExitShape::WaitFailed("the program's end was not observed".to_string()),
            ExitShape::from,
        );
        let mut tree = self.tree.listing();
        if self.spec.trace {
            match serde_json::from_slice::<TracedTree>(&self.trace_json) {
                Ok(traced) => {
                    if let Some(status) = traced.root_exit {
                        exit = status;
                    } else if let Some(error) = &traced.error {
                        exit = ExitShape::WaitFailed(format!("tracing failed: {error}"));
                    }
                    tree = traced.processes;
                }
                Err(_) => {
                    exit = ExitShape::WaitFailed(format!(
                        "the tracing process ended ({exit:?}) without reporting the tree"
                    ));
                }
            }
        }
        if timed_out {
            exit = ExitShape::TimedOut;
        }
        (exit, tree)
    }

    fn program_pid_for_marker(&self) -> Option<i32> {
        if self.spec.trace {
            self.tree.first()
        } else {
            Some(self.pid())
        }
    }
}

impl Drop for PayloadHandle {
    /// Every path that abandons a payload (an error, an interrupt) stops it
    /// as a normal end does, so its own cleanup runs.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.terminate();
        self.tear_down();
    }
}
