//! Worker bodies: one loop per work type, each ending when the stop word is
//! set, ticking the telemetry once per iteration.

use std::cell::RefCell;
use std::hint::black_box;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use nix::errno::Errno;

use super::config::{Phase, WorkType};
use super::shm::{futex_wait, futex_wake, Shm};
use super::telemetry::{current_cpu, mono_ns, Telemetry};

/// What a worker body sees: its identity, the stop word and its telemetry.
pub struct WorkerContext<'a> {
    pub(crate) shm: &'a Shm,
    /// Index of this worker over all groups (its shared-memory slot).
    pub(crate) worker: usize,
    pub(crate) group: usize,
    pub(crate) index: usize,
    pub(crate) work: WorkType,
    /// The report pipe (thread mode: the host's).
    pub(crate) report_fd: std::os::fd::RawFd,
    pub(crate) telemetry: RefCell<Telemetry<'a>>,
}

impl<'a> WorkerContext<'a> {
    /// True once the controller asked workers to stop.
    #[inline]
    pub fn should_stop(&self) -> bool {
        self.shm.stopping()
    }

    /// One iteration ended with `units` of work done.
    #[inline]
    pub fn tick(&self, units: u64) {
        self.telemetry.borrow_mut().tick(units);
    }

    /// Record a wake or resume latency in ns.
    pub fn record_latency_ns(&self, ns: u64) {
        self.telemetry.borrow_mut().latency(ns);
    }

    pub fn group(&self) -> usize {
        self.group
    }

    /// Index within the group.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Index over all groups.
    pub fn worker(&self) -> usize {
        self.worker
    }

    pub fn work(&self) -> &WorkType {
        &self.work
    }

    /// Test hook: write `bytes` as this worker's report and leave at once
    /// with exit code 0 (in thread mode this ends the whole group host).
    #[doc(hidden)]
    pub fn write_raw_report_and_exit(&self, bytes: &[u8]) -> ! {
        // SAFETY: writing a buffer we own to our report pipe, then leaving
        // without unwinding.
        unsafe {
            libc::write(self.report_fd, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0)
        }
    }

    /// Iterations so far (the shared counter).
    pub fn iterations(&self) -> u64 {
        self.shm
            .slot(self.worker)
            .iterations
            .load(Ordering::Relaxed)
    }
}

/// The CpuSpin loop body: `iters` dependent multiply-adds. Public so the
/// benchmark can run the same body in a bare process.
#[inline(never)]
pub fn spin(iters: u64) -> u64 {
    let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
    for i in 0..iters {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
    }
    black_box(x)
}

/// Spin operations per CpuSpin iteration (tens of microseconds), so the
/// per-iteration telemetry costs well under 1% of the loop.
pub const SPIN_CHUNK: u64 = 20_000;

/// Per-worker resources a body needs beyond its context.
pub(crate) struct BodyEnv {
    /// Ring types (pipe_io, cache_pipe, wake_chain): read from the previous
    /// member, write to the next.
    pub ring_read: Option<OwnedFd>,
    pub ring_write: Option<OwnedFd>,
    /// Slot of the first member of this worker's set, its position in the
    /// set and the set's size.
    pub set_leader: usize,
    pub set_pos: usize,
    pub set_size: usize,
    /// CPUs this worker may use.
    pub allowed: Vec<usize>,
    pub base_nice: i32,
}

