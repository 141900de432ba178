//! Workload engine on real processes and threads: every work type, both
//! clone modes, affinity, sentinels for killed/panicking/hanging/garbage
//! workers, prompt stop, validation, and no leftovers after each run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use runq::error::{exit_code_for, EXIT_BAD_INPUT};
use runq::workload::{
    allowed_cpus, AffinityIntent, CloneMode, CustomWork, ExitShape, MemPolicy, Phase, SchedPolicy,
    WorkGroup, WorkType, WorkerContext, WorkerReport, WorkloadConfig, WorkloadHandle,
};

/// What the test process holds that a workload could leak: open fds,
/// shared anonymous mappings, child processes.
#[derive(Debug, PartialEq)]
struct Holdings {
    fds: BTreeSet<String>,
    shared_maps: usize,
    children: Vec<String>,
}

fn holdings() -> Holdings {
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let shared_maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("/dev/zero") || l.contains("rw-s"))
        .count();
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path().join("children");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // The thread ended between read_dir and the read.
            Err(_) if !task.path().exists() => continue,
            Err(e) => panic!(
                "cannot read {path:?} ({e}): this test needs a kernel with CONFIG_PROC_CHILDREN"
            ),
        };
        children.extend(text.split_whitespace().map(str::to_string));
    }
    Holdings {
        fds,
        shared_maps,
        children,
    }
}

/// Run `f` and check it left nothing behind. The fd set is compared as a
/// whole: the read_dir fd itself is closed again by the time it returns.
fn leaves_nothing<T>(f: impl FnOnce() -> T) -> T {
    let before = holdings();
    let out = f();
    let after = holdings();
    assert_eq!(
        before, after,
        "the workload left fds, mappings or children behind"
    );
    out
}

fn config(work: WorkType, workers: usize, mode: CloneMode) -> WorkloadConfig {
    WorkloadConfig {
        work,
        workers,
        clone_mode: mode,
        ..WorkloadConfig::default()
    }
}

fn run_for(config: &WorkloadConfig, hold: Duration) -> Vec<WorkerReport> {
    let mut handle = WorkloadHandle::spawn(config).expect("spawn");
    handle.start().expect("start");
    std::thread::sleep(hold);
    handle.stop_and_collect()
}

/// Every named type with small parameters, and whether it must produce
/// wake/resume latencies.
fn all_types() -> Vec<(WorkType, usize, bool)> {
    vec![
        (WorkType::CpuSpin, 2, false),
        (WorkType::YieldHeavy, 2, false),
        (WorkType::Mixed, 2, true),
        (WorkType::IoSync, 1, false),
        (
            WorkType::Bursty {
                burst_ms: 5,
                sleep_ms: 5,
            },
            2,
            true,
        ),
        (WorkType::PipeIo { burst_iters: 100 }, 2, true),
        (WorkType::FutexPingPong { spin_iters: 100 }, 2, true),
        (
            WorkType::FutexFanOut {
                fan_out: 2,
                spin_iters: 100,
            },
            3,
            true,
        ),
        (
            WorkType::FanOutCompute {
                fan_out: 2,
                footprint_kb: 64,
                ops: 1000,
                sleep_us: 500,
            },
            3,
            true,
        ),
        (
            WorkType::CachePressure {
                size_kb: 256,
                stride: 64,
            },
            2,
            false,
        ),
        (WorkType::CacheYield, 2, false),
        (WorkType::CachePipe, 2, true),
        (
            WorkType::Sequence {
                phases: vec![
                    Phase::Spin { ms: 10 },
                    Phase::Sleep { ms: 5 },
                    Phase::Yield { ms: 5 },
                    Phase::Io { ms: 5 },
                ],
            },
            2,
            true,
        ),
        (WorkType::ForkExit, 2, false),
        (WorkType::NiceSweep, 2, false),
        (WorkType::AffinityChurn { spin_iters: 10_000 }, 2, false),
        (WorkType::PolicyChurn { spin_iters: 10_000 }, 2, false),
        (
            WorkType::PageFaultChurn {
                region_kb: 256,
                touches: 16,
                spin_iters: 1000,
            },
            2,
            false,
        ),
        (
            WorkType::MutexContention {
                contenders: 2,
                hold_iters: 1000,
                work_iters: 100,
            },
            2,
            false,
        ),
        (WorkType::WakeChain { depth: 3 }, 3, true),
    ]
}

