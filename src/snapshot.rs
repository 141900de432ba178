//! Capture bridge: tagged captures of real scheduler state, a bounded store
//! with FIFO eviction, and a capped structured event log.
//!
//! A scenario records captures explicitly (`Op::CaptureSnapshot{tag}`) or
//! periodically during holds (tags `periodic_000`, `periodic_001`, ...). Each
//! capture reads what the kernel exposes: per-CPU `/proc/schedstat`,
//! `/proc/PID/sched` and `/proc/PID/schedstat` of every worker, `cpu.stat` of
//! every runq cgroup, load averages and `/sys/kernel/debug/sched/debug` when
//! debugfs is mounted. `cgroup.procs` of every runq cgroup is a capture type
//! of its own. Anything unusual (a file that cannot be read, an overwrite,
//! an eviction, a broken invariant) is logged with `tracing` and appended to
//! the event log, which the drain reports together with the captures.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// At most this many captures are stored; the oldest is evicted first.
pub const MAX_CAPTURES: usize = 64;
/// At most this many events are kept; later ones are counted as dropped.
pub const MAX_EVENTS: usize = 1024;
/// Prefix of the tags of periodic captures.
pub const PERIODIC_PREFIX: &str = "periodic_";
/// Periodic tags have exactly three digits, so at most this many exist.
pub const MAX_PERIODIC: u32 = 1000;
/// The scheduler debug dump is cut at this size to keep reports bounded.
pub const MAX_SCHED_DEBUG_BYTES: usize = 256 * 1024;

const PROC_SCHEDSTAT: &str = "/proc/schedstat";
const PROC_LOADAVG: &str = "/proc/loadavg";
const SCHED_DEBUG: &str = "/sys/kernel/debug/sched/debug";

/// The tag of the periodic capture number `index` (`periodic_007`), or
/// `None` once the three digits are used up.
pub fn periodic_tag(index: u32) -> Option<String> {
    (index < MAX_PERIODIC).then(|| format!("{PERIODIC_PREFIX}{index:03}"))
}

/// The index of a periodic tag: exactly `periodic_` followed by three ASCII
/// digits. Anything else (other prefixes, 2 or 4 digits, signs, spaces) is
/// not a periodic tag.
pub fn parse_periodic_tag(tag: &str) -> Option<u32> {
    let digits = tag.strip_prefix(PERIODIC_PREFIX)?;
    if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What happened, for the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A source could not be read (missing file, dead worker, no debugfs).
    CaptureUnavailable,
    /// A tag was stored again; the old capture was replaced.
    Overwrite,
    /// The store was full; the oldest capture was dropped.
    Eviction,
    /// The bridge found its own state inconsistent.
    InvariantViolation,
    /// Added by a drain: this many events were dropped at the cap.
    Truncated,
}

/// One structured event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// The capture tag concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub detail: String,
}

/// A log of at most `cap` events that counts what it had to drop.
#[derive(Debug)]
pub struct EventLog {
    events: Vec<Event>,
    dropped: u64,
    cap: usize,
    /// Events already shown as warnings: a source missing at every
    /// periodic capture warns once, then logs at debug level.
    warned: BTreeSet<(EventKind, String)>,
}

impl EventLog {
    pub fn new(cap: usize) -> Self {
        EventLog {
            events: Vec::new(),
            dropped: 0,
            cap,
            warned: BTreeSet::new(),
        }
    }

    /// Logs the event with `tracing` and keeps it if there is room.
    pub fn push(&mut self, kind: EventKind, tag: Option<&str>, detail: impl Into<String>) {
        let detail = detail.into();
        if self.warned.insert((kind, detail.clone())) {
            tracing::warn!(?kind, tag = tag.unwrap_or(""), "{detail}");
        } else {
            tracing::debug!(?kind, tag = tag.unwrap_or(""), "{detail}");
        }
        if self.events.len() < self.cap {
            self.events.push(Event {
                kind,
                tag: tag.map(str::to_owned),
                detail,
            });
        } else {
            self.dropped += 1;
        }
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takes every event out, ending with a `Truncated` marker when some were
    /// dropped at the cap.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut out = std::mem::take(&mut self.events);
        if self.dropped > 0 {
            out.push(Event {
                kind: EventKind::Truncated,
                tag: None,
                detail: format!("truncated, {} dropped", self.dropped),
            });
            self.dropped = 0;
        }
        out
    }
}

