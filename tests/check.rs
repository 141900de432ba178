//! Checks and reports over synthesized worker reports: every check passing
//! and failing, and the edge cases (no samples, one worker, empty cpuset).

use runq::check::{
    evaluate, pooled_percentile, run_checks, AssertResult, CgroupRun, CheckInput, CheckOutcome,
    ProgressSample, RunFacts, Thresholds, WorkerSetup, CHECK_NAMES,
};
use runq::error::{exit_code_for, EXIT_BAD_INPUT};
use runq::report::{compare, RunReport, REPORT_SCHEMA_VERSION};
use runq::topology::Topology;
use runq::workload::{ExitShape, Gap, SchedPolicy, WorkerReport};

const MS: u64 = 1_000_000;

fn worker(tid: i32, work_type: &str, units: u64, cpu_ms: u64, cpus: &[usize]) -> WorkerReport {
    let mut w = WorkerReport::sentinel(tid, 0, 0, work_type, ExitShape::Exited(0));
    w.completed = true;
    w.work_units = units;
    w.cpu_time_ns = cpu_ms * MS;
    w.wall_time_ns = 1000 * MS;
    w.off_cpu_ns = w.wall_time_ns - w.cpu_time_ns;
    w.cpus_used = cpus.iter().copied().collect();
    w
}

fn spin(tid: i32, cpu_ms: u64, cpus: &[usize]) -> WorkerReport {
    worker(tid, "cpu_spin", 1_000_000, cpu_ms, cpus)
}

fn cgroup(name: &str, workers: Vec<WorkerReport>) -> CgroupRun {
    CgroupRun {
        name: name.to_string(),
        cpuset: None,
        weight: None,
        workers,
        setups: Vec::new(),
        samples: Vec::new(),
        run_ms: 1000.0,
    }
}

fn input(cgroups: Vec<CgroupRun>) -> CheckInput {
    CheckInput {
        cgroups,
        num_cpus: 2,
        duration_ms: 1000.0,
    }
}

/// Samples every 20 ms over a second; `rate(worker, ms)` gives the counter.
fn samples(workers: usize, rate: impl Fn(usize, u64) -> u64) -> Vec<ProgressSample> {
    (0..=50)
        .map(|k| {
            let at = k * 20;
            ProgressSample {
                at_ms: at as f64,
                iterations: (0..workers).map(|w| rate(w, at)).collect(),
            }
        })
        .collect()
}

fn check<'a>(result: &'a AssertResult, name: &str) -> &'a CheckOutcome {
    result
        .get(name)
        .unwrap_or_else(|| panic!("no check {name} in {result:#?}"))
}

fn details(c: &CheckOutcome) -> String {
    c.details.join("\n")
}

#[test]
fn healthy_run_passes_every_check() {
    let mut cg = cgroup("cg0", vec![spin(10, 980, &[0]), spin(11, 990, &[1])]);
    cg.samples = samples(2, |w, at| at * 1000 + w as u64);
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    assert!(result.passed, "{result:#?}");
    let names: Vec<&str> = result.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CHECK_NAMES);
    for name in [
        "workers_completed",
        "not_starved",
        "fairness_spread",
        "longest_gap",
    ] {
        let c = check(&result, name);
        assert!(c.passed && !c.skipped, "{name}: {c:#?}");
    }
    // Nothing restricts CPUs, no bound on wakes or migrations.
    for name in ["cpuset_isolation", "wake_latency_p99", "migration_ratio"] {
        assert!(check(&result, name).skipped, "{name} should be skipped");
    }
    let starved = check(&result, "not_starved");
    // Fair is half of the 1970 ms the two got together.
    let worst = starved.value.unwrap();
    assert!((worst - 980.0 / 985.0).abs() < 1e-9, "worst share {worst}");
}

#[test]
fn no_worker_at_all_fails() {
    let result = run_checks(&input(vec![cgroup("cg0", vec![])]), &Thresholds::default());
    assert!(!result.passed);
    let c = check(&result, "workers_completed");
    assert!(!c.passed);
    assert!(c.summary.contains("no worker ran"), "{}", c.summary);
}

#[test]
fn sentinels_fail_workers_completed_and_are_left_out_elsewhere() {
    let killed = WorkerReport::sentinel(21, 0, 1, "cpu_spin", ExitShape::Signaled(9));
    let hung = WorkerReport::sentinel(22, 0, 2, "cpu_spin", ExitShape::TimedOut);
    let panicked = WorkerReport::sentinel(23, 0, 3, "cpu_spin", ExitShape::Panicked("boom".into()));
    let cg = cgroup("cg0", vec![spin(20, 990, &[0]), killed, hung, panicked]);
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "workers_completed");
    assert!(!c.passed);
    assert_eq!(c.value, Some(3.0));
    let d = details(c);
    assert!(
        d.contains("cg0 worker 1 (tid 21, cpu_spin)") && d.contains("signal 9 (SIGKILL)"),
        "{d}"
    );
    assert!(
        d.contains("cg0 worker 2 (tid 22") && d.contains("timed out"),
        "{d}"
    );
    assert!(d.contains("panicked: boom"), "{d}");
    // The survivor had a CPU to itself: it is not starved, and the
    // sentinels' zero telemetry does not count as starvation.
    let starved = check(&result, "not_starved");
    assert!(starved.passed, "{starved:#?}");
    assert!(details(starved).contains("3 worker(s) without a report left out"));
}