fn check_type_reports(work: &WorkType, wakes: bool, reports: &[WorkerReport], hold: Duration) {
    let name = work.name();
    for r in reports {
        assert!(
            r.completed,
            "{name}: worker {} did not complete: {:?}",
            r.index, r.exit
        );
        assert_eq!(r.exit, ExitShape::Exited(0), "{name}");
        assert_eq!(r.work_type, name);
        assert!(r.work_units > 0, "{name}: worker {} did no work", r.index);
        assert!(
            r.wall_time_ns >= hold.as_nanos() as u64 / 2,
            "{name}: wall time {} ns is too short for a {hold:?} hold",
            r.wall_time_ns
        );
        assert!(r.cpu_time_ns > 0, "{name}: no CPU time");
        assert_eq!(
            r.off_cpu_ns,
            r.wall_time_ns - r.cpu_time_ns.min(r.wall_time_ns)
        );
        assert!(!r.cpus_used.is_empty(), "{name}: no CPU recorded");
        assert!(r.longest_gap.is_some(), "{name}: no gap recorded");
        assert!(r.migrations as usize >= r.migration_events.len());
        assert!(r.wake_latency_ns.len() as u64 <= r.wake_latency_count);
        if wakes {
            assert!(
                r.wake_latency_count > 0,
                "{name}: worker {} has no wake latency",
                r.index
            );
        }
        if work.is_pure_compute() {
            assert!(
                !r.iteration_cost_ns.is_empty(),
                "{name}: no iteration costs"
            );
        } else {
            assert!(
                r.iteration_cost_ns.is_empty(),
                "{name}: iteration costs on a blocking type"
            );
        }
    }
}

#[test]
fn every_work_type_runs_in_fork_mode() {
    let hold = Duration::from_millis(250);
    for (work, workers, wakes) in all_types() {
        let reports =
            leaves_nothing(|| run_for(&config(work.clone(), workers, CloneMode::Fork), hold));
        assert_eq!(reports.len(), workers, "{}", work.name());
        check_type_reports(&work, wakes, &reports, hold);
        // Fork mode: one process per worker, pid == tid.
        let pids: BTreeSet<i32> = reports.iter().map(|r| r.tid).collect();
        assert_eq!(pids.len(), workers);
    }
}

#[test]
fn every_work_type_but_fork_exit_runs_in_thread_mode() {
    let hold = Duration::from_millis(250);
    for (work, workers, wakes) in all_types() {
        if work == WorkType::ForkExit {
            continue;
        }
        let reports = leaves_nothing(|| {
            let cfg = config(work.clone(), workers, CloneMode::Thread);
            let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
            let hosts = handle.process_pids();
            assert_eq!(hosts.len(), 1, "one host process per group");
            // Every worker tid is a thread of the host, not the host itself.
            for tid in handle.worker_pids() {
                assert_ne!(tid, hosts[0]);
                assert!(
                    std::path::Path::new(&format!("/proc/{}/task/{tid}", hosts[0])).exists(),
                    "tid {tid} is not a thread of host {}",
                    hosts[0]
                );
            }
            handle.start().unwrap();
            std::thread::sleep(hold);
            handle.stop_and_collect()
        });
        check_type_reports(&work, wakes, &reports, hold);
    }
}

#[test]
fn cpu_spin_counts_lots_of_units_and_no_wakes() {
    let reports = leaves_nothing(|| {
        run_for(
            &config(WorkType::CpuSpin, 1, CloneMode::Fork),
            Duration::from_millis(300),
        )
    });
    let r = &reports[0];
    assert_eq!(r.wake_latency_count, 0);
    assert!(r.wake_latency_ns.is_empty());
    assert!(r.work_units > 100, "only {} units in 300 ms", r.work_units);
    assert!(!r.iteration_cost_ns.is_empty());
}

#[test]
fn fork_exit_counts_forks_and_reaps_them() {
    let reports = leaves_nothing(|| {
        let mut handle =
            WorkloadHandle::spawn(&config(WorkType::ForkExit, 1, CloneMode::Fork)).unwrap();
        let pid = handle.worker_pids()[0];
        handle.start().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let snapshot = handle.snapshot_iterations()[0];
        // The worker reaps its forks: it never piles up zombie children.
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        assert!(
            kids.split_whitespace().count() <= 1,
            "unreaped forks: {kids}"
        );
        let reports = handle.stop_and_collect();
        assert!(reports[0].work_units >= snapshot);
        reports
    });
    assert!(
        reports[0].work_units > 10,
        "{} forks",
        reports[0].work_units
    );
}

#[test]
fn pinned_to_one_cpu_uses_only_that_cpu() {
    let cpu = *allowed_cpus().last().unwrap();
    for mode in [CloneMode::Fork, CloneMode::Thread] {
        let mut cfg = config(WorkType::YieldHeavy, 2, mode);
        cfg.affinity = AffinityIntent::Exact(vec![cpu]);
        let reports = leaves_nothing(|| run_for(&cfg, Duration::from_millis(200)));
        for r in &reports {
            assert_eq!(r.cpus_used, BTreeSet::from([cpu]), "{mode:?}");
            assert_eq!(r.migrations, 0);
        }
    }
    let mut cfg = config(WorkType::CpuSpin, 2, CloneMode::Fork);
    cfg.affinity = AffinityIntent::SingleCpu;
    let reports = leaves_nothing(|| run_for(&cfg, Duration::from_millis(200)));
    let first = *allowed_cpus().first().unwrap();
    for r in &reports {
        assert_eq!(r.cpus_used, BTreeSet::from([first]));
    }
}

