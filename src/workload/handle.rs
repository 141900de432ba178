//! Spawn, start, stop and collect workers.
//!
//! The handle is also the spawn guard: everything acquired during spawn
//! (children, pipes, the shared mapping) is owned by it as soon as it
//! exists, so an early error drops it and `Drop` kills, reaps, closes and
//! unmaps.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};

use crate::process::Forked;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::config::{allowed_cpus, AffinityIntent, CloneMode, WorkGroup, WorkType, WorkloadConfig};
use super::report::{ExitShape, WorkerReport};
use super::shm::{futex_wait, futex_wake, Shm};
use super::worker::{fork_worker_main, thread_host_main, SetupError, WorkerSpec};
use crate::error::RunqError;

/// How long spawn waits for every worker to reach the rendezvous.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How often stop re-sends its wake-ups to workers still in their body
/// (covers a signal that landed just before a blocking call).
const STOP_RESEND: Duration = Duration::from_millis(5);

/// One forked process: a worker (Fork mode) or a group host (Thread mode).
struct ChildProc {
    pid: Pid,
    /// Read end of its report pipe (non-blocking).
    report: Option<OwnedFd>,
    /// Global worker indexes it reports for.
    workers: Vec<usize>,
    buf: Vec<u8>,
    eof: bool,
    /// Set once reaped; a reaped pid is never signalled again.
    exit: Option<ExitShape>,
}

struct WorkerInfo {
    tid: i32,
    group: usize,
    index: usize,
    work_type: &'static str,
    process: usize,
}

/// Owns every worker of one workload run.
pub struct WorkloadHandle {
    clone_mode: CloneMode,
    collect_timeout: Duration,
    shm: Shm,
    workers: Vec<WorkerInfo>,
    processes: Vec<ChildProc>,
    started: bool,
}

impl WorkloadHandle {
    /// Validate, fork the workers and park them at the start rendezvous.
    /// Returns once every worker is set up (policy, nice, affinity, memory
    /// policy applied) and waiting.
    pub fn spawn(config: &WorkloadConfig) -> anyhow::Result<WorkloadHandle> {
        config.validate()?;
        let groups = config.groups();
        let specs = build_specs(config, &groups)?;
        let total = specs.len();
        let mut handle = WorkloadHandle {
            clone_mode: config.clone_mode,
            collect_timeout: config.collect_timeout,
            shm: Shm::new(total)?,
            workers: specs
                .iter()
                .map(|s| WorkerInfo {
                    tid: 0,
                    group: s.group,
                    index: s.index,
                    work_type: s.work.name(),
                    process: 0,
                })
                .collect(),
            processes: Vec::new(),
            started: false,
        };
        let mut rings = make_rings(&specs)?;
        let mut start = 0;
        for group in &groups {
            let members = &specs[start..start + group.workers];
            start += group.workers;
            if members.is_empty() {
                continue;
            }
            match config.clone_mode {
                CloneMode::Fork => {
                    for spec in members {
                        handle.fork_child(&[spec.worker], &mut rings, |fd, rings| {
                            let ring = std::mem::take(&mut rings[spec.worker]);
                            rings.clear();
                            fork_worker_main(&handle_shm_ptr(fd.1), spec, ring, fd.0)
                        })?;
                    }
                }
                CloneMode::Thread => {
                    let ids: Vec<usize> = members.iter().map(|s| s.worker).collect();
                    handle.fork_child(&ids, &mut rings, |fd, rings| {
                        let mine = ids.iter().map(|&w| std::mem::take(&mut rings[w])).collect();
                        rings.clear();
                        thread_host_main(&handle_shm_ptr(fd.1), members, mine, fd.0)
                    })?;
                }
            }
        }
        drop(rings);
        handle.wait_ready(total)?;
        for (w, info) in handle.workers.iter_mut().enumerate() {
            info.tid = handle.shm.slot(w).tid.load(Ordering::SeqCst);
        }
        Ok(handle)
    }
}

/// The child's view of the shared mapping: the same pages, borrowed from
/// the handle that lives on in the child's copy of memory until `_exit`.
fn handle_shm_ptr(shm: *const Shm) -> ShmRef {
    ShmRef(shm)
}