/// One CPU's line of `/proc/schedstat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuSchedstat {
    pub cpu: u32,
    /// Times `schedule()` was called.
    pub sched_count: u64,
    /// Times the CPU went idle from `schedule()`.
    pub sched_goidle: u64,
    /// Wakeups handled by this CPU.
    pub ttwu_count: u64,
    /// Of those, wakeups of tasks last on this CPU.
    pub ttwu_local: u64,
    /// Nanoseconds tasks ran on this CPU.
    pub run_time_ns: u64,
    /// Nanoseconds tasks waited on this CPU's run queue.
    pub run_delay_ns: u64,
    /// Timeslices run on this CPU.
    pub timeslices: u64,
}

/// `/proc/PID/schedstat` and the numeric lines of `/proc/PID/sched`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSched {
    pub pid: i32,
    /// Nanoseconds on CPU.
    pub run_time_ns: u64,
    /// Nanoseconds waiting on a run queue.
    pub run_delay_ns: u64,
    pub timeslices: u64,
    /// `key : value` lines of `/proc/PID/sched` (`nr_switches`,
    /// `se.sum_exec_runtime`, `prio`, ...).
    pub sched: BTreeMap<String, f64>,
}

/// `cpu.stat` of one cgroup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CgroupCpuStat {
    pub path: PathBuf,
    pub stat: BTreeMap<String, u64>,
}

/// `cgroup.procs` of one cgroup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CgroupProcs {
    pub path: PathBuf,
    pub pids: Vec<i32>,
}

/// `/proc/loadavg`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
    pub runnable: u32,
    pub total: u32,
}

/// Scheduler state at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchedulerState {
    /// Empty when `/proc/schedstat` is missing (kernel without schedstats).
    pub cpus: Vec<CpuSchedstat>,
    pub tasks: Vec<TaskSched>,
    pub cgroups: Vec<CgroupCpuStat>,
    pub loadavg: Option<LoadAvg>,
    /// `/sys/kernel/debug/sched/debug`, when debugfs is mounted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sched_debug: Option<String>,
}

/// What a capture holds: scheduler state, or cgroup membership.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CaptureData {
    Scheduler(SchedulerState),
    CgroupProcs { cgroups: Vec<CgroupProcs> },
}

/// One tagged capture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    pub tag: String,
    /// Milliseconds since the bridge started (the run's start).
    pub elapsed_ms: u64,
    /// 0 = baseline, 1..N = steps.
    pub step_index: usize,
    pub data: CaptureData,
}

/// What to capture: the live workers and the run's cgroup directories.
#[derive(Clone, Debug, Default)]
pub struct CaptureTargets {
    pub worker_pids: Vec<i32>,
    pub cgroup_dirs: Vec<PathBuf>,
}

/// The section of the JSON report that a drain produces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSection {
    pub captures: Vec<Capture>,
    pub events: Vec<Event>,
}

/// Stores captures by tag (at most [`MAX_CAPTURES`], FIFO eviction; storing
/// a tag again replaces it and moves it to the back) and logs every unusual
/// event.
#[derive(Debug)]
pub struct SnapshotBridge {
    captures: VecDeque<Capture>,
    cap: usize,
    events: EventLog,
    started: Instant,
}

impl Default for SnapshotBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl SnapshotBridge {
    pub fn new() -> Self {
        Self::with_caps(MAX_CAPTURES, MAX_EVENTS)
    }