#[test]
fn set_affinity_moves_a_running_worker() {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        panic!("this test needs 2 usable CPUs; run it on a machine with at least 2");
    }
    let reports = leaves_nothing(|| {
        let mut cfg = config(WorkType::CpuSpin, 1, CloneMode::Fork);
        cfg.affinity = AffinityIntent::Exact(vec![cpus[0]]);
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        handle.start().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        handle.set_affinity(0, &[cpus[1]]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let err = handle.set_affinity(5, &[cpus[0]]).unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT);
        handle.stop_and_collect()
    });
    let r = &reports[0];
    assert_eq!(r.cpus_used, BTreeSet::from([cpus[0], cpus[1]]));
    assert_eq!(r.migration_events.last().unwrap().to_cpu, cpus[1]);
}

#[test]
fn snapshot_iterations_grow_while_running() {
    leaves_nothing(|| {
        let mut handle =
            WorkloadHandle::spawn(&config(WorkType::CpuSpin, 2, CloneMode::Thread)).unwrap();
        assert_eq!(
            handle.snapshot_iterations(),
            vec![0, 0],
            "parked workers do no work"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            handle.snapshot_iterations(),
            vec![0, 0],
            "parked workers do no work"
        );
        handle.start().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let first = handle.snapshot_iterations();
        std::thread::sleep(Duration::from_millis(100));
        let second = handle.snapshot_iterations();
        assert!(
            first.iter().zip(&second).all(|(a, b)| b > a),
            "{first:?} -> {second:?}"
        );
        handle.stop_and_collect();
    });
}

#[test]
fn sigkilled_worker_gets_a_signaled_sentinel() {
    for mode in [CloneMode::Fork, CloneMode::Thread] {
        let reports = leaves_nothing(|| {
            let mut handle = WorkloadHandle::spawn(&config(WorkType::CpuSpin, 2, mode)).unwrap();
            handle.start().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let victim = handle.process_pids()[0];
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim),
                nix::sys::signal::SIGKILL,
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            handle.stop_and_collect()
        });
        let r = &reports[0];
        assert_eq!(r.exit, ExitShape::Signaled(libc::SIGKILL), "{mode:?}");
        assert!(!r.completed);
        assert!(r.work_units > 0, "the sentinel keeps the shared counter");
        if mode == CloneMode::Fork {
            assert!(reports[1].completed, "the other worker is unaffected");
        }
    }
}

fn panics_on_first_worker(ctx: &WorkerContext) -> u64 {
    if ctx.index() == 0 {
        ctx.tick(1);
        panic!("deliberate test panic");
    }
    let mut units = 0;
    while !ctx.should_stop() {
        std::hint::black_box(runq::workload::spin(1000));
        ctx.tick(1);
        units += 1;
    }
    units
}

#[test]
fn panicking_worker_gets_a_panicked_sentinel() {
    for mode in [CloneMode::Fork, CloneMode::Thread] {
        let work = WorkType::Custom(CustomWork::new("panics", panics_on_first_worker));
        let reports =
            leaves_nothing(|| run_for(&config(work, 2, mode), Duration::from_millis(100)));
        match &reports[0].exit {
            ExitShape::Panicked(msg) => assert!(msg.contains("deliberate test panic"), "{msg}"),
            other => panic!("{mode:?}: expected Panicked, got {other:?}"),
        }
        assert!(!reports[0].completed);
        assert_eq!(
            reports[0].work_units, 1,
            "telemetry up to the panic is kept"
        );
        assert!(reports[1].completed, "{mode:?}: {:?}", reports[1].exit);
        assert!(reports[1].work_units > 0);
    }
}

