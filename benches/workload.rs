//! Workload engine benchmark, every figure against a reference measured in
//! the same run on this machine:
//!
//! 1. Lifecycle overhead: spawn + start + stop_and_collect of 1, 64 and 256
//!    fork workers minus the hold, against plain fork + _exit + waitpid of
//!    the same count. Target: under 150 ms for 64 workers.
//! 2. Telemetry overhead: CpuSpin units per CPU-second inside runq against
//!    the same loop body (`runq::workload::spin(SPIN_CHUNK)`) in a bare
//!    forked process, both pinned to the same CPU. Target: ratio >= 0.97.
//! 3. Fidelity: PipeIo round trip (burst_iters=0) against
//!    `perf bench sched pipe` usecs/op (perf from linux-perf).
//!
//! Run: `cargo bench --bench workload`. Figures are medians of interleaved
//! rounds (the machine is shared, so rounds alternate A/B).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use runq::workload::{
    allowed_cpus, spin, AffinityIntent, CloneMode, WorkType, WorkloadConfig, WorkloadHandle,
    SPIN_CHUNK,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Plain fork + _exit + waitpid of `n` children (all forked, then all
/// reaped, like the workload's lifecycle).
fn plain_forks(n: usize) -> Duration {
    let begin = Instant::now();
    let mut pids = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: the child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { libc::_exit(0) };
        }
        assert!(pid > 0, "fork failed");
        pids.push(pid);
    }
    for pid in pids {
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    begin.elapsed()
}

/// spawn + start, then stop_and_collect after a hold; the sum of the two.
fn lifecycle(n: usize, hold: Duration) -> Duration {
    let config = WorkloadConfig {
        work: WorkType::CpuSpin,
        workers: n,
        clone_mode: CloneMode::Fork,
        ..WorkloadConfig::default()
    };
    let begin = Instant::now();
    let mut handle = WorkloadHandle::spawn(&config).expect("spawn");
    handle.start().expect("start");
    let spawned = begin.elapsed();
    // The hold as actually slept (including the controller's own wake-up
    // delay among busy workers) is not lifecycle cost.
    std::thread::sleep(hold);
    let stop = Instant::now();
    let reports = handle.stop_and_collect();
    let stopped = stop.elapsed();
    assert!(
        reports.iter().all(|r| r.completed),
        "a worker did not complete"
    );
    spawned + stopped
}

/// The CpuSpin loop body in a bare forked process pinned to `cpu`, stopped
/// through a shared word after `hold`. Returns chunks per CPU-second and
/// per wall-second.
fn bare_spin(cpu: usize, hold: Duration) -> (f64, f64) {
    // SAFETY: a fresh shared anonymous page for the stop word, unmapped below.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(page != libc::MAP_FAILED);
    // SAFETY: the page is zeroed, aligned and lives until munmap below.
    let stop = unsafe { &*(page as *const AtomicU32) };
    let (mut rd, wr) = std::io::pipe().unwrap();
    // SAFETY: the child computes, writes three numbers and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
        let wall0 = runq_now(libc::CLOCK_MONOTONIC);
        let cpu0 = runq_now(libc::CLOCK_THREAD_CPUTIME_ID);
        let mut chunks = 0u64;
        while stop.load(Ordering::Relaxed) == 0 {
            std::hint::black_box(spin(SPIN_CHUNK));
            chunks += 1;
        }
        let wall = runq_now(libc::CLOCK_MONOTONIC) - wall0;
        let cpu_ns = runq_now(libc::CLOCK_THREAD_CPUTIME_ID) - cpu0;
        let msg = format!("{chunks} {cpu_ns} {wall}");
        // SAFETY: writing our own buffer to our own pipe, then leaving.
        unsafe {
            libc::write(wr.as_raw_fd(), msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    drop(wr);
    std::thread::sleep(hold);
    stop.store(1, Ordering::Relaxed);
    let mut text = String::new();
    rd.read_to_string(&mut text).unwrap();
    let mut status = 0;
    // SAFETY: reaping our own child; unmapping our own page.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::munmap(page, 4096);
    }
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0] * 1e9 / v[1], v[0] * 1e9 / v[2])
}