    /// A bridge with other caps (tests, tight memory budgets).
    pub fn with_caps(capture_cap: usize, event_cap: usize) -> Self {
        SnapshotBridge {
            captures: VecDeque::new(),
            cap: capture_cap.max(1),
            events: EventLog::new(event_cap),
            started: Instant::now(),
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Reads scheduler state now and stores it under `tag`.
    pub fn capture_scheduler(&mut self, tag: &str, step_index: usize, targets: &CaptureTargets) {
        let state = read_scheduler_state(tag, targets, &mut self.events);
        self.store(Capture {
            tag: tag.to_owned(),
            elapsed_ms: self.elapsed_ms(),
            step_index,
            data: CaptureData::Scheduler(state),
        });
    }

    /// Reads `cgroup.procs` of every target cgroup and stores it under `tag`.
    pub fn capture_cgroup_procs(&mut self, tag: &str, step_index: usize, targets: &CaptureTargets) {
        let cgroups = read_cgroup_procs(tag, &targets.cgroup_dirs, &mut self.events);
        self.store(Capture {
            tag: tag.to_owned(),
            elapsed_ms: self.elapsed_ms(),
            step_index,
            data: CaptureData::CgroupProcs { cgroups },
        });
    }

    /// Stores a capture: replaces (and moves to the back) one with the same
    /// tag, evicts the oldest when full.
    pub fn store(&mut self, capture: Capture) {
        let same_tag: Vec<usize> = (self.captures.iter().enumerate())
            .filter(|(_, c)| c.tag == capture.tag)
            .map(|(i, _)| i)
            .collect();
        if same_tag.len() > 1 {
            self.events.push(
                EventKind::InvariantViolation,
                Some(&capture.tag),
                format!("{} stored captures share this tag", same_tag.len()),
            );
        }
        for index in same_tag.into_iter().rev() {
            if let Some(old) = self.captures.remove(index) {
                self.events.push(
                    EventKind::Overwrite,
                    Some(&capture.tag),
                    format!(
                        "replaced the capture taken at {} ms (step {})",
                        old.elapsed_ms, old.step_index
                    ),
                );
            }
        }
        while self.captures.len() >= self.cap {
            if let Some(oldest) = self.captures.pop_front() {
                self.events.push(
                    EventKind::Eviction,
                    Some(&oldest.tag),
                    format!("store full ({} captures): evicted the oldest", self.cap),
                );
            }
        }
        self.captures.push_back(capture);
        if self.captures.len() > self.cap {
            self.events.push(
                EventKind::InvariantViolation,
                None,
                format!(
                    "store holds {} captures, cap {}",
                    self.captures.len(),
                    self.cap
                ),
            );
        }
    }

    /// Records an event from outside the bridge (e.g. periodic tags used up).
    pub fn log_event(&mut self, kind: EventKind, tag: Option<&str>, detail: impl Into<String>) {
        self.events.push(kind, tag, detail);
    }

    pub fn get(&self, tag: &str) -> Option<&Capture> {
        self.captures.iter().find(|c| c.tag == tag)
    }

    /// Stored tags, oldest first.
    pub fn tags(&self) -> Vec<&str> {
        self.captures.iter().map(|c| c.tag.as_str()).collect()
    }

    pub fn len(&self) -> usize {
        self.captures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.captures.is_empty()
    }

    pub fn events(&self) -> &[Event] {
        self.events.events()
    }

    /// Takes every capture (in store order) and every event out, for the
    /// report.
    pub fn drain(&mut self) -> SnapshotSection {
        SnapshotSection {
            captures: self.captures.drain(..).collect(),
            events: self.events.drain(),
        }
    }
}

/// When periodic captures are due, driven from the controller's hold loop
/// (no threads): ask [`PeriodicCaptures::due`] each time round the loop and
/// sleep at most [`PeriodicCaptures::time_until_due`].
#[derive(Debug)]
pub struct PeriodicCaptures {
    interval: Duration,
    next_due: Instant,
    next_index: u32,
    exhausted_logged: bool,
}

impl PeriodicCaptures {
    /// The first capture is due one interval after `start`.
    pub fn new(interval: Duration, start: Instant) -> Self {
        PeriodicCaptures {
            interval,
            next_due: start + interval,
            next_index: 0,
            exhausted_logged: false,
        }
    }

    /// The tag to capture now, if one is due. Missed intervals are skipped
    /// (one capture per call) so a slow loop does not capture in a burst.
    /// After `periodic_999`, logs once to the bridge and returns `None`.
    pub fn due(&mut self, now: Instant, bridge: &mut SnapshotBridge) -> Option<String> {
        if now < self.next_due {
            return None;
        }
        while self.next_due <= now {
            self.next_due += self.interval;
        }
        match periodic_tag(self.next_index) {
            Some(tag) => {
                self.next_index += 1;
                Some(tag)
            }
            None => {
                if !self.exhausted_logged {
                    self.exhausted_logged = true;
                    bridge.log_event(
                        EventKind::CaptureUnavailable,
                        None,
                        format!("periodic tags used up after {MAX_PERIODIC} captures"),
                    );
                }
                None
            }
        }
    }

    pub fn time_until_due(&self, now: Instant) -> Duration {
        self.next_due.saturating_duration_since(now)
    }

    /// How many periodic captures were handed out.
    pub fn count(&self) -> u32 {
        self.next_index
    }
}

fn read_source(path: &Path, tag: &str, events: &mut EventLog) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) => {
            events.push(
                EventKind::CaptureUnavailable,
                Some(tag),
                format!("{}: {err}", path.display()),
            );
            None
        }
    }
}