fn hangs_on_first_worker(ctx: &WorkerContext) -> u64 {
    if ctx.index() == 0 {
        loop {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    while !ctx.should_stop() {
        ctx.tick(1);
        std::thread::sleep(Duration::from_millis(1));
    }
    1
}

#[test]
fn hanging_worker_times_out_and_is_killed() {
    for mode in [CloneMode::Fork, CloneMode::Thread] {
        let mut cfg = config(
            WorkType::Custom(CustomWork::new("hangs", hangs_on_first_worker)),
            2,
            mode,
        );
        cfg.collect_timeout = Duration::from_millis(300);
        let (reports, took) = leaves_nothing(|| {
            let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
            handle.start().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let begin = Instant::now();
            let reports = handle.stop_and_collect();
            (reports, begin.elapsed())
        });
        assert_eq!(reports[0].exit, ExitShape::TimedOut, "{mode:?}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        match mode {
            // A separate process: the other worker reports normally.
            CloneMode::Fork => assert!(reports[1].completed),
            // Same host process, killed at the deadline: the sibling had
            // already sent its report, which stands.
            CloneMode::Thread => assert!(reports[1].completed, "{:?}", reports[1].exit),
        }
    }
}

fn writes_garbage(ctx: &WorkerContext) -> u64 {
    ctx.write_raw_report_and_exit(b"{ this is not a report");
}

#[test]
fn garbage_report_gets_a_panicked_sentinel() {
    for mode in [CloneMode::Fork, CloneMode::Thread] {
        let work = WorkType::Custom(CustomWork::new("garbage", writes_garbage));
        let reports = leaves_nothing(|| run_for(&config(work, 1, mode), Duration::from_millis(50)));
        match &reports[0].exit {
            ExitShape::Panicked(msg) => assert!(msg.contains("this is not a report"), "{msg}"),
            other => panic!("{mode:?}: expected Panicked, got {other:?}"),
        }
        assert!(!reports[0].completed);
    }
}

fn exits_with_seven(_ctx: &WorkerContext) -> u64 {
    // SAFETY: leaving the worker process abruptly is the point of the test.
    unsafe { libc::_exit(7) }
}

#[test]
fn worker_exiting_without_report_gets_its_exit_code() {
    let work = WorkType::Custom(CustomWork::new("exit7", exits_with_seven));
    let reports =
        leaves_nothing(|| run_for(&config(work, 1, CloneMode::Fork), Duration::from_millis(50)));
    assert_eq!(reports[0].exit, ExitShape::Exited(7));
    assert!(!reports[0].completed);
}

/// Blocking types (pipe read, futex wait, sleep, mutex) all leave their
/// loop on stop long before the collect deadline.
#[test]
fn stop_is_prompt_for_blocked_workers() {
    let blocked = [
        (WorkType::PipeIo { burst_iters: 10 }, 2),
        (WorkType::FutexPingPong { spin_iters: 10 }, 2),
        (
            WorkType::FutexFanOut {
                fan_out: 3,
                spin_iters: 10,
            },
            4,
        ),
        (WorkType::WakeChain { depth: 4 }, 4),
        (
            WorkType::Bursty {
                burst_ms: 1,
                sleep_ms: 1000,
            },
            2,
        ),
        (
            WorkType::MutexContention {
                contenders: 4,
                hold_iters: 100_000,
                work_iters: 10,
            },
            4,
        ),
    ];
    for mode in [CloneMode::Fork, CloneMode::Thread] {
        for (work, n) in &blocked {
            let cfg = config(work.clone(), *n, mode);
            let took = leaves_nothing(|| {
                let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
                handle.start().unwrap();
                std::thread::sleep(Duration::from_millis(150));
                let begin = Instant::now();
                let reports = handle.stop_and_collect();
                let took = begin.elapsed();
                for r in &reports {
                    assert!(r.completed, "{} {mode:?}: {:?}", work.name(), r.exit);
                }
                took
            });
            eprintln!(
                "stop latency {:>16} {mode:?}: {:.2} ms",
                work.name(),
                took.as_secs_f64() * 1e3
            );
            assert!(
                took < cfg.collect_timeout,
                "{}: stop took {took:?}",
                work.name()
            );
        }
    }
}

#[test]
fn stop_before_start_reports_every_worker() {
    let reports = leaves_nothing(|| {
        let handle = WorkloadHandle::spawn(&config(
            WorkType::PipeIo { burst_iters: 1 },
            2,
            CloneMode::Fork,
        ))
        .unwrap();
        handle.stop_and_collect()
    });
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.completed && r.work_units == 0));
}

#[test]
fn dropping_the_handle_kills_and_reaps_everything() {
    for mode in [CloneMode::Fork, CloneMode::Thread] {
        leaves_nothing(|| {
            let mut handle =
                WorkloadHandle::spawn(&config(WorkType::FutexPingPong { spin_iters: 1 }, 4, mode))
                    .unwrap();
            handle.start().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(handle);
        });
    }
}

#[test]
fn composed_groups_report_in_order_with_their_own_settings() {
    let mut cfg = config(WorkType::CpuSpin, 1, CloneMode::Fork);
    cfg.composed = vec![
        WorkGroup::new(WorkType::FutexPingPong { spin_iters: 100 }, 2),
        WorkGroup {
            policy: SchedPolicy::Batch,
            nice: 5,
            ..WorkGroup::new(WorkType::YieldHeavy, 1)
        },
    ];
    let reports = leaves_nothing(|| {
        let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
        // Parked workers already carry their policy and nice:
        // /proc/PID/stat field 19 is nice, field 41 the policy.
        let pid = handle.worker_pids()[3];
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        assert_eq!(fields[19 - 3], "5", "nice");
        assert_eq!(fields[41 - 3], libc::SCHED_BATCH.to_string(), "policy");
        handle.start().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        handle.stop_and_collect()
    });
    let shape: Vec<(usize, usize, &str)> = reports
        .iter()
        .map(|r| (r.group, r.index, r.work_type.as_str()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, 0, "cpu_spin"),
            (1, 0, "futex_ping_pong"),
            (1, 1, "futex_ping_pong"),
            (2, 0, "yield_heavy")
        ]
    );
    assert!(reports.iter().all(|r| r.completed));
}