#[test]
fn completed_but_nonzero_exit_fails() {
    let mut w = spin(30, 990, &[0]);
    w.exit = ExitShape::Exited(3);
    let result = run_checks(&input(vec![cgroup("cg0", vec![w])]), &Thresholds::default());
    let c = check(&result, "workers_completed");
    assert!(!c.passed);
    assert!(details(c).contains("exited with code 3"), "{}", details(c));
}

#[test]
fn no_progress_fails_not_starved() {
    let idle = worker(41, "io_sync", 0, 0, &[]);
    let cg = cgroup("cg0", vec![spin(40, 990, &[0]), idle]);
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "not_starved");
    assert!(!c.passed);
    assert!(
        details(c).contains("cg0 worker 1 (tid 41, io_sync): made 0 work units"),
        "{}",
        details(c)
    );
}

#[test]
fn low_cpu_share_fails_not_starved_naming_the_worker() {
    // Two equal spinners: each should get half of the 1040 ms they got.
    let cg = cgroup("cg0", vec![spin(50, 990, &[0]), spin(51, 50, &[1])]);
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "not_starved");
    assert!(!c.passed);
    assert!((c.value.unwrap() - 50.0 / 520.0).abs() < 1e-9, "{c:#?}");
    assert_eq!(c.limit, Some(0.2));
    assert!(
        details(c).contains("cg0 worker 1 (tid 51, cpu_spin)"),
        "{}",
        details(c)
    );
    assert!(
        !details(c).contains("tid 50, cpu_spin): 990"),
        "{}",
        details(c)
    );
}

#[test]
fn load_from_outside_the_run_is_not_starvation() {
    // Four spinners on CPU 0 of a busy host got 100 ms each of a second:
    // equal parts of what was going, so no one is starved.
    let mut cg = cgroup("cg0", (0..4).map(|i| spin(60 + i, 100, &[0])).collect());
    cg.cpuset = Some(vec![0]);
    let result = run_checks(&input(vec![cg.clone()]), &Thresholds::default());
    let c = check(&result, "not_starved");
    assert!(c.passed, "{c:#?}");
    assert!((c.value.unwrap() - 1.0).abs() < 1e-9, "{c:#?}");
    // One of them getting a tenth of its peers is starved, under any load.
    cg.workers[3].cpu_time_ns = 10 * MS;
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "not_starved");
    assert!(!c.passed, "{c:#?}");
    assert!((c.value.unwrap() - 10.0 / 77.5).abs() < 1e-9, "{c:#?}");
    assert!(
        details(c).contains("cg0 worker 3 (tid 63, cpu_spin)"),
        "{}",
        details(c)
    );
}

#[test]
fn fair_share_is_capped_by_wall_time() {
    // Worker 0 lived 500 ms and ran 490 of them; half of the 1480 ms pool
    // is more than it could use, so its fair share is its 500 ms wall.
    let mut cg = cgroup("cg0", vec![spin(65, 490, &[0]), spin(66, 990, &[1])]);
    cg.workers[0].wall_time_ns = 500 * MS;
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "not_starved");
    assert!(c.passed, "{c:#?}");
    assert!((c.value.unwrap() - 0.98).abs() < 1e-9, "{c:#?}");
}

#[test]
fn fair_share_weighs_cgroups_and_nice() {
    // cg_light (weight 100) and cg_heavy (weight 300) share CPU 0: the
    // light one's fair part is a quarter of the 980 ms both got, so 80 ms
    // is 0.33 of fair (an unweighted half would make it 0.16).
    let mut light = cgroup("cg_light", vec![spin(70, 80, &[0])]);
    light.cpuset = Some(vec![0]);
    light.weight = Some(100);
    let mut heavy = cgroup("cg_heavy", vec![spin(71, 900, &[0])]);
    heavy.cpuset = Some(vec![0]);
    heavy.weight = Some(300);
    let result = run_checks(&input(vec![light, heavy]), &Thresholds::default());
    let c = check(&result, "not_starved");
    assert!(c.passed, "{c:#?}");
    assert!((c.value.unwrap() - 80.0 / 245.0).abs() < 1e-9, "{c:#?}");

    // Nice 19 beside nice 0 on one CPU: 15/1039 of it is fair.
    let mut cg = cgroup("cg0", vec![spin(72, 980, &[0]), spin(73, 14, &[0])]);
    cg.setups = vec![
        WorkerSetup::new(SchedPolicy::Normal, 0, Some(vec![0])),
        WorkerSetup::new(SchedPolicy::Normal, 19, Some(vec![0])),
    ];
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    assert!(check(&result, "not_starved").passed, "{result:#?}");
    // Different nice values are different fairness classes.
    assert!(check(&result, "fairness_spread").skipped);
}

