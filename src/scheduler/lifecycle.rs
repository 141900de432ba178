//! One scheduler under test, from launch to stop: [`preflight`] (nothing
//! started yet), [`SchedulerRun::start`] (launch, wait until the kernel
//! reports it attached), [`SchedulerRun::tick`] from the hold loop (its
//! exit, `state`, the kernel log), worker observations, event counters at
//! step boundaries and captures, and [`SchedulerRun::finish`] (SIGINT,
//! SIGKILL after `stop_timeout`, `state` back to disabled).
//!
//! Nothing here starts a thread: the executor's single-threaded hold loop
//! calls [`SchedulerRun::tick`] between its samples.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::kmsg::{KmsgReader, ScxLog, ScxLogEvent};
use super::report::{CaptureEvents, Ejection, SchedulerReport, StepEvents, WorkerOnExt};
use super::spec::SchedulerSpec;
use super::sysfs::{event_delta, task_on_ext, EventCounters, SchedExtSysfs, ScxState};
use crate::error::RunqError;
use crate::process::{Exit, Launch, LaunchError, Supervised};

/// Output bytes kept from the scheduler (its debug dump fits).
const OUTPUT_TAIL_BYTES: usize = 32 * 1024;
/// How often the attach wait looks at `state`.
const ATTACH_POLL: Duration = Duration::from_millis(20);
/// How long `state` may take to go back to `disabled` after the stop.
const DISABLE_WAIT: Duration = Duration::from_secs(10);
/// Least time between two looks at the same batch's workers.
const OBSERVE_EVERY: Duration = Duration::from_millis(250);

/// What [`preflight`] found: the executable and the kernel's sched_ext.
#[derive(Debug)]
pub struct Preflight {
    pub path: PathBuf,
    pub sysfs: SchedExtSysfs,
}

/// Everything that can be checked before anything starts: the spec, the
/// binary, a kernel with sched_ext and no scheduler attached already.
/// `scenario` is used in the hint for hosts without sched_ext.
pub fn preflight(spec: &SchedulerSpec, scenario: &str) -> anyhow::Result<Preflight> {
    spec.validate()?;
    let path = spec.resolve()?;
    let Some(sysfs) = SchedExtSysfs::host() else {
        return Err(no_sched_ext(spec, scenario));
    };
    match sysfs.state() {
        ScxState::Disabled => Ok(Preflight { path, sysfs }),
        state => Err(RunqError::environment(format!(
            "another sched_ext scheduler is attached ({}, state {}); stop it before running \
             one under test",
            sysfs.ops().unwrap_or_else(|| "name not shown".into()),
            state.as_str()
        ))),
    }
}

/// The error for a kernel without sched_ext: in a runq guest the kernel
/// given to `runq vm` is the mistake (bad input); on a host the fix is a VM.
fn no_sched_ext(spec: &SchedulerSpec, scenario: &str) -> anyhow::Error {
    let release = crate::report::kernel_release();
    if crate::vm::guest::in_guest() {
        return RunqError::bad_input(format!(
            "--scheduler {}: the booted kernel {release} has no sched_ext \
             (/sys/kernel/sched_ext is missing); fetch one with `runq kernel fetch` and boot \
             it with `runq vm --kernel sched_ext`",
            spec.binary
        ));
    }
    RunqError::environment(format!(
        "--scheduler {}: this kernel ({release}) has no sched_ext (/sys/kernel/sched_ext is \
         missing); run the scenario in a VM instead: `runq kernel fetch` once, then \
         `runq vm --kernel sched_ext -- run {scenario} --scheduler {}`",
        spec.binary, spec.binary
    ))
}

/// A launched scheduler and everything seen of it.
pub struct SchedulerRun {
    spec: SchedulerSpec,
    sysfs: SchedExtSysfs,
    kmsg: Option<KmsgReader>,
    log: ScxLog,
    child: Supervised,
    launched: Instant,
    attached_at: Option<Instant>,
    /// The run's start: ejections and captures count from it.
    origin: Instant,
    report: SchedulerReport,
    step_events: Option<EventCounters>,
    workers: BTreeMap<(String, i32), WorkerOnExt>,
    observed_at: BTreeMap<String, Instant>,
}