fn runq_now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into our timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CpuSpin inside runq, one worker pinned to `cpu`: units per CPU-second
/// and per wall-second.
fn runq_spin(cpu: usize, hold: Duration) -> (f64, f64) {
    let config = WorkloadConfig {
        work: WorkType::CpuSpin,
        workers: 1,
        affinity: AffinityIntent::Exact(vec![cpu]),
        ..WorkloadConfig::default()
    };
    let mut handle = WorkloadHandle::spawn(&config).unwrap();
    handle.start().unwrap();
    std::thread::sleep(hold);
    let r = handle.stop_and_collect().remove(0);
    assert!(r.completed);
    (
        r.work_units as f64 * 1e9 / r.cpu_time_ns as f64,
        r.work_units as f64 * 1e9 / r.wall_time_ns as f64,
    )
}

/// PipeIo round trip in us: wall time over the messages worker 0 received
/// (one per round trip).
fn runq_pipe_round_trip(hold: Duration) -> f64 {
    let config = WorkloadConfig {
        work: WorkType::PipeIo { burst_iters: 0 },
        workers: 2,
        ..WorkloadConfig::default()
    };
    let mut handle = WorkloadHandle::spawn(&config).unwrap();
    handle.start().unwrap();
    std::thread::sleep(hold);
    let r = handle.stop_and_collect().remove(0);
    assert!(r.completed && r.work_units > 0);
    r.wall_time_ns as f64 / 1e3 / r.work_units as f64
}

/// `perf bench sched pipe` usecs/op.
fn perf_pipe_round_trip(loops: u32) -> f64 {
    let out = Command::new("perf")
        .args(["bench", "sched", "pipe", "-l", &loops.to_string()])
        .output()
        .expect("perf is missing: apt-get install linux-perf (see .ci/run)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "perf bench sched pipe failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.contains("usecs/op"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no usecs/op in perf output: {text}"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("workload lifecycle (fork mode, hold subtracted), median of 5 interleaved rounds");
    let hold = Duration::from_millis(20);
    for n in [1usize, 64, 256] {
        let mut ours = Vec::new();
        let mut plain = Vec::new();
        for _ in 0..5 {
            ours.push(lifecycle(n, hold).as_secs_f64() * 1e3);
            plain.push(plain_forks(n).as_secs_f64() * 1e3);
        }
        let (o, p) = (median(ours), median(plain));
        println!(
            "  {n:>4} workers: runq {o:>8.2} ms   plain fork+exit+wait {p:>7.2} ms   ratio {:>6.2}{}",
            o / p,
            if n == 64 { format!("   (target < 150 ms: {})", if o < 150.0 { "met" } else { "MISSED" }) } else { String::new() }
        );
    }

    let cpu = *allowed_cpus().last().unwrap();
    let spin_hold = Duration::from_millis(700);
    let mut per_cpu = Vec::new();
    let mut per_wall = Vec::new();
    for _ in 0..5 {
        let (bc, bw) = bare_spin(cpu, spin_hold);
        let (rc, rw) = runq_spin(cpu, spin_hold);
        per_cpu.push(rc / bc);
        per_wall.push(rw / bw);
    }
    let (c, w) = (median(per_cpu), median(per_wall));
    println!("telemetry overhead: CpuSpin rate in runq / bare loop on CPU {cpu}, median of 5 interleaved rounds");
    println!(
        "  per CPU-second {c:.4}   per wall-second {w:.4}   (target >= 0.97: {})",
        if c >= 0.97 { "met" } else { "MISSED" }
    );

    let mut ratios = Vec::new();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..5 {
        let o = runq_pipe_round_trip(Duration::from_millis(500));
        let t = perf_pipe_round_trip(100_000);
        ours.push(o);
        theirs.push(t);
        ratios.push(o / t);
    }
    println!(
        "fidelity: PipeIo round trip vs perf bench sched pipe, median of 5 interleaved rounds"
    );
    println!(
        "  runq {:.3} us/op   perf {:.3} us/op   ratio {:.3}",
        median(ours),
        median(theirs),
        median(ratios)
    );
}