#[test]
fn sleeping_and_realtime_workers_are_checked_for_progress_only() {
    let sleeper = worker(80, "io_sync", 500, 3, &[0]);
    let fifo_hog = spin(81, 950, &[0]);
    let idle = spin(82, 40, &[0]);
    let mut cg = cgroup("cg0", vec![sleeper, fifo_hog, idle]);
    cg.setups = vec![
        WorkerSetup::default(),
        WorkerSetup::new(SchedPolicy::Fifo(50), 0, Some(vec![0])),
        WorkerSetup::new(SchedPolicy::Idle, 0, Some(vec![0])),
    ];
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "not_starved");
    assert!(c.passed, "{c:#?}");
    let d = details(c);
    assert!(
        d.contains("tid 80, io_sync): sleeps or blocks by design"),
        "{d}"
    );
    assert!(d.contains("tid 81, cpu_spin): real-time policy"), "{d}");
    assert!(
        d.contains("tid 82, cpu_spin): shares CPUs with a real-time worker"),
        "{d}"
    );
}

#[test]
fn spread_fails_on_unequal_rates_within_a_class() {
    let cg = cgroup("cg0", vec![spin(90, 900, &[0, 1]), spin(91, 200, &[0, 1])]);
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "fairness_spread");
    assert!(!c.passed);
    assert!((c.value.unwrap() - 4.5).abs() < 1e-9, "{c:#?}");
    assert!(
        details(c).contains("least served: cg0 worker 1 (tid 91, cpu_spin)"),
        "{}",
        details(c)
    );
    // A laxer bound passes the same run.
    let t = Thresholds {
        max_spread: 5.0,
        ..Thresholds::default()
    };
    assert!(
        check(
            &run_checks(
                &input(vec![cgroup(
                    "cg0",
                    vec![spin(90, 900, &[0]), spin(91, 200, &[1])]
                )]),
                &t
            ),
            "fairness_spread"
        )
        .passed
    );
}

#[test]
fn spread_with_a_worker_that_got_no_cpu_is_unbounded() {
    let cg = cgroup("cg0", vec![spin(100, 900, &[0]), spin(101, 0, &[])]);
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "fairness_spread");
    assert!(!c.passed);
    assert_eq!(c.value, None, "an unbounded spread has no finite value");
    assert!(c.summary.contains("unbounded"), "{}", c.summary);
}

#[test]
fn single_worker_skips_spread_but_still_gets_gap_detection() {
    let mut cg = cgroup("cg0", vec![spin(110, 990, &[0])]);
    // Counter frozen from 200 ms to 700 ms.
    cg.samples = samples(1, |_, at| if (200..=700).contains(&at) { 200 } else { at });
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    assert!(check(&result, "fairness_spread").skipped);
    let c = check(&result, "longest_gap");
    assert!(!c.passed, "{c:#?}");
    assert!((c.value.unwrap() - 500.0).abs() < 1e-9, "{c:#?}");
    assert!(
        details(c).contains("cg0 worker 0 (tid 110, cpu_spin): counter stuck at 200 for 500.0 ms"),
        "{}",
        details(c)
    );
}

#[test]
fn stall_while_others_advance_fails_but_a_global_pause_does_not() {
    let mut cg = cgroup("cg0", vec![spin(120, 990, &[0]), spin(121, 700, &[1])]);
    cg.samples = samples(2, |w, at| {
        if w == 1 && (300..=700).contains(&at) {
            300
        } else {
            at
        }
    });
    let result = run_checks(&input(vec![cg.clone()]), &Thresholds::default());
    let c = check(&result, "longest_gap");
    assert!(!c.passed);
    let d = details(c);
    assert!(
        d.contains("tid 121") && d.contains("while others advanced"),
        "{d}"
    );
    assert!(!d.contains("tid 120"), "{d}");

    // Both frozen over the same stretch: the run paused, no one is blamed.
    cg.samples = samples(2, |_, at| if (300..=700).contains(&at) { 300 } else { at });
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "longest_gap");
    assert!(c.passed, "{c:#?}");
    assert!(
        details(c).contains("the whole run paused"),
        "{}",
        details(c)
    );
}

#[test]
fn stalls_count_against_other_cgroups_too() {
    let mut a = cgroup("a", vec![spin(130, 990, &[0])]);
    a.samples = samples(1, |_, at| at);
    let mut b = cgroup("b", vec![spin(131, 600, &[1])]);
    b.samples = samples(1, |_, at| if at >= 400 { 400 } else { at });
    let result = run_checks(&input(vec![a, b]), &Thresholds::default());
    let c = check(&result, "longest_gap");
    assert!(!c.passed);
    assert!(details(c).contains("b worker 0 (tid 131"), "{}", details(c));
}