fn read_scheduler_state(
    tag: &str,
    targets: &CaptureTargets,
    events: &mut EventLog,
) -> SchedulerState {
    let mut state = SchedulerState::default();
    if let Some(text) = read_source(Path::new(PROC_SCHEDSTAT), tag, events) {
        state.cpus = parse_proc_schedstat(&text);
        if state.cpus.is_empty() {
            events.push(
                EventKind::CaptureUnavailable,
                Some(tag),
                format!("{PROC_SCHEDSTAT}: no cpu lines in a known format"),
            );
        }
    }
    state.tasks = targets
        .worker_pids
        .iter()
        .filter_map(|&pid| read_task_sched(pid, tag, events))
        .collect();
    state.cgroups = targets
        .cgroup_dirs
        .iter()
        .filter_map(|dir| read_cgroup_cpu_stat(dir, tag, events))
        .collect();
    state.loadavg =
        read_source(Path::new(PROC_LOADAVG), tag, events).and_then(|t| parse_loadavg(&t));
    // debugfs is optional: its absence is not unusual, only an unreadable
    // file under a mounted debugfs is.
    if Path::new(SCHED_DEBUG).exists() {
        state.sched_debug = read_source(Path::new(SCHED_DEBUG), tag, events).map(|mut text| {
            if text.len() > MAX_SCHED_DEBUG_BYTES {
                let mut cut = MAX_SCHED_DEBUG_BYTES;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("\n[cut at 256 KiB]\n");
            }
            text
        });
    }
    state
}

/// A worker's `/proc/PID/schedstat` and `sched`; `None` (logged) when its
/// schedstat cannot be read or parsed.
fn read_task_sched(pid: i32, tag: &str, events: &mut EventLog) -> Option<TaskSched> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let schedstat = read_source(&dir.join("schedstat"), tag, events)?;
    let Some((run_time_ns, run_delay_ns, timeslices)) = parse_task_schedstat(&schedstat) else {
        events.push(
            EventKind::CaptureUnavailable,
            Some(tag),
            format!("/proc/{pid}/schedstat: unexpected format {schedstat:?}"),
        );
        return None;
    };
    let sched = read_source(&dir.join("sched"), tag, events)
        .map(|text| parse_task_sched(&text))
        .unwrap_or_default();
    Some(TaskSched {
        pid,
        run_time_ns,
        run_delay_ns,
        timeslices,
        sched,
    })
}

