//! Checks over real workers: a healthy run passes; a worker stopped with
//! SIGSTOP during the hold fails the gap check; a worker moved into a
//! cgroup with other CPUs fails isolation; a worker killed mid-run fails
//! completion; SCHED_IDLE beside a SCHED_FIFO hog on one CPU is caught.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runq::cgroup::CgroupManager;
use runq::check::{
    run_checks, AssertResult, CgroupRun, CheckInput, ProgressSample, Thresholds, WorkerSetup,
};
use runq::workload::{
    AffinityIntent, SchedPolicy, WorkGroup, WorkType, WorkerReport, WorkloadConfig, WorkloadHandle,
};

mod common;

/// Progress counters are sampled this often during a hold.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

fn spinners(workers: usize) -> WorkloadConfig {
    WorkloadConfig {
        work: WorkType::CpuSpin,
        workers,
        ..WorkloadConfig::default()
    }
}

/// Holds for `total`, sampling the counters; `at(elapsed_ms)` runs at every
/// sample so a test can act on the workers mid-run.
fn hold(
    handle: &WorkloadHandle,
    started: Instant,
    total: Duration,
    mut at: impl FnMut(f64),
) -> Vec<ProgressSample> {
    let mut samples = Vec::new();
    while started.elapsed() < total {
        let at_ms = started.elapsed().as_secs_f64() * 1e3;
        samples.push(ProgressSample {
            at_ms,
            iterations: handle.snapshot_iterations(),
        });
        at(at_ms);
        std::thread::sleep(SAMPLE_EVERY);
    }
    samples
}

fn one_cgroup(
    name: &str,
    cpuset: Option<Vec<usize>>,
    config: &WorkloadConfig,
    workers: Vec<WorkerReport>,
    samples: Vec<ProgressSample>,
    run_ms: f64,
) -> CheckInput {
    CheckInput {
        cgroups: vec![CgroupRun {
            name: name.to_string(),
            cpuset,
            weight: None,
            workers,
            setups: WorkerSetup::for_config(config),
            samples,
            run_ms,
        }],
        num_cpus: num_cpus(),
        duration_ms: run_ms,
    }
}

fn num_cpus() -> usize {
    runq::topology::Topology::host().unwrap().num_cpus()
}

fn need_two_cpus() {
    assert!(
        num_cpus() >= 2,
        "these tests need at least 2 online CPUs (found {})",
        num_cpus()
    );
}

fn failed_details(result: &AssertResult, name: &str) -> String {
    let c = result.get(name).unwrap();
    assert!(!c.passed, "{name} should fail: {c:#?}");
    c.details.join("\n")
}

fn no_children_left() {
    let me = std::process::id();
    let children =
        std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
    assert!(children.trim().is_empty(), "children left: {children}");
}

#[test]
fn healthy_spinners_pass() {
    need_two_cpus();
    let config = spinners(2);
    let mut handle = WorkloadHandle::spawn(&config).unwrap();
    handle.start().unwrap();
    let started = Instant::now();
    let samples = hold(&handle, started, Duration::from_millis(600), |_| {});
    let run_ms = started.elapsed().as_secs_f64() * 1e3;
    let reports = handle.stop_and_collect();
    no_children_left();
    let input = one_cgroup("host", None, &config, reports, samples, run_ms);
    let result = run_checks(&input, &Thresholds::default());
    assert!(result.passed, "{result:#?}");
    let gap = result.get("longest_gap").unwrap();
    assert!(
        !gap.skipped && gap.summary.starts_with("2 of 2 workers sampled"),
        "{gap:#?}"
    );
    eprintln!(
        "healthy: worst share {:?}, spread {:?}, longest stall {:?} ms",
        result.get("not_starved").unwrap().value,
        result.get("fairness_spread").unwrap().value,
        gap.value
    );
}