#[test]
fn stall_rules_respect_lifetimes_and_slow_iterations() {
    // Worker 1 was stopped at 300 ms: its frozen counter after that is fine.
    let mut cg = cgroup("cg0", vec![spin(140, 990, &[0]), spin(141, 290, &[1])]);
    cg.samples = samples(2, |w, at| if w == 1 { at.min(300) } else { at });
    cg.setups = vec![
        WorkerSetup::default(),
        WorkerSetup {
            stopped_ms: Some(300.0),
            ..WorkerSetup::default()
        },
    ];
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    assert!(check(&result, "longest_gap").passed, "{result:#?}");

    // A bursty worker with 400 ms iterations may stand still for 400 ms.
    let bursty = worker(142, "bursty", 2, 100, &[0]);
    let mut cg = cgroup("cg0", vec![spin(143, 990, &[1]), bursty]);
    cg.samples = samples(2, |w, at| if w == 1 { at / 400 } else { at });
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    assert!(check(&result, "longest_gap").passed, "{result:#?}");
}

#[test]
fn zero_samples_use_the_workers_own_gaps() {
    let mut stalled = spin(150, 700, &[0]);
    stalled.longest_gap = Some(Gap {
        ms: 310.0,
        cpu: 0,
        at_ms: 420.0,
    });
    // A sleeping type's own gap includes its sleeps and is not judged.
    let mut sleeper = worker(151, "bursty", 5, 100, &[1]);
    sleeper.longest_gap = Some(Gap {
        ms: 900.0,
        cpu: 1,
        at_ms: 950.0,
    });
    let result = run_checks(
        &input(vec![cgroup("cg0", vec![stalled, sleeper])]),
        &Thresholds::default(),
    );
    let c = check(&result, "longest_gap");
    assert!(!c.passed);
    assert!(c.summary.contains("no progress samples"), "{}", c.summary);
    let d = details(c);
    assert!(
        d.contains("tid 150, cpu_spin): own longest gap 310.0 ms on CPU 0 at 420.0 ms"),
        "{d}"
    );
    assert!(!d.contains("tid 151"), "{d}");

    // No samples and nothing CPU-bound: nothing to judge.
    let result = run_checks(
        &input(vec![cgroup(
            "cg0",
            vec![worker(152, "io_sync", 9, 1, &[0])],
        )]),
        &Thresholds::default(),
    );
    assert!(check(&result, "longest_gap").skipped);
}

#[test]
fn cpuset_isolation_names_cpus_outside_the_cpuset_and_affinity() {
    let mut cg = cgroup("cg1", vec![spin(160, 990, &[0]), spin(161, 990, &[0, 1])]);
    cg.cpuset = Some(vec![0]);
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "cpuset_isolation");
    assert!(!c.passed);
    assert_eq!(c.value, Some(1.0));
    assert!(
        details(c)
            .contains("cg1 worker 1 (tid 161, cpu_spin): ran on CPUs 1 outside cpuset 0 of cg1"),
        "{}",
        details(c)
    );

    let mut cg = cgroup("cg0", vec![spin(162, 990, &[0])]);
    cg.setups = vec![WorkerSetup::new(SchedPolicy::Normal, 0, Some(vec![1]))];
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "cpuset_isolation");
    assert!(!c.passed);
    assert!(
        details(c).contains("outside its affinity 1"),
        "{}",
        details(c)
    );

    let mut cg = cgroup("cg0", vec![spin(163, 990, &[1])]);
    cg.cpuset = Some(vec![1]);
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    assert!(check(&result, "cpuset_isolation").passed);
}

#[test]
fn empty_cpuset_is_not_checked() {
    let mut cg = cgroup("cg0", vec![spin(170, 990, &[0, 1])]);
    cg.cpuset = Some(vec![]);
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    let c = check(&result, "cpuset_isolation");
    assert!(c.skipped && c.passed, "{c:#?}");
    assert!(details(c).contains("cg0: empty cpuset"), "{}", details(c));
    // Its fair share falls back to all CPUs.
    assert!(check(&result, "not_starved").passed);
}

fn with_wakes(mut w: WorkerReport, us: &[u64], count: u64) -> WorkerReport {
    w.wake_latency_ns = us.iter().map(|u| u * 1000).collect();
    w.wake_latency_count = count;
    w
}