/// Run the body of `ctx.work`. Returns the work units when the body counts
/// them itself (Custom), None when the telemetry's count stands.
pub(crate) fn run_body(ctx: &WorkerContext, env: &mut BodyEnv) -> Option<u64> {
    match ctx.work.clone() {
        WorkType::CpuSpin => tick_until_stop(ctx, || {
            spin(SPIN_CHUNK);
        }),
        WorkType::YieldHeavy => tick_until_stop(ctx, || {
            spin(200);
            yield_now();
        }),
        WorkType::Mixed => mixed(ctx),
        WorkType::IoSync => {
            let mut io = IoFile::new();
            tick_until_stop(ctx, || io.sync_write());
        }
        WorkType::Bursty { burst_ms, sleep_ms } => {
            while !ctx.should_stop() {
                spin_for(ctx, burst_ms * 1_000_000);
                sleep_measured(ctx, sleep_ms * 1_000_000);
            }
        }
        WorkType::PipeIo { burst_iters } => ring(ctx, env, || {
            spin(burst_iters);
        }),
        WorkType::CachePipe => {
            let mut buf = CacheBuf::new(256, 64);
            ring(ctx, env, || buf.walk());
        }
        WorkType::WakeChain { .. } => ring(ctx, env, || {
            spin(1000);
        }),
        WorkType::FutexPingPong { spin_iters } => ping_pong(ctx, env, spin_iters),
        WorkType::FutexFanOut { spin_iters, .. } => fan_out(ctx, env, 0, || {
            spin(spin_iters);
        }),
        WorkType::FanOutCompute {
            footprint_kb,
            ops,
            sleep_us,
            ..
        } => {
            let mut buf = CacheBuf::new(footprint_kb, 64);
            fan_out(ctx, env, sleep_us * 1000, || buf.ops(ops));
        }
        WorkType::CachePressure { size_kb, stride } => {
            let mut buf = CacheBuf::new(size_kb, stride);
            tick_until_stop(ctx, || buf.walk());
        }
        WorkType::CacheYield => {
            let mut buf = CacheBuf::new(256, 64);
            tick_until_stop(ctx, || {
                buf.walk();
                yield_now();
            });
        }
        WorkType::Sequence { phases } => sequence(ctx, &phases),
        WorkType::ForkExit => fork_exit(ctx),
        WorkType::NiceSweep => nice_sweep(ctx, env.base_nice),
        WorkType::AffinityChurn { spin_iters } => affinity_churn(ctx, &env.allowed, spin_iters),
        WorkType::PolicyChurn { spin_iters } => policy_churn(ctx, spin_iters),
        WorkType::PageFaultChurn {
            region_kb,
            touches,
            spin_iters,
        } => page_fault_churn(ctx, region_kb, touches, spin_iters),
        WorkType::MutexContention {
            hold_iters,
            work_iters,
            ..
        } => mutex_contention(ctx, env, hold_iters, work_iters),
        WorkType::Custom(custom) => return Some((custom.body)(ctx)),
    }
    None
}

/// The loop of the simple bodies: one unit of work, one tick, until stopped.
fn tick_until_stop(ctx: &WorkerContext, mut unit: impl FnMut()) {
    while !ctx.should_stop() {
        unit();
        ctx.tick(1);
    }
}

fn yield_now() {
    // Cannot fail on Linux.
    let _ = nix::sched::sched_yield();
}

/// Spin in chunks until `ns` of wall time passed (or stop), one tick per
/// chunk.
fn spin_for(ctx: &WorkerContext, ns: u64) {
    let end = mono_ns() + ns;
    while !ctx.should_stop() && mono_ns() < end {
        spin(SPIN_CHUNK / 4);
        ctx.tick(1);
    }
}

/// Sleep `ns` on CLOCK_MONOTONIC; a signal (the stop) cuts it short.
/// Records the resume latency (actual - requested) when the sleep ran to
/// its end, and ticks once.
fn sleep_measured(ctx: &WorkerContext, ns: u64) {
    if ctx.should_stop() {
        return;
    }
    let begin = mono_ns();
    let slept = nix::time::clock_nanosleep(
        nix::time::ClockId::CLOCK_MONOTONIC,
        nix::time::ClockNanosleepFlags::empty(),
        &nix::sys::time::TimeSpec::from_duration(std::time::Duration::from_nanos(ns)),
    );
    if slept.is_ok() {
        let late = (mono_ns() - begin).saturating_sub(ns);
        let mut tel = ctx.telemetry.borrow_mut();
        tel.latency(late);
        tel.credit_sleep(ns);
        tel.tick(1);
    }
}

fn mixed(ctx: &WorkerContext) {
    let mut step = 0u64;
    while !ctx.should_stop() {
        match step % 3 {
            0 => {
                spin(SPIN_CHUNK);
                ctx.tick(1);
            }
            1 => {
                yield_now();
                ctx.tick(1);
            }
            _ => sleep_measured(ctx, 100_000),
        }
        step += 1;
    }
}