struct ShmRef(*const Shm);

impl std::ops::Deref for ShmRef {
    type Target = Shm;
    fn deref(&self) -> &Shm {
        // SAFETY: points at the handle's Shm, which the child never drops
        // (it leaves with _exit).
        unsafe { &*self.0 }
    }
}

impl WorkloadHandle {
    /// Fork one child with a fresh report pipe. `child` runs in the child
    /// with (report write end, shm pointer) and the ring table; it never
    /// returns.
    fn fork_child(
        &mut self,
        workers: &[usize],
        rings: &mut Vec<(Option<OwnedFd>, Option<OwnedFd>)>,
        child: impl FnOnce((OwnedFd, *const Shm), &mut Vec<(Option<OwnedFd>, Option<OwnedFd>)>),
    ) -> anyhow::Result<()> {
        let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC)
            .map_err(|e| RunqError::environment(format!("pipe2 for a report pipe failed: {e}")))?;
        let inherited: Vec<RawFd> = self
            .processes
            .iter()
            .filter_map(|p| p.report.as_ref().map(|f| f.as_raw_fd()))
            .chain(std::iter::once(read_end.as_raw_fd()))
            .collect();
        let shm_ptr: *const Shm = &self.shm;
        // SAFETY: the controller is single-threaded while forking (the
        // process model); the child runs `child`, which ends in _exit.
        match unsafe { crate::process::fork_tied() } {
            Err(e) => Err(RunqError::environment(format!(
                "fork failed after {} processes: {e}; raise the process limit (ulimit -u) or use fewer workers",
                self.processes.len()
            ))),
            Ok(Forked::Child) => {
                super::worker::child_prologue(&inherited);
                child((write_end, shm_ptr), rings);
                // SAFETY: `child` never returns; leave without unwinding if
                // it somehow did.
                unsafe { libc::_exit(1) }
            }
            Ok(Forked::Parent(pid)) => {
                drop(write_end);
                let flags = fcntl(read_end.as_raw_fd(), FcntlArg::F_GETFL)
                    .map(OFlag::from_bits_truncate)
                    .unwrap_or(OFlag::empty());
                let _ = fcntl(read_end.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK));
                let process = self.processes.len();
                for &w in workers {
                    self.workers[w].process = process;
                    if self.clone_mode == CloneMode::Fork {
                        self.workers[w].tid = pid.as_raw();
                    }
                }
                self.processes.push(ChildProc {
                    pid,
                    report: Some(read_end),
                    workers: workers.to_vec(),
                    buf: Vec::new(),
                    eof: false,
                    exit: None,
                });
                Ok(())
            }
        }
    }

    /// Wait until every worker is parked at the rendezvous. A child that
    /// dies first fails the spawn with its setup error.
    fn wait_ready(&mut self, total: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let ready = self.shm.header().ready.load(Ordering::SeqCst);
            if ready as usize >= total {
                return Ok(());
            }
            for p in 0..self.processes.len() {
                if self.processes[p].exit.is_some() {
                    continue;
                }
                let pid = self.processes[p].pid;
                match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {}
                    status => {
                        self.processes[p].exit = Some(exit_shape(status));
                        self.drain(p);
                        let text = String::from_utf8_lossy(&self.processes[p].buf).to_string();
                        let why = serde_json::from_str::<SetupError>(&text)
                            .map(|e| e.setup_error)
                            .unwrap_or_else(|_| {
                                format!(
                                    "a worker process ended before the start ({:?})",
                                    self.processes[p].exit.as_ref().unwrap()
                                )
                            });
                        return Err(RunqError::environment(why));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(RunqError::environment(format!(
                    "only {ready} of {total} workers reached the start rendezvous within {:?}; the machine is overloaded",
                    READY_DEADLINE
                )));
            }
            futex_wait(
                &self.shm.header().ready,
                ready,
                Some(Duration::from_millis(10)),
            );
        }
    }

    /// One id per worker, in report order: pid (Fork) or tid (Thread).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.workers.iter().map(|w| w.tid).collect()
    }

    /// The processes to place into cgroups (cgroup.procs): the workers in
    /// Fork mode, the group hosts in Thread mode.
    pub fn process_pids(&self) -> Vec<i32> {
        self.processes.iter().map(|p| p.pid.as_raw()).collect()
    }

    pub fn clone_mode(&self) -> CloneMode {
        self.clone_mode
    }

    /// Release the workers from the rendezvous.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let header = self.shm.header();
        header.start.store(1, Ordering::SeqCst);
        futex_wake(&header.start, i32::MAX);
        self.started = true;
        Ok(())
    }

    /// Move one worker (index into `worker_pids()`) onto `cpus`.
    pub fn set_affinity(&self, worker: usize, cpus: &[usize]) -> anyhow::Result<()> {
        let Some(info) = self.workers.get(worker) else {
            return Err(RunqError::bad_input(format!(
                "set_affinity: worker {worker} does not exist; there are {} workers",
                self.workers.len()
            )));
        };
        if cpus.is_empty() {
            return Err(RunqError::bad_input(
                "set_affinity: empty CPU set; give at least one CPU",
            ));
        }
        let mut set = nix::sched::CpuSet::new();
        for &c in cpus {
            set.set(c).map_err(|e| {
                RunqError::bad_input(format!("set_affinity: CPU {c} is out of range: {e}"))
            })?;
        }
        nix::sched::sched_setaffinity(Pid::from_raw(info.tid), &set).map_err(|e| {
            RunqError::bad_input(format!(
                "set_affinity: worker {worker} (tid {}) to CPUs {} failed: {e}; pick CPUs of its cpuset",
                info.tid,
                crate::topology::format_cpu_list(cpus)
            ))
        })
    }

    /// Iterations so far of every worker, in report order.
    pub fn snapshot_iterations(&self) -> Vec<u64> {
        (0..self.workers.len())
            .map(|w| self.shm.slot(w).iterations.load(Ordering::Relaxed))
            .collect()
    }

    /// Stop every worker and collect one report each, in report order.
    /// Workers that did not report by the collect deadline are SIGKILLed;
    /// every worker gets a report (a sentinel if it produced none).
    pub fn stop_and_collect(mut self) -> Vec<WorkerReport> {
        let header = self.shm.header();
        header.stop.store(1, Ordering::SeqCst);
        // Never-started workers are released too; they see the stop at once.
        header.start.store(1, Ordering::SeqCst);
        futex_wake(&header.start, i32::MAX);
        self.wake_workers();
        let deadline = Instant::now() + self.collect_timeout;
        let mut last_wake = Instant::now();
        loop {
            let pending: Vec<usize> = (0..self.processes.len())
                .filter(|&p| !self.processes[p].eof)
                .collect();
            let now = Instant::now();
            if pending.is_empty() || now >= deadline {
                break;
            }
            if now.duration_since(last_wake) >= STOP_RESEND {
                self.wake_workers();
                last_wake = now;
            }
            let wait = (deadline - now).min(STOP_RESEND);
            let ready: Vec<usize> = {
                let mut fds: Vec<PollFd> = pending
                    .iter()
                    .map(|&p| {
                        PollFd::new(
                            self.processes[p].report.as_ref().unwrap().as_fd(),
                            PollFlags::POLLIN,
                        )
                    })
                    .collect();
                let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
                if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) <= 0 {
                    continue;
                }
                fds.iter()
                    .zip(&pending)
                    .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(_, &p)| p)
                    .collect()
            };
            for p in ready {
                self.drain(p);
                if self.processes[p].eof {
                    self.reap(p);
                }
            }
        }
        for p in 0..self.processes.len() {
            if !self.processes[p].eof {
                let _ = kill(self.processes[p].pid, Signal::SIGKILL);
                self.reap(p);
                self.processes[p].exit = Some(ExitShape::TimedOut);
            }
        }
        let reports = self.build_reports();
        self.processes.iter_mut().for_each(|p| p.report = None);
        reports
    }

    /// Futex-wake every word a worker may block on, and SIGUSR1 every
    /// worker still in its body.
    fn wake_workers(&self) {
        for w in 0..self.workers.len() {
            let slot = self.shm.slot(w);
            futex_wake(&slot.futex, i32::MAX);
            futex_wake(&slot.aux, i32::MAX);
        }
        for (w, info) in self.workers.iter().enumerate() {
            let proc = &self.processes[info.process];
            if proc.exit.is_some() || self.shm.slot(w).done.load(Ordering::SeqCst) != 0 {
                continue;
            }
            match self.clone_mode {
                CloneMode::Fork => {
                    let _ = kill(proc.pid, Signal::SIGUSR1);
                }
                CloneMode::Thread if info.tid > 0 => {
                    // SAFETY: tgkill only targets the tid inside our own
                    // (unreaped) host process.
                    unsafe {
                        libc::syscall(libc::SYS_tgkill, proc.pid.as_raw(), info.tid, libc::SIGUSR1);
                    }
                }
                CloneMode::Thread => {}
            }
        }
    }

    /// Read whatever the child's pipe holds; marks EOF.
    fn drain(&mut self, p: usize) {
        let proc = &mut self.processes[p];
        let Some(fd) = proc.report.as_ref() else {
            proc.eof = true;
            return;
        };
        let mut chunk = [0u8; 65536];
        loop {
            match nix::unistd::read(fd.as_raw_fd(), &mut chunk) {
                Ok(0) => {
                    proc.eof = true;
                    return;
                }
                Ok(n) => proc.buf.extend_from_slice(&chunk[..n]),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    proc.eof = true;
                    return;
                }
            }
        }
    }

    fn reap(&mut self, p: usize) {
        if self.processes[p].exit.is_none() {
            let status = loop {
                match waitpid(self.processes[p].pid, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            self.processes[p].exit = Some(exit_shape(status));
        }
    }

    fn build_reports(&self) -> Vec<WorkerReport> {
        let mut out: Vec<Option<WorkerReport>> = vec![None; self.workers.len()];
        for proc in &self.processes {
            let exit = proc
                .exit
                .clone()
                .unwrap_or(ExitShape::WaitFailed("never reaped".into()));
            // One JSON line per reporting worker, matched by (group, index).
            let text = String::from_utf8_lossy(&proc.buf);
            let mut garbage: Option<String> = None;
            let mut parsed: Vec<WorkerReport> = Vec::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match serde_json::from_str::<WorkerReport>(line) {
                    Ok(r) => parsed.push(r),
                    Err(_) => {
                        garbage.get_or_insert_with(|| line.chars().take(200).collect());
                    }
                }
            }
            for &w in &proc.workers {
                let info = &self.workers[w];
                let found = parsed
                    .iter()
                    .position(|r| r.group == info.group && r.index == info.index);
                if let Some(pos) = found {
                    let mut report = parsed.swap_remove(pos);
                    report.tid = info.tid;
                    // A report that arrived stands; a host killed at the
                    // deadline for another thread does not spoil it.
                    if !matches!(exit, ExitShape::Exited(0) | ExitShape::TimedOut) {
                        report.completed = false;
                        report.exit = exit.clone();
                    }
                    out[w] = Some(report);
                    continue;
                }
                let shape = match (&exit, &garbage) {
                    (ExitShape::Exited(0), Some(g)) => {
                        ExitShape::Panicked(format!("unreadable report: {g}"))
                    }
                    (ExitShape::Exited(0), None) => {
                        ExitShape::Panicked("the worker exited without a report".into())
                    }
                    (other, _) => other.clone(),
                };
                let mut report =
                    WorkerReport::sentinel(info.tid, info.group, info.index, info.work_type, shape);
                report.work_units = self.shm.slot(w).iterations.load(Ordering::SeqCst);
                out[w] = Some(report);
            }
        }
        out.into_iter()
            .enumerate()
            .map(|(w, r)| {
                r.unwrap_or_else(|| {
                    let info = &self.workers[w];
                    WorkerReport::sentinel(
                        info.tid,
                        info.group,
                        info.index,
                        info.work_type,
                        ExitShape::WaitFailed("no process for this worker".into()),
                    )
                })
            })
            .collect()
    }
}