#[test]
fn wake_latency_p99_against_a_bound() {
    let fast: Vec<u64> = (0..1000).map(|i| 10 + i % 20).collect();
    let mut slow = fast.clone();
    slow[..50].iter_mut().for_each(|v| *v = 5000);
    let cg_fast = cgroup(
        "fast",
        vec![with_wakes(
            worker(180, "pipe_io", 1000, 50, &[0]),
            &fast,
            1000,
        )],
    );
    let cg_slow = cgroup(
        "slow",
        vec![with_wakes(
            worker(181, "pipe_io", 1000, 50, &[1]),
            &slow,
            1000,
        )],
    );
    let t = Thresholds {
        max_wake_p99_us: Some(100.0),
        ..Thresholds::default()
    };
    let result = run_checks(&input(vec![cg_fast.clone(), cg_slow]), &t);
    let c = check(&result, "wake_latency_p99");
    assert!(!c.passed);
    assert_eq!(c.value, Some(5000.0));
    let d = details(c);
    assert!(
        d.contains("slow: p99 5000.0 us") && d.contains("over the bound"),
        "{d}"
    );
    assert!(
        d.contains("slow worker 0 (tid 181, pipe_io): own p99"),
        "{d}"
    );
    assert!(d.contains("fast: p99 29.0 us"), "{d}");

    let result = run_checks(&input(vec![cg_fast.clone()]), &t);
    assert!(check(&result, "wake_latency_p99").passed);

    // No bound: skipped, but the figures are still in the details.
    let result = run_checks(&input(vec![cg_fast]), &Thresholds::default());
    let c = check(&result, "wake_latency_p99");
    assert!(
        c.skipped && details(c).contains("fast: p99 29.0 us"),
        "{c:#?}"
    );

    // A bound but no samples: skipped.
    let result = run_checks(&input(vec![cgroup("cg0", vec![spin(182, 990, &[0])])]), &t);
    assert!(check(&result, "wake_latency_p99").skipped);
}

#[test]
fn pooled_percentile_weighs_reservoirs_by_their_counts() {
    // A keeps all 100 of its 10 us wakes; B's single kept sample stands
    // for a million wakes of 1000 us.
    let a = with_wakes(worker(1, "pipe_io", 1, 1, &[0]), &[10; 100], 100);
    let b = with_wakes(worker(2, "pipe_io", 1, 1, &[0]), &[1000], 1_000_000);
    assert_eq!(pooled_percentile([&a, &b], 99.0), Some(1_000_000));
    assert_eq!(pooled_percentile([&a], 50.0), Some(10_000));
    let none: [&WorkerReport; 0] = [];
    assert_eq!(pooled_percentile(none, 99.0), None);
}

#[test]
fn migration_ratio_against_bounds() {
    let mut churner = spin(190, 990, &[0, 1]);
    churner.migrations = 5000;
    churner.work_units = 10_000;
    let mut calm = spin(191, 990, &[0]);
    calm.migrations = 1;
    let t = Thresholds {
        max_migration_ratio: Some(0.1),
        ..Thresholds::default()
    };
    let result = run_checks(
        &input(vec![cgroup("cg0", vec![churner.clone(), calm.clone()])]),
        &t,
    );
    let c = check(&result, "migration_ratio");
    assert!(!c.passed);
    assert_eq!(c.value, Some(0.5));
    assert!(details(c).contains("tid 190, cpu_spin): 5000 migrations over 10000 work units"));
    assert!(!details(c).contains("tid 191"));

    let t = Thresholds {
        max_migrations_per_sec: Some(10.0),
        ..Thresholds::default()
    };
    let result = run_checks(&input(vec![cgroup("cg0", vec![churner, calm.clone()])]), &t);
    assert!(details(check(&result, "migration_ratio")).contains("5000.0/s (max 10/s)"));
    let result = run_checks(&input(vec![cgroup("cg0", vec![calm])]), &t);
    assert!(check(&result, "migration_ratio").passed);
}

#[test]
fn disabled_checks_are_skipped() {
    let mut cg = cgroup("cg1", vec![spin(200, 990, &[0, 1])]);
    cg.cpuset = Some(vec![0]);
    let t = Thresholds {
        disabled: vec!["cpuset_isolation".into()],
        ..Thresholds::default()
    };
    let result = run_checks(&input(vec![cg]), &t);
    assert!(result.passed, "{result:#?}");
    let c = check(&result, "cpuset_isolation");
    assert!(c.skipped && c.summary.contains("disabled"), "{c:#?}");
}