impl SchedulerRun {
    /// Launches the scheduler (its own process group, killed if runq dies)
    /// and waits until the kernel reports it attached, it exits, or
    /// `attach_timeout` passes. A scheduler that did not attach is stopped
    /// and the run returned anyway ([`Self::attached`] is false), so the
    /// checks can say why.
    pub fn start(spec: &SchedulerSpec, pre: Preflight) -> anyhow::Result<SchedulerRun> {
        let kmsg = match KmsgReader::open() {
            Ok(reader) => Some(reader),
            Err(e) => {
                tracing::warn!(
                    "/dev/kmsg: {e}; the kernel's reasons for an ejection will be missing"
                );
                None
            }
        };
        let seq_before = pre.sysfs.enable_seq().unwrap_or(0);
        let child = Launch::new(&pre.path)
            .args(&spec.args)
            .tail_bytes(OUTPUT_TAIL_BYTES)
            .spawn()
            .map_err(|e| launch_error(spec, e))?;
        let launched = child.started();
        let report = SchedulerReport {
            binary: spec.binary.clone(),
            path: pre.path.display().to_string(),
            args: spec.args.clone(),
            attach_timeout_ms: spec.attach_timeout.as_secs_f64() * 1e3,
            ..SchedulerReport::default()
        };
        let mut run = SchedulerRun {
            spec: spec.clone(),
            sysfs: pre.sysfs,
            kmsg,
            log: ScxLog::default(),
            child,
            launched,
            attached_at: None,
            origin: launched,
            report,
            step_events: None,
            workers: BTreeMap::new(),
            observed_at: BTreeMap::new(),
        };
        run.wait_attached(seq_before);
        Ok(run)
    }

    fn wait_attached(&mut self, seq_before: u64) {
        let deadline = self.launched + self.spec.attach_timeout;
        loop {
            // The exit first, the kernel's word after: a scheduler that
            // attached and died at once still counts as attached.
            let exit = self.child.try_wait();
            self.read_kmsg();
            if self.sysfs.state() == ScxState::Enabled
                && self.sysfs.enable_seq().unwrap_or(0) > seq_before
            {
                if let Some(ops) = self.sysfs.ops() {
                    self.record_attach(ops, Instant::now());
                    return;
                }
            }
            // A scheduler that starves every task (runq included) can be
            // attached and ejected before runq looks: the kernel log
            // still tells.
            if let Some((ops, usec)) = self.logged_enable() {
                self.record_attach(ops, instant_of_log(usec));
                return;
            }
            if let Some(exit) = exit {
                self.report.attach_failure = Some(format!(
                    "it ended ({}) before the kernel reported it attached",
                    describe_exit(&exit)
                ));
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                self.report.attach_failure = Some(format!(
                    "the kernel did not report it attached within {} (state {})",
                    crate::scenario::format_duration(self.spec.attach_timeout),
                    self.sysfs.state().as_str()
                ));
                self.stop();
                return;
            }
            self.child.pump(ATTACH_POLL.min(deadline - now));
        }
    }

    fn record_attach(&mut self, ops: String, at: Instant) {
        self.attached_at = Some(at);
        self.report.attach_ms = Some(ms_between(self.launched, at));
        tracing::info!(
            "scheduler {} attached as {ops} in {:.0} ms",
            self.spec.binary,
            ms_between(self.launched, at)
        );
        self.report.ops = Some(ops);
        self.report.enable_seq = self.sysfs.enable_seq();
        // Read after an ejection, these would describe no scheduler.
        if self.sysfs.state() == ScxState::Enabled {
            self.report.switch_all = self.sysfs.switch_all();
            self.report.events.start = self.sysfs.events();
        }
        self.step_events = self.report.events.start.clone();
    }

    /// The first `enabled` line the kernel logged since the launch.
    fn logged_enable(&self) -> Option<(String, u64)> {
        self.log.events.iter().find_map(|e| match e {
            ScxLogEvent::Enabled { ops, usec } => Some((ops.clone(), *usec)),
            _ => None,
        })
    }

    /// Whether it attached (it may have been ejected since).
    pub fn attached(&self) -> bool {
        self.attached_at.is_some()
    }

    /// Attached and not ejected (as far as the last tick saw).
    pub fn is_live(&self) -> bool {
        self.attached() && self.report.ejection.is_none()
    }

    /// Sets the instant ejections and captures count from.
    pub fn set_origin(&mut self, origin: Instant) {
        self.origin = origin;
    }

