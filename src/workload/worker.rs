//! The worker side: what runs inside a forked worker process or a thread of
//! a group host. Setup (affinity, memory policy, scheduling policy, nice),
//! the start rendezvous, the body under catch_unwind, and the JSON report.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::bodies::{run_body, set_own_policy, BodyEnv, WorkerContext};
use super::config::{MemPolicy, WorkType};
use super::policy::SchedPolicy;
use super::report::{ExitShape, WorkerReport};
use super::shm::{futex_wait, futex_wake, Shm};
use super::telemetry::Telemetry;

/// Exit code of a worker or host whose setup failed (its pipe carries a
/// [`SetupError`]).
pub(crate) const SETUP_FAILED_EXIT: i32 = 3;

/// Everything one worker needs to know about itself.
#[derive(Clone, Debug)]
pub(crate) struct WorkerSpec {
    pub worker: usize,
    pub group: usize,
    pub index: usize,
    pub work: WorkType,
    /// Resolved CPU mask, None to inherit.
    pub affinity: Option<Vec<usize>>,
    /// CPUs the worker may use (its mask, or the controller's).
    pub allowed: Vec<usize>,
    pub policy: SchedPolicy,
    pub nice: i32,
    pub mem_policy: MemPolicy,
    pub set_leader: usize,
    pub set_pos: usize,
    pub set_size: usize,
    pub seed: u64,
}

/// Sent instead of a report when a worker could not be set up.
#[derive(Serialize, Deserialize)]
pub(crate) struct SetupError {
    pub setup_error: String,
}

pub(crate) enum Outcome {
    Report(Box<WorkerReport>),
    SetupFailed(String),
}

/// First thing in every forked child (which `process::fork_tied` already
/// tied to the controller's life): close the fds it does not use, then the
/// stop signal (SIGUSR1, no SA_RESTART so blocking calls return EINTR) and
/// SIGPIPE ignored (a partner that already left must not kill us).
pub(crate) fn child_prologue(inherited_fds: &[RawFd]) {
    for &fd in inherited_fds {
        // Copies of fds this child does not use; nothing else owns them here.
        let _ = nix::unistd::close(fd);
    }
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    extern "C" fn on_stop_signal(_: libc::c_int) {}
    let stop = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler does nothing, so it is async-signal-safe.
    unsafe {
        let _ = sigaction(Signal::SIGUSR1, &stop);
        let _ = sigaction(Signal::SIGPIPE, &ignore);
    }
    let mut unblock = SigSet::empty();
    unblock.add(Signal::SIGUSR1);
    let _ = unblock.thread_unblock();
}

/// Write `bytes` to the report pipe and leave the process with `code`.
pub(crate) fn finish(report_fd: OwnedFd, bytes: &[u8], code: i32) -> ! {
    let mut file = std::fs::File::from(report_fd);
    let _ = file.write_all(bytes);
    drop(file);
    // SAFETY: leaving the child without running the controller's
    // destructors (it owns copies of the controller's state).
    unsafe { libc::_exit(code) }
}

/// Body of a forked worker process.
pub(crate) fn fork_worker_main(
    shm: &Shm,
    spec: &WorkerSpec,
    ring: (Option<OwnedFd>, Option<OwnedFd>),
    report_fd: OwnedFd,
) -> ! {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&report_fd);
    let outcome = catch_unwind(AssertUnwindSafe(|| run_worker(shm, spec, ring, raw)));
    match outcome {
        Ok(Outcome::Report(report)) => {
            let mut line = serde_json::to_vec(&*report).unwrap_or_default();
            line.push(b'\n');
            finish(report_fd, &line, 0)
        }
        Ok(Outcome::SetupFailed(msg)) => setup_failed(report_fd, msg),
        Err(_) => finish(report_fd, b"", 101),
    }
}

fn setup_failed(report_fd: OwnedFd, msg: String) -> ! {
    let bytes = serde_json::to_vec(&SetupError { setup_error: msg }).unwrap_or_default();
    finish(report_fd, &bytes, SETUP_FAILED_EXIT)
}