#[test]
fn thresholds_defaults_toml_and_validation() {
    let t = Thresholds::default();
    t.validate().unwrap();
    assert_eq!(t.min_cpu_share, 0.2);
    assert_eq!(t.max_spread, 3.0);
    assert_eq!(t.max_gap_ms, 250.0);
    assert_eq!(t.min_work_units, 1);
    assert_eq!(t.max_wake_p99_us, None);

    // A scenario sets only what it changes.
    let t: Thresholds = toml::from_str("max_gap_ms = 100.0\nmax_wake_p99_us = 500.0").unwrap();
    assert_eq!(t.max_gap_ms, 100.0);
    assert_eq!(t.max_wake_p99_us, Some(500.0));
    assert_eq!(t.max_spread, 3.0);
    let back: Thresholds = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
    assert_eq!(back, t);

    let err = toml::from_str::<Thresholds>("max_gapms = 1.0").unwrap_err();
    assert!(err.to_string().contains("max_gapms"), "{err}");

    let cases: &[(Thresholds, &str)] = &[
        (
            Thresholds {
                min_cpu_share: -0.1,
                ..Default::default()
            },
            "thresholds.min_cpu_share",
        ),
        (
            Thresholds {
                max_spread: 0.5,
                ..Default::default()
            },
            "thresholds.max_spread",
        ),
        (
            Thresholds {
                max_gap_ms: f64::NAN,
                ..Default::default()
            },
            "thresholds.max_gap_ms",
        ),
        (
            Thresholds {
                max_wake_p99_us: Some(0.0),
                ..Default::default()
            },
            "thresholds.max_wake_p99_us",
        ),
        (
            Thresholds {
                max_migration_ratio: Some(-1.0),
                ..Default::default()
            },
            "thresholds.max_migration_ratio",
        ),
        (
            Thresholds {
                disabled: vec!["nope".into()],
                ..Default::default()
            },
            "valid check names: workers_completed",
        ),
    ];
    for (t, needle) in cases {
        let err = t.validate().unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT);
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
}

/// A payload report as a run records it (verdict fields filled).
fn payload_fixture() -> runq::workload::payload::PayloadReport {
    runq::workload::payload::PayloadReport {
        name: "fixture".into(),
        pid: 4242,
        exit: ExitShape::Exited(0),
        expected_exit: 0,
        stopped: false,
        timeout_ms: 10_000,
        metrics: [("ops".to_string(), 12.5)].into(),
        units: [("ops".to_string(), "ops/s".to_string())].into(),
        missing_metrics: vec![],
        bounds: vec![],
        bound_violations: vec![],
        escaped: vec![],
        ready_required: false,
        ready: None,
        failures: vec![],
        passed: true,
        stdout_tail: "ops: 12.5\n".into(),
        tree: vec![(4242, "fixture".into())],
        traced: false,
        wall_ms: 31.0,
    }
}

fn sample_report(passing: bool) -> RunReport {
    let topo = Topology::from_spec_str("1n1l2c1t").unwrap();
    let second = if passing { 980 } else { 20 };
    let mut cg = cgroup("cg0", vec![spin(300, 990, &[0]), spin(301, second, &[1])]);
    cg.samples = samples(2, |w, at| at * 10 + w as u64);
    cg.setups = vec![WorkerSetup::default(), WorkerSetup::default()];
    let input = input(vec![cg]);
    let evaluation = evaluate(&RunFacts::new(&input), &Thresholds::default());
    let mut report = RunReport::new(
        "steady",
        &topo,
        42,
        input,
        &Thresholds::default(),
        evaluation,
    );
    report.payloads.push(payload_fixture());
    report
}

#[test]
fn report_json_round_trips_with_its_schema_version() {
    let report = sample_report(false);
    let json = report.to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["schema_version"], REPORT_SCHEMA_VERSION);
    assert_eq!(value["scenario"], "steady");
    assert_eq!(value["topology"]["spec"], "1n1l2c1t");
    assert_eq!(value["seed"], 42);
    assert!(value["kernel_release"].as_str().unwrap().len() > 1);
    assert_eq!(value["cgroups"][0]["workers"][1]["tid"], 301);
    assert_eq!(value["checks"]["passed"], false);
    assert_eq!(value["payloads"][0]["name"], "fixture");
    assert_eq!(value["payloads"][0]["metrics"]["ops"], 12.5);
    assert_eq!(
        value["payloads"][0]["exit"],
        serde_json::json!({"Exited": 0})
    );
    let back = RunReport::from_json(&json).unwrap();
    assert_eq!(back, report);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    report.write_json(&path).unwrap();
    assert_eq!(RunReport::read_json(&path).unwrap(), report);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "a report is readable by others");
    // Only the report itself is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let mut other = value.clone();
    other["schema_version"] = serde_json::json!(REPORT_SCHEMA_VERSION + 1);
    let err = RunReport::from_json(&other.to_string()).unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT);
    assert!(err.to_string().contains("schema_version"), "{err}");

    let err = report
        .write_json(&dir.path().join("missing/r.json"))
        .unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT);
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn text_output_has_one_line_per_check_then_stats() {
    let good = sample_report(true);
    assert_eq!(good.exit_code(), 0);
    let text = good.render_text();
    assert!(
        text.starts_with("scenario steady on 1n1l2c1t (2 CPUs: 0-1)"),
        "{text}"
    );
    for name in CHECK_NAMES {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name} in\n{text}"));
        assert!(["PASS", "SKIP"].contains(&&line[..4]), "{line}");
    }
    assert!(text.contains("PASS not_starved"), "{text}");
    for stat in [
        "workers       2",
        "CPUs          2 (0-1)",
        "migrations",
        "worst spread",
        "worst gap",
        "p99 wake",
        "iterations",
    ] {
        assert!(text.contains(stat), "{stat} missing in\n{text}");
    }
    assert!(text.trim_end().ends_with("result: PASS"), "{text}");

    let bad = sample_report(false);
    assert_eq!(bad.exit_code(), 1);
    let text = bad.render_text();
    assert!(text.contains("FAIL not_starved"), "{text}");
    assert!(
        text.contains("       cg0 worker 1 (tid 301, cpu_spin)"),
        "{text}"
    );
    assert!(text.contains("result: FAIL"), "{text}");
}