/// The CPU accounting of one cgroup directory; `None` when its hierarchy
/// keeps none or the directory is gone (logged).
fn read_cgroup_cpu_stat(dir: &Path, tag: &str, events: &mut EventLog) -> Option<CgroupCpuStat> {
    // v2 and the v1 `cpu` hierarchy have cpu.stat, v1 `cpuacct` has its
    // own files, the v1 `cpuset` hierarchy none: a hierarchy without
    // such a file is not a missing capture.
    if !dir.exists() {
        // Gone: the read fails and logs why.
        read_source(&dir.join("cpu.stat"), tag, events);
        return None;
    }
    let mut stat = BTreeMap::new();
    let mut found = false;
    for file in ["cpu.stat", "cpuacct.stat"] {
        let path = dir.join(file);
        if path.exists() {
            found = true;
            if let Some(text) = read_source(&path, tag, events) {
                stat.extend(parse_key_values(&text));
            }
        }
    }
    let usage = dir.join("cpuacct.usage");
    if usage.exists() {
        found = true;
        if let Some(ns) = read_source(&usage, tag, events).and_then(|t| t.trim().parse().ok()) {
            stat.insert("usage_ns".to_owned(), ns);
        }
    }
    found.then(|| CgroupCpuStat {
        path: dir.to_path_buf(),
        stat,
    })
}

fn read_cgroup_procs(tag: &str, dirs: &[PathBuf], events: &mut EventLog) -> Vec<CgroupProcs> {
    let mut out = Vec::new();
    for dir in dirs {
        // Threaded v2 cgroups list threads only; the helper maps them.
        match crate::cgroup::procs_of_dir(dir) {
            Ok(pids) => out.push(CgroupProcs {
                path: dir.clone(),
                pids,
            }),
            Err(err) => events.push(EventKind::CaptureUnavailable, Some(tag), format!("{err:#}")),
        }
    }
    out
}

/// Parses the `cpuN ...` lines of `/proc/schedstat` (version 15 and later:
/// yld_count, legacy, sched_count, sched_goidle, ttwu_count, ttwu_local,
/// run time, run delay, timeslices).
pub fn parse_proc_schedstat(text: &str) -> Vec<CpuSchedstat> {
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields.next().and_then(|f| f.strip_prefix("cpu")) else {
            continue;
        };
        let Ok(cpu) = cpu.parse() else { continue };
        let values: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
        if values.len() < 9 {
            continue;
        }
        cpus.push(CpuSchedstat {
            cpu,
            sched_count: values[2],
            sched_goidle: values[3],
            ttwu_count: values[4],
            ttwu_local: values[5],
            run_time_ns: values[6],
            run_delay_ns: values[7],
            timeslices: values[8],
        });
    }
    cpus
}

/// Parses `/proc/PID/schedstat`: run time, run delay, timeslices.
pub fn parse_task_schedstat(text: &str) -> Option<(u64, u64, u64)> {
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    let run = fields.next()?.ok()?;
    let delay = fields.next()?.ok()?;
    let slices = fields.next()?.ok()?;
    Some((run, delay, slices))
}

/// Parses the numeric `key : value` lines of `/proc/PID/sched`.
pub fn parse_task_sched(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if let Ok(number) = value.trim().parse::<f64>() {
            out.insert(key.trim().to_owned(), number);
        }
    }
    out
}

/// Parses `key value` lines (`cpu.stat`).
pub fn parse_key_values(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(key), Some(Ok(value))) = (fields.next(), fields.next().map(str::parse)) {
            out.insert(key.to_owned(), value);
        }
    }
    out
}

/// Parses `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<LoadAvg> {
    let mut fields = text.split_whitespace();
    let one = fields.next()?.parse().ok()?;
    let five = fields.next()?.parse().ok()?;
    let fifteen = fields.next()?.parse().ok()?;
    let (runnable, total) = fields.next()?.split_once('/')?;
    Some(LoadAvg {
        one,
        five,
        fifteen,
        runnable: runnable.parse().ok()?,
        total: total.parse().ok()?,
    })
}