    fn read_kmsg(&mut self) {
        if let Some(reader) = &mut self.kmsg {
            for record in reader.read_new() {
                self.log.feed(&record);
            }
        }
    }

    /// The kernel logged our scheduler's disable: its reason, detail lines
    /// and time (microseconds of the kernel's clock).
    fn logged_disable(&self) -> Option<(&str, &[String], u64)> {
        let ops = self.report.ops.as_deref()?;
        match self.log.last_disable() {
            Some(ScxLogEvent::Disabled {
                ops: name,
                reason,
                details,
                usec,
            }) if name == ops => Some((reason, details, *usec)),
            _ => None,
        }
    }

    /// Milliseconds between our scheduler's enabled and disabled lines in
    /// the kernel log (the kernel's own clock), when both were logged.
    fn logged_uptime(&self) -> Option<f64> {
        let ops = self.report.ops.as_deref()?;
        let enabled = self.log.events.iter().find_map(|e| match e {
            ScxLogEvent::Enabled { ops: name, usec } if name == ops => Some(*usec),
            _ => None,
        })?;
        let (_, _, disabled) = self.logged_disable()?;
        Some(disabled.saturating_sub(enabled) as f64 / 1e3)
    }

    /// Looks at the scheduler once: its output, its exit, `state` and the
    /// kernel log. True the first time an ejection is seen, with `step`
    /// (1-based) as the step that was running.
    pub fn tick(&mut self, step: usize) -> bool {
        if !self.is_live() {
            self.child.pump(Duration::ZERO);
            return false;
        }
        self.read_kmsg();
        let exited = self.child.try_wait().is_some();
        let noticed_by = if self.sysfs.state() != ScxState::Enabled {
            "state"
        } else if exited {
            "exit"
        } else if self.logged_disable().is_some() {
            "kernel_log"
        } else {
            return false;
        };
        let now = Instant::now();
        let attached_at = self.attached_at.unwrap_or(now);
        self.report.ejection = Some(Ejection {
            at_ms: ms_between(self.origin, now),
            after_attach_ms: ms_between(attached_at, now),
            step,
            noticed_by: noticed_by.into(),
            ..Ejection::default()
        });
        true
    }

    /// Reads `/proc/TID/sched` of a batch's workers while the scheduler is
    /// attached (at most every `OBSERVE_EVERY` per batch unless `now`).
    /// `expected`: the worker should be on sched_ext (switch-all mode, or
    /// policy SCHED_EXT).
    pub fn observe_workers(&mut self, batch: &str, tids: &[(i32, bool)], now: bool) {
        if !self.is_live() || tids.is_empty() {
            return;
        }
        let at = Instant::now();
        if !now
            && self
                .observed_at
                .get(batch)
                .is_some_and(|last| at.duration_since(*last) < OBSERVE_EVERY)
        {
            return;
        }
        self.observed_at.insert(batch.to_owned(), at);
        let switch_all = self.report.switch_all.unwrap_or(true);
        let mut seen = Vec::new();
        for &(tid, is_ext_policy) in tids {
            if !(switch_all || is_ext_policy) {
                continue;
            }
            if let Some(on_ext) = task_on_ext(tid) {
                seen.push((tid, on_ext));
            }
        }
        // Only what was read while it was still attached counts.
        if self.sysfs.state() != ScxState::Enabled {
            return;
        }
        for (tid, on_ext) in seen {
            let entry = self
                .workers
                .entry((batch.to_owned(), tid))
                .or_insert_with(|| WorkerOnExt {
                    cgroup: batch.to_owned(),
                    tid,
                    ..WorkerOnExt::default()
                });
            entry.seen += 1;
            entry.on_ext += u32::from(on_ext);
        }
    }

    /// Event counters now, if attached.
    fn events_now(&self) -> Option<EventCounters> {
        if self.is_live() {
            self.sysfs.events()
        } else {
            None
        }
    }

    /// Marks the start of a step for its event delta.
    pub fn step_started(&mut self) {
        if let Some(now) = self.events_now() {
            self.step_events = Some(now);
        }
    }

    /// Records what step `step` (1-based) added to the event counters.
    pub fn step_finished(&mut self, step: usize) {
        if let (Some(before), Some(now)) = (&self.step_events, self.events_now()) {
            self.report.events.steps.push(StepEvents {
                step,
                delta: event_delta(before, &now),
            });
            self.step_events = Some(now);
        }
    }