/// An unlinked temporary file for synchronous writes; on disk when
/// /var/tmp exists (tmpfs makes fdatasync free).
struct IoFile {
    file: std::fs::File,
    block: Vec<u8>,
    offset: u64,
}

impl IoFile {
    fn new() -> IoFile {
        let dir = if std::path::Path::new("/var/tmp").is_dir() {
            std::path::PathBuf::from("/var/tmp")
        } else {
            std::env::temp_dir()
        };
        let file = tempfile::tempfile_in(&dir)
            .or_else(|_| tempfile::tempfile())
            .unwrap_or_else(|e| panic!("io_sync: cannot create a temp file in {dir:?}: {e}"));
        IoFile {
            file,
            block: vec![0xa5; 4096],
            offset: 0,
        }
    }

    fn sync_write(&mut self) {
        use std::os::unix::fs::FileExt;
        // Errors (full disk) are not the scheduler's business; keep going.
        let _ = self.file.write_all_at(&self.block, self.offset);
        let _ = self.file.sync_data();
        self.offset = (self.offset + 4096) % (256 * 4096);
    }
}

/// A buffer walked with a stride: the cache-pressure kernel.
struct CacheBuf {
    data: Vec<u8>,
    stride: usize,
    pos: usize,
    acc: u64,
}

impl CacheBuf {
    fn new(size_kb: usize, stride: usize) -> CacheBuf {
        CacheBuf {
            data: vec![1; size_kb.max(1) * 1024],
            stride: stride.max(1),
            pos: 0,
            acc: 0,
        }
    }

    /// One pass over the whole buffer.
    fn walk(&mut self) {
        let mut i = 0;
        while i < self.data.len() {
            self.acc = self.acc.wrapping_add(self.data[i] as u64);
            self.data[i] = self.acc as u8;
            i += self.stride;
        }
        black_box(self.acc);
    }

    /// `ops` strided touches, continuing where the last call stopped.
    fn ops(&mut self, ops: u64) {
        for _ in 0..ops {
            self.acc = self.acc.wrapping_add(self.data[self.pos] as u64);
            self.data[self.pos] = self.acc as u8;
            self.pos = (self.pos + self.stride) % self.data.len();
        }
        black_box(self.acc);
    }
}

/// Read one 8-byte stamp; None on stop, EOF or error.
fn read_stamp(ctx: &WorkerContext, fd: &OwnedFd) -> Option<u64> {
    let mut buf = [0u8; 8];
    loop {
        if ctx.should_stop() {
            return None;
        }
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(8) => return Some(u64::from_ne_bytes(buf)),
            Err(Errno::EINTR) => continue,
            _ => return None,
        }
    }
}

/// Write one 8-byte stamp (atomic: below PIPE_BUF); false on error.
fn write_stamp(ctx: &WorkerContext, fd: &OwnedFd, stamp: u64) -> bool {
    let buf = stamp.to_ne_bytes();
    loop {
        match nix::unistd::write(fd, &buf) {
            Ok(8) => return true,
            Err(Errno::EINTR) if !ctx.should_stop() => continue,
            _ => return false,
        }
    }
}

/// A ring of pipes: each member waits for the token (the sender's
/// CLOCK_MONOTONIC stamp), records the wake latency, works, and passes it
/// on. Member 0 injects the token. With two members this is a ping-pong.
fn ring(ctx: &WorkerContext, env: &mut BodyEnv, mut work: impl FnMut()) {
    let (Some(rd), Some(wr)) = (env.ring_read.as_ref(), env.ring_write.as_ref()) else {
        panic!("ring work type without its pipes");
    };
    if env.set_pos == 0 && !write_stamp(ctx, wr, mono_ns()) {
        return;
    }
    while let Some(stamp) = read_stamp(ctx, rd) {
        ctx.record_latency_ns(mono_ns().saturating_sub(stamp));
        work();
        ctx.tick(1);
        if !write_stamp(ctx, wr, mono_ns()) {
            return;
        }
    }
}