impl Drop for WorkloadHandle {
    /// Kill and reap every child not yet reaped; pipes and the mapping are
    /// closed and unmapped by their own destructors.
    fn drop(&mut self) {
        for p in 0..self.processes.len() {
            if self.processes[p].exit.is_none() {
                let _ = kill(self.processes[p].pid, Signal::SIGKILL);
                self.reap(p);
            }
        }
    }
}

fn exit_shape(status: nix::Result<WaitStatus>) -> ExitShape {
    match status {
        Ok(WaitStatus::Exited(_, code)) => ExitShape::Exited(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => ExitShape::Signaled(sig as i32),
        Ok(other) => ExitShape::WaitFailed(format!("unexpected wait status {other:?}")),
        Err(e) => ExitShape::WaitFailed(e.to_string()),
    }
}

/// Ring pipes for pipe_io, cache_pipe and wake_chain: member k reads pipe
/// k of its set and writes pipe k+1 (mod the set size).
fn make_rings(specs: &[WorkerSpec]) -> anyhow::Result<Vec<(Option<OwnedFd>, Option<OwnedFd>)>> {
    let mut rings: Vec<(Option<OwnedFd>, Option<OwnedFd>)> =
        (0..specs.len()).map(|_| (None, None)).collect();
    for spec in specs {
        let is_ring = matches!(
            spec.work,
            WorkType::PipeIo { .. } | WorkType::CachePipe | WorkType::WakeChain { .. }
        );
        if !is_ring || spec.set_pos != 0 {
            continue;
        }
        let size = spec.set_size;
        for k in 0..size {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| {
                RunqError::environment(format!(
                    "pipe2 for a worker ring failed: {e}; raise the open-file limit (ulimit -n)"
                ))
            })?;
            rings[spec.worker + k].0 = Some(r);
            rings[spec.worker + (k + size - 1) % size].1 = Some(w);
        }
    }
    Ok(rings)
}