#[test]
fn a_worker_stopped_during_the_hold_fails_the_gap_check() {
    let config = spinners(2);
    let mut handle = WorkloadHandle::spawn(&config).unwrap();
    let victim = handle.worker_pids()[1];
    let bystander = handle.worker_pids()[0];
    handle.start().unwrap();
    let started = Instant::now();
    let mut stopped = false;
    let mut resumed = false;
    // A 2 s stop: eight times the 250 ms limit, so no load on the host can
    // hide it (nor make the running bystander look as stuck).
    let samples = hold(&handle, started, Duration::from_millis(2400), |ms| {
        if !stopped && ms >= 150.0 {
            kill(Pid::from_raw(victim), Signal::SIGSTOP).unwrap();
            stopped = true;
        }
        if stopped && !resumed && ms >= 2150.0 {
            kill(Pid::from_raw(victim), Signal::SIGCONT).unwrap();
            resumed = true;
        }
    });
    let run_ms = started.elapsed().as_secs_f64() * 1e3;
    let reports = handle.stop_and_collect();
    no_children_left();
    assert!(resumed);
    let input = one_cgroup("host", None, &config, reports, samples, run_ms);
    let result = run_checks(&input, &Thresholds::default());
    let d = failed_details(&result, "longest_gap");
    assert!(
        d.contains(&format!(
            "host worker 1 (tid {victim}, cpu_spin): counter stuck at"
        )),
        "{d}"
    );
    assert!(!d.contains(&format!("tid {bystander},")), "{d}");
    let worst = result.get("longest_gap").unwrap().value.unwrap();
    assert!(worst > 1800.0, "a 2000 ms stop shows as {worst} ms");
    // Everything else about the run was fine.
    assert!(result.get("workers_completed").unwrap().passed);
}

#[test]
fn a_worker_moved_out_of_its_cpuset_fails_isolation() {
    need_two_cpus();
    let manager = CgroupManager::detect()
        .expect("a cgroup hierarchy with the cpuset controller is needed (run as root)");
    manager.create("inside").unwrap();
    manager.create("outside").unwrap();
    manager.set_cpuset("inside", &[0], None).unwrap();
    manager.set_cpuset("outside", &[1], None).unwrap();

    let config = spinners(2);
    let mut handle = WorkloadHandle::spawn(&config).unwrap();
    manager
        .move_procs("inside", &handle.process_pids())
        .unwrap();
    let moved = handle.worker_pids()[1];
    let stayed = handle.worker_pids()[0];
    handle.start().unwrap();
    let started = Instant::now();
    let mut done = false;
    let samples = hold(&handle, started, Duration::from_millis(500), |ms| {
        if !done && ms >= 250.0 {
            manager.move_procs("outside", &[moved]).unwrap();
            done = true;
        }
    });
    let run_ms = started.elapsed().as_secs_f64() * 1e3;
    let reports = handle.stop_and_collect();
    drop(manager);
    no_children_left();
    let left = common::runq_roots_of(std::process::id());
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    assert_eq!(
        reports[0].cpus_used.iter().copied().collect::<Vec<_>>(),
        vec![0],
        "the kernel kept the worker in its cpuset"
    );
    let input = one_cgroup("inside", Some(vec![0]), &config, reports, samples, run_ms);
    let result = run_checks(&input, &Thresholds::default());
    let d = failed_details(&result, "cpuset_isolation");
    assert!(
        d.contains(&format!(
            "inside worker 1 (tid {moved}, cpu_spin): ran on CPUs 1 outside cpuset 0 of inside"
        )),
        "{d}"
    );
    assert!(!d.contains(&format!("tid {stayed},")), "{d}");
}