#[test]
fn added_checks_decide_the_exit_code() {
    let mut report = sample_report(true);
    assert_eq!(report.exit_code(), 0);
    report.checks.push(CheckOutcome::new(
        "payload_fixture",
        false,
        "exited with code 1".into(),
    ));
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn stats_and_compare() {
    let good = sample_report(true);
    let s = &good.stats;
    assert_eq!(s.workers, 2);
    assert_eq!(s.cpus_used, vec![0, 1]);
    assert_eq!(s.iterations, 2_000_000);
    assert_eq!(s.per_cgroup.len(), 1);
    assert!((s.per_cgroup[0].cpu_time_ms - 1970.0).abs() < 1e-9);
    assert!((s.worst_spread.unwrap() - 990.0 / 980.0).abs() < 1e-9);
    let bad = sample_report(false);
    let text = compare(&good, &bad);
    assert!(text.contains("worst spread"), "{text}");
    assert!(text.contains("cg0 cpu ms"), "{text}");
    let line = text.lines().find(|l| l.starts_with("not_starved")).unwrap();
    assert!(
        line.contains("PASS") && line.contains("FAIL") && line.contains("changed"),
        "{line}"
    );
}

#[test]
fn a_worker_without_a_report_still_shows_its_stall_in_the_samples() {
    // Stopped at 200 ms and never resumed: no report, but its samples froze.
    let mut frozen = WorkerReport::sentinel(210, 0, 1, "cpu_spin", ExitShape::TimedOut);
    frozen.work_units = 200;
    let mut cg = cgroup("cg0", vec![spin(209, 990, &[0]), frozen]);
    cg.samples = samples(2, |w, at| if w == 1 { at.min(200) } else { at });
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    assert!(!check(&result, "workers_completed").passed);
    let c = check(&result, "longest_gap");
    assert!(!c.passed);
    assert!(
        details(c).contains("cg0 worker 1 (tid 210, cpu_spin): counter stuck at 200 for 800.0 ms"),
        "{}",
        details(c)
    );
}

#[test]
fn later_batches_of_a_cgroup_share_its_weight() {
    // cg0 and its later batch cg0@step1 split cg0's half of CPU 0; cg1 has
    // the other half to itself.
    let mut first = cgroup("cg0", vec![spin(220, 250, &[0])]);
    let mut later = cgroup("cg0@step1", vec![spin(221, 250, &[0])]);
    let mut other = cgroup("cg1", vec![spin(222, 500, &[0])]);
    for cg in [&mut first, &mut later, &mut other] {
        cg.cpuset = Some(vec![0]);
    }
    let result = run_checks(&input(vec![first, later, other]), &Thresholds::default());
    let c = check(&result, "not_starved");
    // As three cgroups the cg0 workers would be at 250/333 = 0.75.
    assert!((c.value.unwrap() - 1.0).abs() < 1e-9, "{c:#?}");
    assert_eq!(runq::check::cgroup_identity("cg0@step1"), "cg0");
}

#[test]
fn contenders_count_only_while_they_lived() {
    // cg0's two spinners run the whole second; cg1's two join from 250 to
    // 750 ms. In the middle each of the four gets a quarter of the pool.
    let life = |from: f64, to: f64| WorkerSetup {
        started_ms: Some(from),
        stopped_ms: Some(to),
        ..WorkerSetup::default()
    };
    let mut cg0 = cgroup(
        "cg0",
        vec![spin(230, 750, &[0, 1]), spin(231, 750, &[0, 1])],
    );
    cg0.setups = vec![life(0.0, 1000.0), life(0.0, 1000.0)];
    let mut joiners = vec![spin(232, 250, &[0, 1]), spin(233, 250, &[0, 1])];
    for w in &mut joiners {
        w.wall_time_ns = 500 * MS;
    }
    let mut cg1 = cgroup("cg1", joiners);
    cg1.setups = vec![life(250.0, 750.0), life(250.0, 750.0)];
    let result = run_checks(
        &input(vec![cg0.clone(), cg1.clone()]),
        &Thresholds::default(),
    );
    let c = check(&result, "not_starved");
    // A joiner's fair part: a quarter of cg0's 750 ms (half of it beside
    // the joiners) and cg1's 500 ms = 312.5 ms; it got 250 ms.
    assert!((c.value.unwrap() - 0.8).abs() < 1e-9, "{c:#?}");
    // Without lifetimes the whole pool counts: 250 of a fair 500 ms.
    cg0.setups.clear();
    cg1.setups.clear();
    let result = run_checks(&input(vec![cg0, cg1]), &Thresholds::default());
    assert!((check(&result, "not_starved").value.unwrap() - 0.5).abs() < 1e-9);
}

#[test]
fn report_cli_prints_compares_and_rejects_bad_files() {
    let runq = env!("CARGO_BIN_EXE_runq");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    let bad = dir.path().join("bad.json");
    sample_report(true).write_json(&good).unwrap();
    sample_report(false).write_json(&bad).unwrap();

    let out = std::process::Command::new(runq)
        .arg("report")
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL not_starved"), "{text}");
    let out = std::process::Command::new(runq)
        .arg("report")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    let out = std::process::Command::new(runq)
        .args(["report"])
        .args([&good, &bad])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("not_starved") && text.contains("changed"),
        "{text}"
    );

    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    for path in [dir.path().join("missing.json"), garbage] {
        let out = std::process::Command::new(runq)
            .arg("report")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(path.file_name().unwrap().to_str().unwrap()),
            "{err}"
        );
    }
}