/// Resolve every group's workers to specs: global index, set membership,
/// CPU masks.
fn build_specs(config: &WorkloadConfig, groups: &[WorkGroup]) -> anyhow::Result<Vec<WorkerSpec>> {
    let allowed = allowed_cpus();
    // Reading the topology costs sysfs reads; only LlcAligned needs it.
    let wants_llcs = groups
        .iter()
        .any(|g| g.affinity == AffinityIntent::LlcAligned);
    let llcs: Vec<Vec<usize>> = if wants_llcs {
        crate::topology::Topology::host()
            .map(|t| t.llcs())
            .unwrap_or_default()
            .into_iter()
            .map(|l| {
                l.into_iter()
                    .filter(|c| allowed.contains(c))
                    .collect::<Vec<_>>()
            })
            .filter(|l| !l.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let mut specs = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let set_size = group.work.set_size().max(1);
        let first = specs.len();
        let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed ^ ((g as u64) << 32));
        for i in 0..group.workers {
            let affinity = match &group.affinity {
                AffinityIntent::Inherit => None,
                AffinityIntent::Exact(cpus) => Some(cpus.clone()),
                AffinityIntent::SingleCpu => Some(vec![*allowed.iter().min().unwrap_or(&0)]),
                AffinityIntent::LlcAligned if llcs.is_empty() => None,
                AffinityIntent::LlcAligned => Some(llcs[i % llcs.len()].clone()),
                AffinityIntent::RandomSubset { count } => {
                    let mut pick: Vec<usize> =
                        allowed.choose_multiple(&mut rng, *count).copied().collect();
                    pick.sort_unstable();
                    Some(pick)
                }
                AffinityIntent::CrossCgroup => {
                    return Err(RunqError::bad_input(format!(
                        "group {g}: affinity CrossCgroup must be resolved to Exact before spawning"
                    )))
                }
            };
            let leader = first + i / set_size * set_size;
            specs.push(WorkerSpec {
                worker: first + i,
                group: g,
                index: i,
                work: group.work.clone(),
                allowed: affinity.clone().unwrap_or_else(|| allowed.clone()),
                affinity,
                policy: group.policy.clone(),
                nice: group.nice,
                mem_policy: group.mem_policy.clone(),
                set_leader: leader,
                set_pos: i % set_size,
                set_size,
                seed: config.seed,
            });
        }
    }
    Ok(specs)
}