/// Two workers hand a futex word back and forth; the word holds whose turn
/// it is, the leader slot's stamp when the turn was handed over.
fn ping_pong(ctx: &WorkerContext, env: &BodyEnv, spin_iters: u64) {
    let leader = ctx.shm.slot(env.set_leader);
    let me = env.set_pos as u32;
    let other = 1 - me;
    while !ctx.should_stop() {
        let turn = leader.futex.load(Ordering::Acquire);
        if turn != me {
            futex_wait(&leader.futex, turn, None);
            continue;
        }
        let stamp = leader.stamp_ns.load(Ordering::Acquire);
        if stamp != 0 {
            ctx.record_latency_ns(mono_ns().saturating_sub(stamp));
        }
        spin(spin_iters);
        ctx.tick(1);
        leader.stamp_ns.store(mono_ns(), Ordering::Release);
        leader.futex.store(other, Ordering::Release);
        futex_wake(&leader.futex, 1);
    }
}

/// One waker (position 0) and its wakees. The leader slot's futex word is
/// a generation number, its aux word counts the wakees done with it.
fn fan_out(ctx: &WorkerContext, env: &BodyEnv, waker_sleep_ns: u64, mut work: impl FnMut()) {
    let leader = ctx.shm.slot(env.set_leader);
    let wakees = (env.set_size - 1) as u32;
    // The last wakee to acknowledge stamps the slot after the leader's
    // (unused otherwise), so the waker can measure its own wake-up.
    let ack_stamp = &ctx.shm.slot(env.set_leader + 1).stamp_ns;
    if env.set_pos == 0 {
        while !ctx.should_stop() {
            if waker_sleep_ns > 0 {
                sleep_measured(ctx, waker_sleep_ns);
            } else {
                spin(1000);
            }
            leader.aux.store(0, Ordering::SeqCst);
            leader.stamp_ns.store(mono_ns(), Ordering::SeqCst);
            leader.futex.fetch_add(1, Ordering::SeqCst);
            futex_wake(&leader.futex, i32::MAX);
            let mut waited = false;
            loop {
                let acks = leader.aux.load(Ordering::SeqCst);
                if acks >= wakees || ctx.should_stop() {
                    break;
                }
                waited = true;
                futex_wait(&leader.aux, acks, None);
            }
            if waited && !ctx.should_stop() {
                // Woken by the last wakee's acknowledgement.
                let stamp = ack_stamp.load(Ordering::SeqCst);
                ctx.record_latency_ns(mono_ns().saturating_sub(stamp));
            }
            ctx.tick(1);
        }
    } else {
        let mut seen = 0u32;
        while !ctx.should_stop() {
            let generation = leader.futex.load(Ordering::SeqCst);
            if generation == seen {
                futex_wait(&leader.futex, generation, None);
                continue;
            }
            seen = generation;
            let stamp = leader.stamp_ns.load(Ordering::SeqCst);
            ctx.record_latency_ns(mono_ns().saturating_sub(stamp));
            work();
            ctx.tick(1);
            if leader.aux.load(Ordering::SeqCst) + 1 == wakees {
                ack_stamp.store(mono_ns(), Ordering::SeqCst);
            }
            leader.aux.fetch_add(1, Ordering::SeqCst);
            futex_wake(&leader.aux, 1);
        }
    }
}

fn sequence(ctx: &WorkerContext, phases: &[Phase]) {
    let mut io: Option<IoFile> = None;
    'outer: loop {
        for phase in phases {
            if ctx.should_stop() {
                break 'outer;
            }
            let ns = phase.ms() * 1_000_000;
            match phase {
                Phase::Spin { .. } => spin_for(ctx, ns),
                Phase::Sleep { .. } => sleep_measured(ctx, ns),
                Phase::Yield { .. } => {
                    let end = mono_ns() + ns;
                    while !ctx.should_stop() && mono_ns() < end {
                        yield_now();
                        ctx.tick(1);
                    }
                }
                Phase::Io { .. } => {
                    let file = io.get_or_insert_with(IoFile::new);
                    let end = mono_ns() + ns;
                    while !ctx.should_stop() && mono_ns() < end {
                        file.sync_write();
                        ctx.tick(1);
                    }
                }
            }
        }
    }
}