/// What the scheduler did during one phase (baseline or step), from the
/// scheduler captures taken in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub step_index: usize,
    pub captures: usize,
    /// From the first to the last capture of the phase.
    pub span_ms: u64,
    /// Per-CPU run time and run-queue delay gained over the phase (empty
    /// without `/proc/schedstat`).
    pub cpu_run_ms: Vec<f64>,
    pub cpu_delay_ms: Vec<f64>,
    /// Summed over the workers seen at both ends of the phase.
    pub worker_run_ms: f64,
    pub worker_delay_ms: f64,
    /// Involuntary switches of those workers over the phase.
    pub worker_preemptions: f64,
    pub load_one_at_end: Option<f64>,
}

/// Groups scheduler captures by step and reports what changed from the
/// phase's start (the previous phase's last capture, else its own first) to
/// its last capture.
pub fn summarize_phases(captures: &[Capture]) -> Vec<PhaseSummary> {
    let scheduler: Vec<(&Capture, &SchedulerState)> = captures
        .iter()
        .filter_map(|c| match &c.data {
            CaptureData::Scheduler(s) => Some((c, s)),
            CaptureData::CgroupProcs { .. } => None,
        })
        .collect();
    let mut steps: Vec<usize> = scheduler.iter().map(|(c, _)| c.step_index).collect();
    steps.sort_unstable();
    steps.dedup();
    let mut summaries = Vec::new();
    let mut previous_last: Option<&SchedulerState> = None;
    for step in steps {
        let mut in_phase: Vec<&(&Capture, &SchedulerState)> = scheduler
            .iter()
            .filter(|(c, _)| c.step_index == step)
            .collect();
        in_phase.sort_by_key(|(c, _)| c.elapsed_ms);
        let (first_capture, first_state) = *in_phase[0];
        let (last_capture, last_state) = *in_phase[in_phase.len() - 1];
        let start = previous_last.unwrap_or(first_state);
        let ms = |ns: u64| ns as f64 / 1e6;
        let cpu_delta = |pick: fn(&CpuSchedstat) -> u64| -> Vec<f64> {
            last_state
                .cpus
                .iter()
                .map(|end| {
                    let begin = start
                        .cpus
                        .iter()
                        .find(|c| c.cpu == end.cpu)
                        .map(pick)
                        .unwrap_or(0);
                    ms(pick(end).saturating_sub(begin))
                })
                .collect()
        };
        let (mut run, mut delay, mut preempt) = (0.0, 0.0, 0.0);
        for end in &last_state.tasks {
            let Some(begin) = start
                .tasks
                .iter()
                .chain(first_state.tasks.iter())
                .find(|t| t.pid == end.pid)
            else {
                continue;
            };
            run += ms(end.run_time_ns.saturating_sub(begin.run_time_ns));
            delay += ms(end.run_delay_ns.saturating_sub(begin.run_delay_ns));
            let switches = |t: &TaskSched| {
                t.sched
                    .get("nr_involuntary_switches")
                    .copied()
                    .unwrap_or(0.0)
            };
            preempt += (switches(end) - switches(begin)).max(0.0);
        }
        summaries.push(PhaseSummary {
            step_index: step,
            captures: in_phase.len(),
            span_ms: last_capture
                .elapsed_ms
                .saturating_sub(first_capture.elapsed_ms),
            cpu_run_ms: cpu_delta(|c| c.run_time_ns),
            cpu_delay_ms: cpu_delta(|c| c.run_delay_ns),
            worker_run_ms: run,
            worker_delay_ms: delay,
            worker_preemptions: preempt,
            load_one_at_end: last_state.loadavg.as_ref().map(|l| l.one),
        });
        previous_last = Some(last_state);
    }
    summaries
}