#[test]
fn a_worker_pinned_against_its_declared_affinity_fails_isolation() {
    need_two_cpus();
    let config = WorkloadConfig {
        affinity: AffinityIntent::Exact(vec![0]),
        ..spinners(1)
    };
    let mut handle = WorkloadHandle::spawn(&config).unwrap();
    // The declared affinity says CPU 0; the worker is put on CPU 1.
    handle.set_affinity(0, &[1]).unwrap();
    handle.start().unwrap();
    let started = Instant::now();
    let samples = hold(&handle, started, Duration::from_millis(300), |_| {});
    let run_ms = started.elapsed().as_secs_f64() * 1e3;
    let reports = handle.stop_and_collect();
    let input = one_cgroup("host", None, &config, reports, samples, run_ms);
    let result = run_checks(&input, &Thresholds::default());
    let d = failed_details(&result, "cpuset_isolation");
    assert!(d.contains("ran on CPUs 1 outside its affinity 0"), "{d}");
}

#[test]
fn a_worker_killed_mid_run_fails_completion() {
    let config = spinners(2);
    let mut handle = WorkloadHandle::spawn(&config).unwrap();
    let victim = handle.worker_pids()[0];
    handle.start().unwrap();
    let started = Instant::now();
    let mut killed = false;
    // Killed 1.4 s before the end: its counter stands still far longer
    // than the 250 ms limit.
    let samples = hold(&handle, started, Duration::from_millis(1500), |ms| {
        if !killed && ms >= 100.0 {
            kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
            killed = true;
        }
    });
    let run_ms = started.elapsed().as_secs_f64() * 1e3;
    let reports = handle.stop_and_collect();
    no_children_left();
    let input = one_cgroup("host", None, &config, reports, samples, run_ms);
    let result = run_checks(&input, &Thresholds::default());
    let d = failed_details(&result, "workers_completed");
    assert!(
        d.contains(&format!(
            "host worker 0 (tid {victim}, cpu_spin): no report: killed by signal 9 (SIGKILL)"
        )),
        "{d}"
    );
    // Its counter froze at the kill while the other worker went on.
    let d = failed_details(&result, "longest_gap");
    assert!(
        d.contains(&format!("tid {victim}, cpu_spin): counter stuck")),
        "{d}"
    );
    let worst = result.get("longest_gap").unwrap().value.unwrap();
    assert!(
        worst > 1000.0,
        "a worker dead for 1.4 s shows as {worst} ms"
    );
}

#[test]
fn sched_idle_beside_a_fifo_hog_on_one_cpu_is_caught() {
    need_two_cpus();
    let cpu = num_cpus() - 1;
    let config = WorkloadConfig {
        work: WorkType::CpuSpin,
        workers: 1,
        affinity: AffinityIntent::Exact(vec![cpu]),
        policy: SchedPolicy::Fifo(10),
        composed: vec![WorkGroup {
            affinity: AffinityIntent::Exact(vec![cpu]),
            policy: SchedPolicy::Idle,
            ..WorkGroup::new(WorkType::CpuSpin, 1)
        }],
        ..WorkloadConfig::default()
    };
    let mut handle = WorkloadHandle::spawn(&config).unwrap();
    let idle = handle.worker_pids()[1];
    handle.start().unwrap();
    let started = Instant::now();
    let samples = hold(&handle, started, Duration::from_millis(1200), |_| {});
    let run_ms = started.elapsed().as_secs_f64() * 1e3;
    let reports = handle.stop_and_collect();
    no_children_left();
    let input = one_cgroup("host", None, &config, reports, samples, run_ms);
    let result = run_checks(&input, &Thresholds::default());
    // Real-time throttling leaves other tasks at most 5% of each second, so
    // the idle worker stands still for most of every second: close to four
    // times the 250 ms limit.
    let d = failed_details(&result, "longest_gap");
    assert!(
        d.contains(&format!("host worker 1 (tid {idle}, cpu_spin)")),
        "{d}"
    );
    let worst = result.get("longest_gap").unwrap().value.unwrap();
    assert!(worst > 700.0, "the idle worker stood still only {worst} ms");
    assert!(!result.passed);
}