/// fork + _exit + waitpid, one unit per fork.
fn fork_exit(ctx: &WorkerContext) {
    while !ctx.should_stop() {
        let child = match crate::process::fork_exiting(0) {
            Ok(child) => child,
            Err(_) => {
                // Out of processes: back off instead of spinning on errors.
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
        };
        while let Err(Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
        ctx.tick(1);
    }
}

fn set_own_nice(nice: i32) -> bool {
    // SAFETY: setpriority on the calling thread (who = 0: the caller).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) == 0 }
}

fn nice_sweep(ctx: &WorkerContext, base: i32) {
    let mut nice = base;
    while !ctx.should_stop() {
        spin(SPIN_CHUNK);
        nice = if nice >= 19 { base } else { nice + 1 };
        // Going back down needs CAP_SYS_NICE; without it the sweep stays
        // at the top, which is still a valid workload.
        set_own_nice(nice);
        ctx.tick(1);
    }
}

fn affinity_churn(ctx: &WorkerContext, allowed: &[usize], spin_iters: u64) {
    use rand::Rng;
    let mut set = nix::sched::CpuSet::new();
    while !ctx.should_stop() {
        spin(spin_iters);
        let current = current_cpu();
        let choices: Vec<usize> = allowed.iter().copied().filter(|&c| c != current).collect();
        let pool = if choices.is_empty() {
            allowed
        } else {
            &choices
        };
        if !pool.is_empty() {
            let cpu = pool[ctx.telemetry.borrow_mut().rng().gen_range(0..pool.len())];
            set = nix::sched::CpuSet::new();
            let _ = set.set(cpu);
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
        ctx.tick(1);
    }
    black_box(&set);
}

fn policy_churn(ctx: &WorkerContext, spin_iters: u64) {
    const POLICIES: [libc::c_int; 3] = [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE];
    let mut i = 0;
    while !ctx.should_stop() {
        spin(spin_iters);
        i = (i + 1) % POLICIES.len();
        set_own_policy(POLICIES[i], 0);
        ctx.tick(1);
    }
}

/// sched_setscheduler on the calling thread.
pub(crate) fn set_own_policy(policy: libc::c_int, priority: i32) -> bool {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; the param outlives the call.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

fn page_fault_churn(ctx: &WorkerContext, region_kb: usize, touches: usize, spin_iters: u64) {
    use rand::Rng;
    let len = region_kb.max(4) * 1024;
    let pages = len / 4096;
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(
        base != libc::MAP_FAILED,
        "page_fault_churn: mmap of {len} bytes failed"
    );
    let bytes = base as *mut u8;
    while !ctx.should_stop() {
        for _ in 0..touches {
            let page = ctx.telemetry.borrow_mut().rng().gen_range(0..pages);
            // SAFETY: page < pages, so the byte lies inside the mapping.
            unsafe { bytes.add(page * 4096).write_volatile(1) };
        }
        // SAFETY: dropping the pages of our own mapping; the next touch
        // faults in a zero page.
        unsafe { libc::madvise(base, len, libc::MADV_DONTNEED) };
        spin(spin_iters);
        ctx.tick(1);
    }
    // SAFETY: unmapping the mapping made above; no references remain.
    unsafe { libc::munmap(base, len) };
}

/// A futex mutex (0 free, 1 locked, 2 locked with waiters) in the leader
/// slot. A worker that had to wait records the latency from the unlocker's
/// stamp to its acquisition.
fn mutex_contention(ctx: &WorkerContext, env: &BodyEnv, hold_iters: u64, work_iters: u64) {
    let leader = ctx.shm.slot(env.set_leader);
    let word = &leader.futex;
    'outer: while !ctx.should_stop() {
        if word
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            loop {
                if word.swap(2, Ordering::Acquire) == 0 {
                    ctx.record_latency_ns(
                        mono_ns().saturating_sub(leader.stamp_ns.load(Ordering::Acquire)),
                    );
                    break;
                }
                if ctx.should_stop() {
                    break 'outer;
                }
                futex_wait(word, 2, None);
            }
        }
        spin(hold_iters);
        leader.stamp_ns.store(mono_ns(), Ordering::Release);
        if word.fetch_sub(1, Ordering::Release) != 1 {
            word.store(0, Ordering::Release);
            futex_wake(word, 1);
        }
        ctx.tick(1);
        spin(work_iters);
    }
}