/// Body of a group host in thread mode: one thread per worker; the host
/// writes their reports, one JSON line each.
pub(crate) fn thread_host_main(
    shm: &Shm,
    specs: &[WorkerSpec],
    rings: Vec<(Option<OwnedFd>, Option<OwnedFd>)>,
    report_fd: OwnedFd,
) -> ! {
    let raw = std::os::fd::AsRawFd::as_raw_fd(&report_fd);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|scope| {
        for (pos, (spec, ring)) in specs.iter().zip(rings).enumerate() {
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("runq-w{}", spec.worker))
                .spawn_scoped(scope, move || {
                    let outcome =
                        match catch_unwind(AssertUnwindSafe(|| run_worker(shm, spec, ring, raw))) {
                            Ok(o) => o,
                            Err(p) => Outcome::SetupFailed(format!(
                                "worker thread failed outside its body: {}",
                                panic_message(&p)
                            )),
                        };
                    let _ = tx.send((pos, outcome));
                });
            if let Err(e) = spawned {
                // SAFETY: this fd is the report pipe; we leave right after.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                std::mem::forget(report_fd);
                setup_failed(
                    fd,
                    format!("cannot start worker thread {}: {e}", spec.worker),
                );
            }
        }
        drop(tx);
        // Each report goes out as its own line as soon as its thread is
        // done, so a thread that hangs does not take its siblings' reports
        // with it when the controller kills the host.
        let mut pipe = std::mem::ManuallyDrop::new(std::fs::File::from(report_fd));
        let mut left = specs.len();
        for (_, outcome) in rx.iter() {
            match outcome {
                Outcome::Report(r) => {
                    let mut line = serde_json::to_vec(&*r).unwrap_or_default();
                    line.push(b'\n');
                    let _ = pipe.write_all(&line);
                }
                Outcome::SetupFailed(msg) => {
                    // SAFETY: the report pipe's fd, owned by `pipe`, which
                    // is never dropped; we leave right after.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    setup_failed(fd, msg);
                }
            }
            left -= 1;
            if left == 0 {
                break;
            }
        }
        // SAFETY: leaving the host without unwinding; the kernel closes
        // the pipe.
        unsafe { libc::_exit(0) }
    })
}

pub(crate) fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Set up, wait at the rendezvous, run the body, build the report.
fn run_worker(
    shm: &Shm,
    spec: &WorkerSpec,
    ring: (Option<OwnedFd>, Option<OwnedFd>),
    report_fd: RawFd,
) -> Outcome {
    let tid = nix::unistd::gettid().as_raw();
    let slot = shm.slot(spec.worker);
    slot.tid.store(tid, Ordering::SeqCst);
    if let Err(msg) = apply_setup(spec) {
        return Outcome::SetupFailed(format!("group {} worker {}: {msg}", spec.group, spec.index));
    }
    let header = shm.header();
    header.ready.fetch_add(1, Ordering::SeqCst);
    futex_wake(&header.ready, i32::MAX);
    while header.start.load(Ordering::SeqCst) == 0 {
        futex_wait(&header.start, 0, None);
    }
    let seed = spec
        .seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(spec.worker as u64);
    let ctx = WorkerContext {
        shm,
        worker: spec.worker,
        group: spec.group,
        index: spec.index,
        work: spec.work.clone(),
        report_fd,
        telemetry: RefCell::new(Telemetry::start(
            &slot.iterations,
            seed,
            spec.work.is_pure_compute(),
        )),
    };
    let mut env = BodyEnv {
        ring_read: ring.0,
        ring_write: ring.1,
        set_leader: spec.set_leader,
        set_pos: spec.set_pos,
        set_size: spec.set_size,
        allowed: spec.allowed.clone(),
        base_nice: spec.nice,
    };
    let result = catch_unwind(AssertUnwindSafe(|| run_body(&ctx, &mut env)));
    slot.done.store(1, Ordering::SeqCst);
    drop(env);
    let telemetry = ctx.telemetry.into_inner();
    let name = spec.work.name();
    match result {
        Ok(units) => Outcome::Report(Box::new(
            telemetry.into_report(tid, spec.group, spec.index, name, units),
        )),
        Err(payload) => {
            let mut report = telemetry.into_report(tid, spec.group, spec.index, name, None);
            report.completed = false;
            report.exit = ExitShape::Panicked(panic_message(&payload));
            Outcome::Report(Box::new(report))
        }
    }
}