#[test]
fn storage_bound_workers_are_not_judged_for_stalls() {
    // An fdatasync that waited 400 ms on the disk is not a scheduler stall.
    let syncer = worker(240, "io_sync", 900, 30, &[0]);
    let mut cg = cgroup("cg0", vec![spin(241, 990, &[1]), syncer]);
    cg.samples = samples(2, |w, at| {
        if w == 1 && (200..=600).contains(&at) {
            200
        } else {
            at
        }
    });
    let result = run_checks(&input(vec![cg]), &Thresholds::default());
    assert!(check(&result, "longest_gap").passed, "{result:#?}");
}

/// A policy has one spelling: what `--policy` reads is what a scenario file
/// and a report write, and both read it back.
#[test]
fn policy_round_trips_between_cli_scenario_file_and_report() {
    use runq::scenario::{toml, CgroupDef, Scenario};
    for text in ["normal", "batch", "idle", "ext", "fifo:50", "rr:7"] {
        let policy: SchedPolicy = text.parse().unwrap();
        assert_eq!(policy.to_string(), text);

        let scenario = Scenario::named("p").cgroup(CgroupDef::named("cg0").policy(policy.clone()));
        let file = toml::to_toml_string(&scenario).unwrap();
        assert!(file.contains(&format!("policy = \"{text}\"")), "{file}");
        let back = toml::from_toml_str(&file, "p.toml").unwrap();
        assert_eq!(back.cgroups[0].works[0].policy, policy);

        let mut cg = cgroup("cg0", vec![spin(10, 990, &[0])]);
        cg.setups = vec![WorkerSetup::new(policy.clone(), 0, None)];
        let input = input(vec![cg]);
        let evaluation = evaluate(&RunFacts::new(&input), &Thresholds::default());
        let topo = Topology::from_spec_str("1n1l2c1t").unwrap();
        let report = RunReport::new("p", &topo, 1, input, &Thresholds::default(), evaluation);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["cgroups"][0]["setups"][0]["policy"], text);
        let read = RunReport::from_json(&report.to_json()).unwrap();
        assert_eq!(read.cgroups[0].setups[0].policy, policy);
    }

    // The command line uses the same parser: the old report spelling is
    // rejected there with the one spelling named.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runq"))
        .args(["workload", "--work", "cpu_spin", "--policy", "fifo(50)"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_BAD_INPUT), "{stderr}");
    assert!(
        stderr.contains("--policy `fifo(50)`: use normal, batch, idle, ext, fifo:PRIO or rr:PRIO"),
        "{stderr}"
    );
}

/// Which work types have a fair share (CPU-bound) and which are not judged
/// for stalls (storage-bound) is a property of each type.
#[test]
fn every_work_type_states_its_demand() {
    use runq::workload::{Demand, WorkType};
    let cpu = [
        "cpu_spin",
        "yield_heavy",
        "cache_pressure",
        "cache_yield",
        "affinity_churn",
        "page_fault_churn",
    ];
    for name in WorkType::all_names() {
        let expected = if cpu.contains(name) {
            Demand::Cpu
        } else if *name == "io_sync" {
            Demand::Storage
        } else {
            Demand::Waits
        };
        assert_eq!(WorkType::demand_of(name), Some(expected), "{name}");
    }
    assert_eq!(WorkType::demand_of("custom"), None);
    assert_eq!(WorkType::demand_of("cpu_spin:x=1"), None);
}