/// One line per phase, for `runq run`'s text output.
pub fn render_phase_summaries(summaries: &[PhaseSummary]) -> String {
    let mut out = String::new();
    for s in summaries {
        let phase = if s.step_index == 0 {
            "baseline".to_owned()
        } else {
            format!("step {}", s.step_index)
        };
        let _ = write!(
            out,
            "{phase:>9}: {} captures over {} ms, workers ran {:.1} ms, waited {:.1} ms, {} preemptions",
            s.captures, s.span_ms, s.worker_run_ms, s.worker_delay_ms, s.worker_preemptions
        );
        if !s.cpu_delay_ms.is_empty() {
            let delays: Vec<String> = s.cpu_delay_ms.iter().map(|d| format!("{d:.1}")).collect();
            let _ = write!(out, ", run-queue delay per CPU [{}] ms", delays.join(", "));
        }
        if let Some(load) = s.load_one_at_end {
            let _ = write!(out, ", load {load:.2}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(tag: &str, step: usize) -> Capture {
        Capture {
            tag: tag.to_owned(),
            elapsed_ms: 0,
            step_index: step,
            data: CaptureData::CgroupProcs { cgroups: vec![] },
        }
    }

    #[test]
    fn periodic_tags_are_prefix_and_exactly_three_digits() {
        assert_eq!(periodic_tag(0).as_deref(), Some("periodic_000"));
        assert_eq!(periodic_tag(42).as_deref(), Some("periodic_042"));
        assert_eq!(periodic_tag(999).as_deref(), Some("periodic_999"));
        assert_eq!(periodic_tag(1000), None);
        assert_eq!(parse_periodic_tag("periodic_000"), Some(0));
        assert_eq!(parse_periodic_tag("periodic_123"), Some(123));
        for bad in [
            "periodic_12",
            "periodic_1234",
            "periodic_+12",
            "periodic_ 12",
            "periodic_1a2",
            "Periodic_123",
            "periodic123",
            "xperiodic_123",
            "periodic_",
            "periodic_١٢٣",
        ] {
            assert_eq!(parse_periodic_tag(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn store_evicts_oldest_first_at_the_cap() {
        let mut bridge = SnapshotBridge::with_caps(3, 100);
        for tag in ["a", "b", "c", "d", "e"] {
            bridge.store(capture(tag, 1));
        }
        assert_eq!(bridge.tags(), ["c", "d", "e"]);
        let evicted: Vec<_> = (bridge.events().iter())
            .filter(|e| e.kind == EventKind::Eviction)
            .map(|e| e.tag.clone().unwrap())
            .collect();
        assert_eq!(evicted, ["a", "b"]);
    }

    #[test]
    fn default_cap_is_64() {
        let mut bridge = SnapshotBridge::new();
        for i in 0..100 {
            bridge.store(capture(&format!("t{i}"), 1));
        }
        assert_eq!(bridge.len(), MAX_CAPTURES);
        assert_eq!(bridge.tags()[0], "t36");
        assert_eq!(bridge.events().len(), 36);
    }

    #[test]
    fn overwrite_replaces_and_moves_to_the_back() {
        let mut bridge = SnapshotBridge::with_caps(3, 100);
        bridge.store(capture("a", 0));
        bridge.store(capture("b", 1));
        bridge.store(capture("c", 1));
        bridge.store(capture("a", 2));
        assert_eq!(bridge.tags(), ["b", "c", "a"]);
        assert_eq!(bridge.get("a").unwrap().step_index, 2);
        assert_eq!(bridge.events().len(), 1);
        assert_eq!(bridge.events()[0].kind, EventKind::Overwrite);
        // The moved entry is now the newest, so "b" is evicted next.
        bridge.store(capture("d", 2));
        assert_eq!(bridge.tags(), ["c", "a", "d"]);
    }

    #[test]
    fn event_log_caps_and_drain_marks_truncation() {
        let mut log = EventLog::new(4);
        for i in 0..10 {
            log.push(EventKind::CaptureUnavailable, None, format!("e{i}"));
        }
        assert_eq!(log.events().len(), 4);
        assert_eq!(log.dropped(), 6);
        let drained = log.drain();
        assert_eq!(drained.len(), 5);
        assert_eq!(drained[3].detail, "e3");
        assert_eq!(drained[4].kind, EventKind::Truncated);
        assert_eq!(drained[4].detail, "truncated, 6 dropped");
        // After a drain the log starts over with no marker.
        log.push(EventKind::Overwrite, Some("x"), "again");
        assert_eq!(log.drain().len(), 1);
    }

    #[test]
    fn no_truncation_marker_when_nothing_dropped() {
        let mut log = EventLog::new(MAX_EVENTS);
        for _ in 0..MAX_EVENTS {
            log.push(EventKind::Eviction, None, "x");
        }
        let drained = log.drain();
        assert_eq!(drained.len(), MAX_EVENTS);
        assert!(drained.iter().all(|e| e.kind != EventKind::Truncated));
    }

    #[test]
    fn parses_kernel_formats() {
        let schedstat = "version 17\ntimestamp 4295\ncpu0 0 0 100 40 50 20 123000000 4000000 60\n\
                         domain0 MC 3 1 2 3\ncpu1 0 0 7 1 2 1 5000000 1000000 6\n";
        let cpus = parse_proc_schedstat(schedstat);
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].sched_count, 100);
        assert_eq!(cpus[0].run_time_ns, 123_000_000);
        assert_eq!(cpus[1].cpu, 1);
        assert_eq!(cpus[1].run_delay_ns, 1_000_000);
        assert_eq!(
            parse_task_schedstat("148613 143717 2\n"),
            Some((148613, 143717, 2))
        );
        assert_eq!(parse_task_schedstat("1 2"), None);
        let sched = parse_task_sched(
            "cat (1, #threads: 1)\n----\nse.sum_exec_runtime : 1.5\nnr_switches : 3\ncurrent_node=0, x\n",
        );
        assert_eq!(sched["se.sum_exec_runtime"], 1.5);
        assert_eq!(sched["nr_switches"], 3.0);
        assert_eq!(sched.len(), 2);
        let load = parse_loadavg("0.50 0.25 0.10 3/456 789\n").unwrap();
        assert_eq!((load.one, load.runnable, load.total), (0.5, 3, 456));
        assert_eq!(
            parse_key_values("nr_periods 4\nthrottled_time 9\n")["throttled_time"],
            9
        );
    }

    #[test]
    fn phase_summary_measures_from_previous_phase_end() {
        let task = |pid, run, delay| TaskSched {
            pid,
            run_time_ns: run,
            run_delay_ns: delay,
            timeslices: 0,
            sched: BTreeMap::new(),
        };
        let sched = |tag: &str, step, ms, run| Capture {
            tag: tag.into(),
            elapsed_ms: ms,
            step_index: step,
            data: CaptureData::Scheduler(SchedulerState {
                tasks: vec![task(10, run, run / 2)],
                ..Default::default()
            }),
        };
        let captures = [
            sched("baseline", 0, 0, 0),
            sched("periodic_000", 1, 100, 40_000_000),
            sched("periodic_001", 1, 200, 90_000_000),
            capture("procs", 1),
            sched("end", 2, 300, 100_000_000),
        ];
        let summaries = summarize_phases(&captures);
        assert_eq!(summaries.len(), 3);
        assert_eq!(summaries[1].captures, 2);
        assert_eq!(summaries[1].span_ms, 100);
        assert_eq!(summaries[1].worker_run_ms, 90.0);
        assert_eq!(summaries[1].worker_delay_ms, 45.0);
        assert_eq!(summaries[2].worker_run_ms, 10.0);
        let text = render_phase_summaries(&summaries);
        assert!(
            text.contains("step 1: 2 captures over 100 ms, workers ran 90.0 ms"),
            "{text}"
        );
    }
}