fn apply_setup(spec: &WorkerSpec) -> Result<(), String> {
    if let Some(cpus) = &spec.affinity {
        let mut set = nix::sched::CpuSet::new();
        for &c in cpus {
            set.set(c)
                .map_err(|e| format!("CPU {c} cannot be in a CPU set: {e}"))?;
        }
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(|e| {
            format!(
                "sched_setaffinity to CPUs {} failed: {e}; pick CPUs this process may use",
                crate::topology::format_cpu_list(cpus)
            )
        })?;
    }
    apply_mem_policy(&spec.mem_policy)?;
    let (policy, prio) = match spec.policy {
        SchedPolicy::Normal => (libc::SCHED_OTHER, 0),
        SchedPolicy::Batch => (libc::SCHED_BATCH, 0),
        SchedPolicy::Idle => (libc::SCHED_IDLE, 0),
        SchedPolicy::Fifo(p) => (libc::SCHED_FIFO, p as i32),
        SchedPolicy::RoundRobin(p) => (libc::SCHED_RR, p as i32),
        SchedPolicy::Ext => (SCHED_EXT, 0),
    };
    if spec.policy == SchedPolicy::Ext && !set_own_policy(policy, prio) {
        return Err(format!(
            "scheduling policy ext (SCHED_EXT) refused: {}; it needs a kernel with sched_ext \
             (`runq vm --kernel sched_ext`)",
            std::io::Error::last_os_error()
        ));
    }
    if spec.policy != SchedPolicy::Normal && !set_own_policy(policy, prio) {
        return Err(format!(
            "scheduling policy {:?} refused: {}; real-time policies need root or CAP_SYS_NICE",
            spec.policy,
            std::io::Error::last_os_error()
        ));
    }
    if spec.nice != 0 {
        // SAFETY: setpriority on the calling thread.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, spec.nice) };
        if rc != 0 {
            return Err(format!(
                "nice {} refused: {}; negative nice needs root or CAP_SYS_NICE",
                spec.nice,
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The SCHED_EXT policy number (not in libc yet).
const SCHED_EXT: libc::c_int = 7;

fn apply_mem_policy(policy: &MemPolicy) -> Result<(), String> {
    let (mode, nodes): (libc::c_int, &[usize]) = match policy {
        MemPolicy::Default => return Ok(()),
        MemPolicy::Local => (libc::MPOL_LOCAL, &[]),
        MemPolicy::Bind(n) => (libc::MPOL_BIND, n),
        MemPolicy::Interleave(n) => (libc::MPOL_INTERLEAVE, n),
        MemPolicy::Preferred(n) => (libc::MPOL_PREFERRED, std::slice::from_ref(n)),
    };
    let mut mask = [0u64; 16];
    for &n in nodes {
        if n >= 64 * mask.len() {
            return Err(format!("memory node {n} is beyond node 1023"));
        }
        mask[n / 64] |= 1 << (n % 64);
    }
    let (mask_ptr, maxnode) = if nodes.is_empty() {
        (std::ptr::null(), 0u64)
    } else {
        (mask.as_ptr(), (64 * mask.len()) as u64 + 1)
    };
    // SAFETY: set_mempolicy reads maxnode-1 bits from the mask we own.
    let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mask_ptr, maxnode) };
    if rc != 0 {
        return Err(format!(
            "memory policy {policy:?} refused: {}; use nodes listed in /sys/devices/system/node/online",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