#[test]
fn impossible_configs_are_rejected_before_spawning() {
    let cpus = allowed_cpus();
    let mut cases: Vec<(WorkloadConfig, &str)> = vec![
        (
            config(WorkType::PipeIo { burst_iters: 1 }, 3, CloneMode::Fork),
            "pairs",
        ),
        (
            config(
                WorkType::FutexFanOut {
                    fan_out: 3,
                    spin_iters: 1,
                },
                6,
                CloneMode::Fork,
            ),
            "fan_out+1",
        ),
        (
            config(WorkType::ForkExit, 2, CloneMode::Thread),
            "thread mode",
        ),
        (
            config(
                WorkType::Bursty {
                    burst_ms: 0,
                    sleep_ms: 5,
                },
                1,
                CloneMode::Fork,
            ),
            "burst_ms",
        ),
        (
            config(
                WorkType::Sequence {
                    phases: vec![Phase::Spin { ms: 0 }],
                },
                1,
                CloneMode::Fork,
            ),
            "zero duration",
        ),
        (config(WorkType::CpuSpin, 0, CloneMode::Fork), "workers"),
        (
            config(WorkType::WakeChain { depth: 3 }, 4, CloneMode::Fork),
            "depth",
        ),
    ];
    let mut empty = config(WorkType::CpuSpin, 1, CloneMode::Fork);
    empty.affinity = AffinityIntent::Exact(vec![]);
    cases.push((empty, "empty CPU set"));
    let mut absent = config(WorkType::CpuSpin, 1, CloneMode::Fork);
    absent.affinity = AffinityIntent::Exact(vec![cpus.iter().max().unwrap() + 1000]);
    cases.push((absent, "not usable"));
    let mut cross = config(WorkType::CpuSpin, 1, CloneMode::Fork);
    cross.affinity = AffinityIntent::CrossCgroup;
    cases.push((cross, "Exact"));
    let mut rt = config(WorkType::CpuSpin, 1, CloneMode::Fork);
    rt.policy = SchedPolicy::Fifo(0);
    cases.push((rt, "1..=99"));
    let mut composed = config(WorkType::CpuSpin, 1, CloneMode::Fork);
    composed.composed = vec![WorkGroup::new(WorkType::CachePipe, 1)];
    cases.push((composed, "composed group 1"));
    for (cfg, needle) in cases {
        leaves_nothing(|| {
            let err = match WorkloadHandle::spawn(&cfg) {
                Ok(_) => panic!("{cfg:?} was accepted"),
                Err(e) => e,
            };
            assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err}");
            assert!(err.to_string().contains(needle), "`{err}` lacks `{needle}`");
        });
    }
}

#[test]
fn cli_parsing_of_work_types() {
    assert_eq!(
        WorkType::parse_cli("futex_ping_pong:spin_iters=100").unwrap(),
        WorkType::FutexPingPong { spin_iters: 100 }
    );
    assert_eq!(
        WorkType::parse_cli("sequence:phases=spin5/sleep2").unwrap(),
        WorkType::Sequence {
            phases: vec![Phase::Spin { ms: 5 }, Phase::Sleep { ms: 2 }]
        }
    );
    for name in WorkType::all_names() {
        let w = WorkType::parse_cli(name).unwrap();
        assert_eq!(w.name(), *name);
    }
    for bad in [
        "nope",
        "pipe_io:burst_iters=x",
        "pipe_io:bogus=1",
        "bursty:sleep_ms=0",
        "sequence:phases=jump5",
    ] {
        let err = WorkType::parse_cli(bad).unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{bad}");
    }
    let err = WorkType::parse_cli("nope").unwrap_err().to_string();
    assert!(
        err.contains("cpu_spin") && err.contains("wake_chain:depth=4"),
        "{err}"
    );
}

#[test]
fn custom_work_does_not_deserialize_but_named_types_round_trip() {
    let cfg = WorkloadConfig {
        composed: vec![WorkGroup::new(WorkType::WakeChain { depth: 3 }, 3)],
        ..WorkloadConfig::default()
    };
    let text = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<WorkloadConfig>(&text).unwrap(), cfg);
    let custom = WorkType::Custom(CustomWork::new("x", panics_on_first_worker));
    let text = serde_json::to_string(&custom).unwrap();
    assert!(serde_json::from_str::<WorkType>(&text).is_err());
}

fn runq() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_runq"))
}

/// One thread of a process as `/proc/PID/task/TID/stat` shows it.
#[derive(Debug, Clone, PartialEq)]
struct ThreadState {
    tgid: i32,
    nice: i64,
    policy: u64,
}

fn thread_state(tgid: i32, tid: i32) -> Option<ThreadState> {
    let stat = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/stat")).ok()?;
    // Fields after the command name: state is field 3, nice 19, policy 41.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(ThreadState {
        tgid,
        nice: fields[19 - 3].parse().ok()?,
        policy: fields[41 - 3].parse().ok()?,
    })
}

/// Threads of the processes `runq` (pid) started, by tid.
fn worker_threads(runq_pid: u32) -> std::collections::BTreeMap<i32, ThreadState> {
    let children = std::fs::read_to_string(format!("/proc/{runq_pid}/task/{runq_pid}/children"))
        .unwrap_or_default();
    let mut threads = std::collections::BTreeMap::new();
    for child in children
        .split_whitespace()
        .filter_map(|c| c.parse::<i32>().ok())
    {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{child}/task")) else {
            continue;
        };
        for tid in tasks
            .flatten()
            .filter_map(|t| t.file_name().to_str()?.parse().ok())
        {
            if let Some(state) = thread_state(child, tid) {
                threads.insert(tid, state);
            }
        }
    }
    threads
}