    /// Records the event counters under a capture's tag.
    pub fn capture(&mut self, tag: &str, step: usize) {
        let counters = if tag == super::EXIT_CAPTURE_TAG {
            // Gone with the scheduler: the last counters seen stand in.
            self.step_events.clone()
        } else {
            self.events_now()
        };
        if let Some(counters) = counters {
            self.report.events.captures.push(CaptureEvents {
                tag: tag.to_owned(),
                step,
                at_ms: ms_between(self.origin, Instant::now()),
                counters,
            });
        }
    }

    /// SIGINT (and SIGCONT, for a stopped one) to its group, SIGKILL after
    /// `stop_timeout`. Records how it ended.
    fn stop(&mut self) {
        if self.child.try_wait().is_none() {
            self.report.stopped_by_runq = true;
            let _ = self.child.signal_group(Signal::SIGINT);
            let _ = self.child.signal_group(Signal::SIGCONT);
            let deadline = Instant::now() + self.spec.stop_timeout;
            if self.child.wait_until(deadline).is_none() {
                self.report.killed = true;
            }
        }
        self.report.exit = Some(self.child.kill());
    }

    /// Stops the scheduler, waits for `state` to go back to disabled and
    /// returns the report. `step` (1-based) is the last step run.
    pub fn finish(mut self, step: usize) -> SchedulerReport {
        self.tick(step);
        if let Some(end) = self.events_now() {
            if let Some(start) = &self.report.events.start {
                self.report.events.total = Some(event_delta(start, &end));
            }
            self.report.events.end = Some(end);
        }
        self.report.nr_rejected = self.sysfs.nr_rejected();
        self.stop();
        let deadline = Instant::now() + DISABLE_WAIT;
        let mut state = self.sysfs.state();
        while state != ScxState::Disabled && Instant::now() < deadline {
            self.child.pump(ATTACH_POLL);
            state = self.sysfs.state();
        }
        self.report.state_after_stop = state.as_str().to_owned();
        self.read_kmsg();
        self.report.output_tail = self.child.tail_text();
        let logged = self
            .logged_disable()
            .map(|(r, d, usec)| (r.to_owned(), d.to_vec(), instant_of_log(usec)));
        let kernel_uptime = self.logged_uptime();
        let origin = self.origin;
        let exit = self.report.exit;
        let tail = self.report.output_tail.clone();
        if let Some(ejection) = &mut self.report.ejection {
            if let Some((reason, details, at)) = logged {
                ejection.reason = reason;
                ejection.details = details;
                ejection.at_ms = signed_ms_between(origin, at);
            }
            if let Some(ms) = kernel_uptime {
                ejection.after_attach_ms = ms;
            }
            ejection.exit = exit;
            ejection.output_tail = tail;
        }
        self.report.kernel_log = std::mem::take(&mut self.log.events);
        self.report.workers = std::mem::take(&mut self.workers).into_values().collect();
        self.report
    }
}

fn launch_error(spec: &SchedulerSpec, err: LaunchError) -> anyhow::Error {
    match err {
        LaunchError::Exec { .. } | LaunchError::Nul(_) => RunqError::bad_input(format!(
            "--scheduler {}: {err}; give a sched_ext scheduler's executable",
            spec.binary
        )),
        other => RunqError::environment(format!("starting scheduler {}: {other}", spec.binary)),
    }
}

/// `exit code 1` or `killed by SIGKILL`.
pub fn describe_exit(exit: &Exit) -> String {
    match exit {
        Exit::Exited(code) => format!("exit code {code}"),
        Exit::Signaled(signal) => match Signal::try_from(*signal) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {signal}"),
        },
    }
}

/// The instant a kernel log record stamped `usec` (microseconds since
/// boot, the clock CLOCK_MONOTONIC also counts) was written.
fn instant_of_log(usec: u64) -> Instant {
    let now = Instant::now();
    let Ok(mono) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) else {
        return now;
    };
    let mono_usec = mono.tv_sec() as u64 * 1_000_000 + mono.tv_nsec() as u64 / 1_000;
    now.checked_sub(Duration::from_micros(mono_usec.saturating_sub(usec)))
        .unwrap_or(now)
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1e3
}

/// Like [`ms_between`], negative when `to` came first.
fn signed_ms_between(from: Instant, to: Instant) -> f64 {
    if to >= from {
        ms_between(from, to)
    } else {
        -ms_between(to, from)
    }
}