#[test]
fn cli_runs_a_workload_and_writes_json() {
    const SCHED_BATCH: u64 = 3;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.json");
    let child = runq()
        .args([
            "workload",
            "--work",
            "pipe_io:burst_iters=10",
            "--workers",
            "2",
        ])
        .args([
            "--duration",
            "1500ms",
            "--clone",
            "thread",
            "--policy",
            "batch",
            "--nice",
            "3",
        ])
        .arg("--json")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it runs: two worker threads of one host process, each with
    // SCHED_BATCH and nice 3 (set by the workers before they start).
    let deadline = Instant::now() + Duration::from_secs(10);
    let live = loop {
        let threads = worker_threads(child.id());
        let workers: Vec<(i32, ThreadState)> = threads
            .into_iter()
            .filter(|(tid, s)| *tid != s.tgid && s.policy == SCHED_BATCH && s.nice == 3)
            .collect();
        if workers.len() == 2 {
            break workers;
        }
        assert!(
            Instant::now() < deadline,
            "never saw 2 worker threads with SCHED_BATCH and nice 3: {:?}",
            worker_threads(child.id())
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pipe_io") && stdout.contains("total: 2 workers"),
        "{stdout}"
    );
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // The JSON states what was asked for ...
    let config = &value["config"];
    assert_eq!(config["clone_mode"], "Thread", "{config}");
    assert_eq!(config["policy"], "batch", "{config}");
    assert_eq!(config["nice"], 3, "{config}");
    assert_eq!(config["workers"], 2, "{config}");
    assert_eq!(
        config["work"],
        serde_json::json!({"PipeIo": {"burst_iters": 10}})
    );
    // ... and its workers are the threads seen running that way.
    let workers: Vec<WorkerReport> = serde_json::from_value(value["workers"].clone()).unwrap();
    assert_eq!(workers.len(), 2);
    let mut reported: Vec<i32> = workers.iter().map(|w| w.tid).collect();
    reported.sort_unstable();
    let seen: Vec<i32> = live.iter().map(|(tid, _)| *tid).collect();
    assert_eq!(reported, seen, "{live:?}");
    assert_eq!(live[0].1.tgid, live[1].1.tgid, "one host process: {live:?}");
    assert!(workers
        .iter()
        .all(|w| w.completed && w.wake_latency_count > 0));
}

#[test]
fn cli_bad_input_exits_two_with_the_valid_forms() {
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--work", "warp_drive"], &["--work", "`warp_drive`"]),
        (
            &["--work", "pipe_io", "--workers", "3"],
            &["pipe_io", "3 workers", "use 2 or 4 workers"],
        ),
        (
            &["--work", "cpu_spin", "--duration", "soon"],
            &["--duration", "soon", "500ms"],
        ),
        (
            &["--work", "cpu_spin", "--clone", "vfork"],
            &["--clone `vfork`: use fork or thread"],
        ),
        (
            &["--work", "cpu_spin", "--policy", "fifo:200"],
            &["priority 200", "1..=99"],
        ),
        (
            &["--work", "cpu_spin", "--cpus", ""],
            &["empty CPU set", "list at least one CPU"],
        ),
    ];
    for (args, wanted) in cases {
        let out = runq().arg("workload").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        for w in wanted {
            assert!(stderr.contains(w), "{args:?}: {w:?} not in {stderr}");
        }
    }
    let out = runq()
        .args(["workload", "--work", "warp_drive"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("futex_ping_pong:spin_iters=1000"),
        "{stderr}"
    );
}

/// One duration grammar: the message says what is wrong with the value
/// (zero, too large, unit, sign), never a panic.
#[test]
fn cli_durations_are_diagnosed_accurately() {
    for (duration, expected) in [
        ("0", "must be more than 0"),
        ("1e99s", "too large"),
        ("48h", "must be at most 86400s"),
        ("5 parsecs", "unknown unit \"parsecs\""),
        ("-1s", "negative"),
        ("soon", "does not start with a number"),
    ] {
        let out = runq()
            .args(["workload", "--work", "cpu_spin"])
            .arg(format!("--duration={duration}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{duration}: {stderr}");
        assert!(stderr.contains("--duration"), "{duration}: {stderr}");
        assert!(stderr.contains(expected), "{duration}: {stderr}");
        assert!(!stderr.contains("panicked"), "{duration}: {stderr}");
    }
}

#[test]
fn random_subset_affinity_stays_inside_the_allowed_cpus() {
    let allowed: BTreeSet<usize> = allowed_cpus().into_iter().collect();
    let mut cfg = config(WorkType::CpuSpin, 4, CloneMode::Fork);
    cfg.affinity = AffinityIntent::RandomSubset { count: 1 };
    cfg.seed = 7;
    let reports = leaves_nothing(|| run_for(&cfg, Duration::from_millis(150)));
    for r in &reports {
        assert_eq!(r.cpus_used.len(), 1, "{:?}", r.cpus_used);
        assert!(r.cpus_used.is_subset(&allowed));
    }
}

/// Worker i of an `LlcAligned` group runs on the i-th last-level cache
/// only. A host with one LLC cannot tell that from no pinning at all, so
/// there this test reruns itself in a 2-LLC guest (`runq vm --topology
/// 1n2l2c1t`, the test binary run by `runq trace` there).
#[test]
fn llc_aligned_workers_stay_on_their_own_llc() {
    let llcs: Vec<BTreeSet<usize>> = runq::topology::Topology::host()
        .unwrap()
        .llcs()
        .into_iter()
        .map(|l| l.into_iter().collect())
        .collect();
    if llcs.len() < 2 {
        return rerun_in_a_two_llc_guest("llc_aligned_workers_stay_on_their_own_llc");
    }
    for mode in [CloneMode::Thread, CloneMode::Fork] {
        let mut cfg = config(WorkType::CpuSpin, 2 * llcs.len(), mode);
        cfg.affinity = AffinityIntent::LlcAligned;
        let reports = leaves_nothing(|| run_for(&cfg, Duration::from_millis(150)));
        for r in &reports {
            let own = &llcs[r.index % llcs.len()];
            assert!(
                !r.cpus_used.is_empty() && r.cpus_used.is_subset(own),
                "{mode:?} worker {} ran on {:?}, not only on LLC {own:?} of {llcs:?}",
                r.index,
                r.cpus_used
            );
        }
    }
    println!("LLC-ALIGNED-CHECKED on {} LLCs", llcs.len());
}

/// Runs the test `name` of this binary in a qemu guest with two LLCs and
/// checks it ran there and passed.
fn rerun_in_a_two_llc_guest(name: &str) {
    let me = std::env::current_exe().unwrap();
    let me = me.to_str().unwrap();
    let out = runq()
        .args([
            "vm",
            "--topology",
            "1n2l2c1t",
            "--memory",
            "1G",
            "--include",
            me,
        ])
        .args(["--", "trace", "--", me, "--exact", name, "--nocapture"])
        .arg("--test-threads=1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("LLC-ALIGNED-CHECKED on 2 LLCs"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{stdout}\n{stderr}"
    );
}

/// The memory policy `/proc/PID/numa_maps` shows for every mapping of a
/// process (the task policy a worker set on itself, as the kernel prints
/// it: `bind:0`, `prefer:0`, `interleave:0`, `local`, `default`).
fn numa_maps_policies(pid: i32) -> BTreeSet<String> {
    std::fs::read_to_string(format!("/proc/{pid}/numa_maps"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/numa_maps: {e} (CONFIG_NUMA needed)"))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

#[test]
fn memory_policies_apply_on_this_kernel() {
    let node = runq::workload::online_nodes()[0];
    for (policy, shown) in [
        (MemPolicy::Bind(vec![node]), format!("bind:{node}")),
        (MemPolicy::Preferred(node), format!("prefer:{node}")),
        (
            MemPolicy::Interleave(vec![node]),
            format!("interleave:{node}"),
        ),
        (MemPolicy::Local, "local".to_string()),
        (MemPolicy::Default, "default".to_string()),
    ] {
        let mut cfg = config(
            WorkType::PageFaultChurn {
                region_kb: 64,
                touches: 8,
                spin_iters: 10,
            },
            1,
            CloneMode::Fork,
        );
        cfg.mem_policy = policy.clone();
        let reports = leaves_nothing(|| {
            // Workers set their policy before they park at the start line.
            let mut handle = WorkloadHandle::spawn(&cfg).unwrap();
            let parked = numa_maps_policies(handle.worker_pids()[0]);
            handle.start().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let running = numa_maps_policies(handle.worker_pids()[0]);
            let reports = handle.stop_and_collect();
            for seen in [parked, running] {
                assert_eq!(seen, BTreeSet::from([shown.clone()]), "{policy:?}");
            }
            reports
        });
        assert!(reports[0].completed, "{policy:?}: {:?}", reports[0].exit);
    }
    let mut cfg = config(WorkType::CpuSpin, 1, CloneMode::Fork);
    cfg.mem_policy = MemPolicy::Bind(vec![]);
    let err = WorkloadHandle::spawn(&cfg)
        .err()
        .expect("empty node set accepted");
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT);
    assert!(format!("{err:#}").contains("node"), "{err:#}");
}

#[test]
fn refused_setup_fails_the_spawn_and_cleans_up() {
    // SCHED_FIFO is refused to an unprivileged user with RLIMIT_RTPRIO 0.
    // The check runs in a forked child that drops to uid 65534 (when root),
    // so the test process keeps its privileges.
    for mode in [CloneMode::Fork, CloneMode::Thread] {
        // SAFETY: the child runs the check and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = std::panic::catch_unwind(|| {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: plain syscalls on this (child) process.
                unsafe {
                    libc::setrlimit(libc::RLIMIT_RTPRIO, &none);
                    if libc::geteuid() == 0 {
                        assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
                    }
                }
                let mut cfg = config(WorkType::CpuSpin, 3, mode);
                cfg.policy = SchedPolicy::Fifo(1);
                leaves_nothing(|| {
                    let err = WorkloadHandle::spawn(&cfg).err().expect("Fifo was allowed");
                    assert_eq!(exit_code_for(&err), runq::error::EXIT_ENVIRONMENT, "{err}");
                    assert!(err.to_string().contains("Fifo(1) refused"), "{err}");
                });
            })
            .is_ok();
            // SAFETY: leaving the forked test child without unwinding.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{mode:?}: the refused-setup check failed (status {status:#x}); see its output above"
        );
    }
}

/// Latencies the reservoir test records: more than the reservoir holds.
const RECORDED_LATENCIES: u64 = 150_000;

/// Records latencies 1..=RECORDED_LATENCIES ns once, then spins until told
/// to stop.
fn records_many_latencies(ctx: &WorkerContext) -> u64 {
    for ns in 1..=RECORDED_LATENCIES {
        ctx.record_latency_ns(ns);
    }
    let mut units = 0;
    while !ctx.should_stop() {
        std::hint::black_box(runq::workload::spin(1000));
        ctx.tick(1);
        units += 1;
    }
    units
}

/// Starts `cfg`, waits until worker 0 made `iterations` iterations (or
/// fails after a deadline), stops and collects.
fn run_until_iterations(cfg: &WorkloadConfig, iterations: u64) -> Vec<WorkerReport> {
    let mut handle = WorkloadHandle::spawn(cfg).expect("spawn");
    handle.start().expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.snapshot_iterations()[0] < iterations {
        assert!(
            Instant::now() < deadline,
            "worker 0 made {:?} iterations in 30 s, wanted {iterations}",
            handle.snapshot_iterations()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.stop_and_collect()
}

#[test]
fn wake_latency_reservoir_keeps_100000_samples_and_the_true_total() {
    use runq::workload::WAKE_LATENCY_CAP;
    assert_eq!(WAKE_LATENCY_CAP, 100_000, "the README documents 100,000");
    for mode in [CloneMode::Fork, CloneMode::Thread] {
        let work = WorkType::Custom(CustomWork::new("latencies", records_many_latencies));
        let reports = leaves_nothing(|| run_until_iterations(&config(work, 1, mode), 10));
        let r = &reports[0];
        assert!(r.completed, "{mode:?}: {:?}", r.exit);
        assert_eq!(r.wake_latency_count, RECORDED_LATENCIES, "{mode:?}");
        assert_eq!(r.wake_latency_ns.len(), WAKE_LATENCY_CAP, "{mode:?}");
        // A sample of what was recorded, each value once, reaching into
        // the part recorded after the reservoir filled (a reservoir that
        // kept only the first values would have none of it: about a third
        // of the samples are expected there).
        let distinct: BTreeSet<u64> = r.wake_latency_ns.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            WAKE_LATENCY_CAP,
            "{mode:?}: repeated samples"
        );
        assert!(
            distinct
                .iter()
                .all(|ns| (1..=RECORDED_LATENCIES).contains(ns)),
            "{mode:?}"
        );
        let late = distinct.range(WAKE_LATENCY_CAP as u64 + 1..).count();
        assert!(
            (25_000..42_000).contains(&late),
            "{mode:?}: {late} samples from after the reservoir filled"
        );
    }
}

#[test]
fn iteration_cost_reservoir_keeps_10000_samples() {
    use runq::workload::ITERATION_COST_CAP;
    assert_eq!(ITERATION_COST_CAP, 10_000, "the README documents 10,000");
    let reports = leaves_nothing(|| {
        run_until_iterations(&config(WorkType::CpuSpin, 1, CloneMode::Fork), 15_000)
    });
    let r = &reports[0];
    assert!(r.completed, "{:?}", r.exit);
    assert_eq!(r.iteration_cost_ns.len(), ITERATION_COST_CAP);
    assert!(r.iteration_cost_ns.iter().all(|ns| *ns > 0));
}

#[test]
fn only_the_first_1024_migrations_are_timestamped() {
    use runq::workload::MIGRATION_EVENTS_CAP;
    assert_eq!(MIGRATION_EVENTS_CAP, 1024, "the README documents 1024");
    let allowed = allowed_cpus();
    assert!(allowed.len() >= 2, "needs 2 CPUs, has {allowed:?}");
    // Each iteration moves the worker to another CPU.
    let work = WorkType::AffinityChurn { spin_iters: 100 };
    let reports = leaves_nothing(|| run_until_iterations(&config(work, 1, CloneMode::Fork), 3_000));
    let r = &reports[0];
    assert!(r.completed, "{:?}", r.exit);
    assert!(r.migrations > 2 * 1024, "only {} migrations", r.migrations);
    let events = &r.migration_events;
    assert_eq!(events.len(), MIGRATION_EVENTS_CAP);
    // One chain of moves, in time order ...
    for pair in events.windows(2) {
        assert_eq!(pair[0].to_cpu, pair[1].from_cpu, "{pair:?}");
        assert!(pair[0].at_ms <= pair[1].at_ms, "{pair:?}");
    }
    assert!(events.iter().all(|e| e.from_cpu != e.to_cpu));
    // ... from the start of the run: the first of 2000+ moves comes long
    // before the 1024th (kept events from the end would start at least
    // halfway through their own span).
    let (first, last) = (events[0].at_ms, events[1023].at_ms);
    assert!(
        first < last / 4.0,
        "first kept move at {first} ms, last at {last} ms"
    );
}
