//! Payloads: real external programs in real cgroups, their metrics, exit
//! checks, bounds, process trees, ready markers and cleanup.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use runq::cgroup::CgroupManager;
use runq::check::judge_payload as judge;
use runq::error::{exit_code_for, EXIT_BAD_INPUT};
use runq::workload::payload::{
    Aggregate, MetricBound, MetricSpec, PayloadHandle, PayloadReport, PayloadSpec,
};
use runq::workload::ready::{marker_path, ReadyOutcome};
use runq::workload::ExitShape;

mod common;

/// Payload tests fork and count children: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A run root with one cgroup "payload"; removed when dropped.
struct TestCgroup {
    manager: CgroupManager,
}

impl TestCgroup {
    fn new() -> TestCgroup {
        let manager = CgroupManager::detect().expect("cgroup cpu and cpuset controllers needed");
        manager.backend().create("payload").unwrap();
        TestCgroup { manager }
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        runq::workload::payload::cgroup_procs_files(self.manager.backend(), "payload")
    }

    fn procs(&self) -> Vec<i32> {
        self.manager.backend().procs("payload").unwrap()
    }
}

fn require(binary: &str) {
    if let Err(e) = runq::workload::payload::resolve_binary(binary) {
        panic!("this test needs {binary}: {e}");
    }
}

/// No child process of the test is left.
fn assert_no_children() {
    let me = std::process::id();
    let mut left = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{me}/task"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        left.extend(text.split_whitespace().map(str::to_string));
    }
    assert!(left.is_empty(), "children left behind: {left:?}");
}

fn shell_payload(name: &str, script: &str) -> PayloadSpec {
    PayloadSpec {
        args: vec!["-c".into(), script.into()],
        timeout: Duration::from_secs(10),
        ..PayloadSpec::new(name, "sh")
    }
}

/// Runs `spec` in a fresh cgroup; while it runs, checks that the cgroup
/// holds the program and counts the most processes seen in it at once.
fn run_in_cgroup(spec: &PayloadSpec) -> (PayloadReport, usize) {
    let cgroup = TestCgroup::new();
    let mut handle = PayloadHandle::spawn_in(spec, cgroup.manager.backend(), "payload").unwrap();
    let program = handle.pid();
    let mut most = 0;
    let deadline = Instant::now() + spec.timeout;
    while !handle.tick(Duration::from_millis(20)) && Instant::now() < deadline {
        let procs = cgroup.procs();
        if !procs.is_empty() && !spec.trace {
            assert!(procs.contains(&program), "{program} not in {procs:?}");
        }
        most = most.max(procs.len());
    }
    let report = judge(handle.wait());
    assert!(
        cgroup.procs().is_empty(),
        "cgroup not empty after the payload"
    );
    drop(cgroup);
    assert_no_children();
    (report, most)
}

#[test]
fn stress_ng_fixture_runs_in_its_cgroup_with_bogo_ops_metric() {
    let _serial = serial();
    require("stress-ng");
    let spec = PayloadSpec::fixture("stress-ng-cpu").unwrap();
    let (report, most) = run_in_cgroup(&spec);
    assert!(report.passed, "{report:#?}");
    assert_eq!(report.exit, ExitShape::Exited(0));
    let rate = report.metrics["bogo_ops_per_s"];
    assert!(rate > 0.0, "{report:#?}");
    assert!(report.metrics["bogo_ops"] > 0.0);
    // The stress-ng parent and its 2 cpu workers, all in the cgroup.
    assert!(report.tree.len() >= 3, "{:?}", report.tree);
    assert!(most >= 3, "at most {most} processes seen in the cgroup");
    assert!(report.escaped.is_empty());
    assert_eq!(report.tree[0].0, report.pid);
    eprintln!("stress-ng: {rate:.0} bogo ops/s, tree {:?}", report.tree);
}

#[test]
fn hackbench_fixture_reports_time_and_its_whole_tree_stays_in_the_cgroup() {
    let _serial = serial();
    require("hackbench");
    let spec = PayloadSpec::fixture("hackbench").unwrap();
    let (report, most) = run_in_cgroup(&spec);
    assert!(report.passed, "{report:#?}");
    let time = report.metrics["time_s"];
    assert!(time > 0.0 && time < 20.0, "{time}");
    assert_eq!(report.units["time_s"], "s");
    assert!(report.escaped.is_empty());
    eprintln!(
        "hackbench: {time} s; sampling saw {} processes, the cgroup at most {most}",
        report.tree.len()
    );

    // Under the ptrace engine the tree is complete: 4 groups of 5 senders
    // and 5 receivers are 40 forked processes beside the root.
    let traced = PayloadSpec {
        trace: true,
        ..spec
    };
    let (report, most) = run_in_cgroup(&traced);
    assert!(report.passed, "{report:#?}");
    assert_eq!(report.tree.len(), 41, "{:?}", report.tree);
    assert!(report.tree.iter().all(|(_, comm)| comm == "hackbench"));
    // Membership was sampled while it ran (every sampled member was inside).
    assert!(report.escaped.is_empty());
    eprintln!("traced hackbench: the cgroup held at most {most} processes when sampled");
}

#[test]
fn cyclictest_fixture_reports_latencies_within_bounds() {
    let _serial = serial();
    require("cyclictest");
    let spec = PayloadSpec::fixture("cyclictest").unwrap();
    let (report, _) = run_in_cgroup(&spec);
    assert!(report.passed, "{report:#?}");
    let max = report.metrics["max_latency_us"];
    let avg = report.metrics["avg_latency_us"];
    assert!(max >= avg && avg > 0.0, "max {max} avg {avg}");
    assert!(report.metrics["cycles"] >= 100.0);
    eprintln!("cyclictest: max {max} us, avg {avg} us");
}

#[test]
fn nonzero_exit_fails_unless_expected() {
    let _serial = serial();
    let spec = shell_payload("exit3", "exit 3");
    let (report, _) = run_in_cgroup(&spec);
    assert!(!report.passed);
    assert_eq!(report.exit, ExitShape::Exited(3));
    assert!(
        report.failures[0].contains("expected exit 0"),
        "{:?}",
        report.failures
    );

    let spec = PayloadSpec {
        expect_exit: Some(3),
        ..spec
    };
    let (report, _) = run_in_cgroup(&spec);
    assert!(report.passed, "{report:#?}");
}

#[test]
fn timeout_kills_the_tree_and_fails() {
    let _serial = serial();
    let spec = PayloadSpec {
        timeout: Duration::from_millis(300),
        ..shell_payload("sleeper", "sleep 30 & sleep 30; wait")
    };
    let started = Instant::now();
    let (report, _) = run_in_cgroup(&spec);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.exit, ExitShape::TimedOut);
    assert!(!report.passed);
    assert!(
        report.failures[0].contains("timeout"),
        "{:?}",
        report.failures
    );
    assert!(report.tree.len() >= 3, "{:?}", report.tree);
}

#[test]
fn metrics_aggregate_and_bounds_are_checked() {
    let _serial = serial();
    let metric = |name: &str, aggregate| MetricSpec {
        name: name.into(),
        pattern: r"^value: (\d+(?:\.\d+)?)".into(),
        aggregate,
        unit: None,
    };
    let spec = PayloadSpec {
        metrics: vec![
            metric("last", Aggregate::Last),
            metric("max", Aggregate::Max),
            metric("min", Aggregate::Min),
            metric("sum", Aggregate::Sum),
            metric("mean", Aggregate::Mean),
            MetricSpec {
                name: "absent".into(),
                pattern: r"^nothing (\d+)".into(),
                aggregate: Aggregate::Last,
                unit: None,
            },
        ],
        bounds: vec![
            MetricBound {
                metric: "max".into(),
                max: Some(10.0),
                min: None,
            },
            MetricBound {
                metric: "min".into(),
                max: None,
                min: Some(1.0),
            },
        ],
        // stderr counts too; a line without newline at the end as well.
        ..shell_payload(
            "values",
            "echo 'value: 4'; echo 'value: 42' >&2; echo 'noise value: 7'; printf 'value: 2'",
        )
    };
    let (report, _) = run_in_cgroup(&spec);
    assert_eq!(report.metrics["last"], 2.0);
    assert_eq!(report.metrics["max"], 42.0);
    assert_eq!(report.metrics["min"], 2.0);
    assert_eq!(report.metrics["sum"], 48.0);
    assert_eq!(report.metrics["mean"], 16.0);
    assert_eq!(report.missing_metrics, vec!["absent".to_string()]);
    assert_eq!(
        report.bound_violations,
        vec!["max = 42 exceeds max 10".to_string()]
    );
    assert!(!report.passed);
    assert!(report.stdout_tail.contains("value: 42"));
}

#[test]
fn process_leaving_the_cgroup_is_reported_as_escaped() {
    let _serial = serial();
    let cgroup = TestCgroup::new();
    // The grandchild moves itself to the parent of the run root in every
    // hierarchy, as a misbehaving program could.
    let files = cgroup.procs_files();
    let escape: Vec<String> = files
        .iter()
        .map(|f| {
            let root_parent = f.parent().unwrap().parent().unwrap().parent().unwrap();
            format!("echo $$ > {}/cgroup.procs", root_parent.display())
        })
        .collect();
    let script = format!("sh -c '{}; sleep 0.5'; true", escape.join("; "));
    let handle = PayloadHandle::spawn(&shell_payload("escaper", &script), &files).unwrap();
    let report = judge(handle.wait());
    drop(cgroup);
    assert!(!report.passed);
    // The shell that moved itself, and the sleep it started there.
    assert!(!report.escaped.is_empty(), "{report:#?}");
    assert!(
        report.escaped.iter().any(|(_, comm)| comm == "sh"),
        "{:?}",
        report.escaped
    );
    assert!(report.failures.iter().any(|f| f.contains("outside")));
    assert_no_children();
}

#[test]
fn stop_and_collect_ends_a_running_payload_as_expected() {
    let _serial = serial();
    let cgroup = TestCgroup::new();
    let spec = shell_payload("long", "sleep 30 & sleep 30; wait");
    let mut handle = PayloadHandle::spawn(&spec, &cgroup.procs_files()).unwrap();
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        handle.tick(Duration::from_millis(20));
    }
    let started = Instant::now();
    let report = judge(handle.stop_and_collect());
    let took = started.elapsed();
    assert!(report.stopped);
    assert!(report.passed, "{report:#?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(cgroup.procs().is_empty());
    drop(cgroup);
    assert_no_children();
    eprintln!("stop took {took:?}");
}

#[test]
fn ready_marker_from_a_payload_in_the_default_dir() {
    let _serial = serial();
    let cgroup = TestCgroup::new();
    let spec = PayloadSpec {
        ready_marker: true,
        ..shell_payload(
            "ready",
            "echo \"file=$RUNQ_READY_FILE\"; sleep 0.1; : > \"$RUNQ_READY_FILE\"; sleep 0.2",
        )
    };
    let mut handle = PayloadHandle::spawn(&spec, &cgroup.procs_files()).unwrap();
    let pid = handle.pid();
    assert_eq!(
        handle.wait_ready(Duration::from_secs(5)),
        ReadyOutcome::Ready
    );
    let report = judge(handle.wait());
    assert!(report.passed, "{report:#?}");
    assert!(
        report
            .stdout_tail
            .contains(&format!("file=/tmp/runq-ready-{pid}")),
        "{}",
        report.stdout_tail
    );
    assert!(!marker_path(pid).exists());

    // Never marking fails the payload; dying first is told apart.
    let spec = PayloadSpec {
        ready_marker: true,
        ..shell_payload("silent", "sleep 1")
    };
    let mut handle = PayloadHandle::spawn(&spec, &cgroup.procs_files()).unwrap();
    assert_eq!(
        handle.wait_ready(Duration::from_millis(200)),
        ReadyOutcome::NeverReady
    );
    let report = judge(handle.stop_and_collect());
    assert!(!report.passed);
    assert!(report.failures.iter().any(|f| f.contains("never ready")));

    let spec = PayloadSpec {
        ready_marker: true,
        ..shell_payload("dies", "exit 4")
    };
    let mut handle = PayloadHandle::spawn(&spec, &cgroup.procs_files()).unwrap();
    assert_eq!(
        handle.wait_ready(Duration::from_secs(5)),
        ReadyOutcome::DiedBefore(ExitShape::Exited(4))
    );
    let report = judge(handle.wait());
    assert_eq!(report.exit, ExitShape::Exited(4));
    drop(cgroup);
    assert_no_children();
}

#[test]
fn traced_payload_records_short_lived_processes_in_the_cgroup() {
    let _serial = serial();
    let spec = PayloadSpec {
        trace: true,
        ..shell_payload(
            "forks",
            "for i in 1 2 3 4 5 6; do /bin/true; done; (exit 0); sh -c 'exit 0'; echo done",
        )
    };
    let (report, _) = run_in_cgroup(&spec);
    assert!(report.passed, "{report:#?}");
    assert!(report.traced);
    // sh, six true, the subshell (may be optimised away), the inner sh.
    assert!(report.tree.len() >= 8, "{:?}", report.tree);
    assert!(
        report.tree.iter().filter(|(_, c)| c == "true").count() >= 6,
        "{:?}",
        report.tree
    );
    assert!(report.escaped.is_empty());
    assert!(report.stdout_tail.contains("done"));
}

#[test]
fn bad_payloads_are_bad_input_naming_the_fix() {
    let _serial = serial();
    let check = |spec: PayloadSpec, wanted: &[&str]| {
        let err = spec.validate().unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err:#}");
        let text = format!("{err:#}");
        for w in wanted {
            assert!(text.contains(w), "{text:?} lacks {w:?}");
        }
        let spawned = PayloadHandle::spawn(&spec, &[]).err().unwrap();
        assert_eq!(exit_code_for(&spawned), EXIT_BAD_INPUT);
    };
    check(
        PayloadSpec::new("h", "/nonexistent/bin/hackbench"),
        &["hackbench", "rt-tests", "apt-get install rt-tests"],
    );
    check(
        PayloadSpec::new("s", "/nonexistent/stress-ng"),
        &["stress-ng", "apt-get install stress-ng"],
    );
    check(
        PayloadSpec::new("x", "runq-no-such-program"),
        &["not found in PATH"],
    );
    let with_metric = |pattern: &str| PayloadSpec {
        metrics: vec![MetricSpec {
            name: "m".into(),
            pattern: pattern.into(),
            aggregate: Aggregate::Max,
            unit: None,
        }],
        ..PayloadSpec::new("p", "sh")
    };
    check(
        with_metric("(unclosed"),
        &["metrics[0].pattern", "invalid regex"],
    );
    check(
        with_metric(r"(\d+) (\d+)"),
        &["2 capture groups", "exactly one"],
    );
    check(with_metric(r"\d+"), &["0 capture groups"]);
    check(
        PayloadSpec {
            bounds: vec![MetricBound {
                metric: "nope".into(),
                max: Some(1.0),
                min: None,
            }],
            ..with_metric(r"(\d+)")
        },
        &["bounds[0].metric \"nope\"", "declare it"],
    );
    check(
        PayloadSpec {
            bounds: vec![MetricBound {
                metric: "m".into(),
                max: Some(1.0),
                min: Some(2.0),
            }],
            ..with_metric(r"(\d+)")
        },
        &["min 2 > max 1"],
    );
    check(
        PayloadSpec {
            timeout: Duration::ZERO,
            ..PayloadSpec::new("t", "sh")
        },
        &["timeout must be > 0"],
    );
    assert_no_children();
}

#[test]
fn payload_files_parse_and_validate() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("payload_") && name.ends_with(".toml")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let payloads = runq::workload::payload::payloads_from_toml(&text)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(!payloads.is_empty(), "{name} declares no payloads");
        for p in &payloads {
            p.validate().unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        found += 1;
    }
    assert!(found >= 3, "only {found} scenarios/payload_*.toml files");

    // Unknown fields and fixtures are bad input naming them.
    for (text, wanted) in [
        (
            "[[payloads]]\nfixture = \"hackbench\"\ntimeot = \"1s\"\n",
            "timeot",
        ),
        (
            "[[payloads]]\nfixture = \"nope\"\n",
            "unknown payload fixture \"nope\"",
        ),
        ("[[payloads]]\nname = \"x\"\n", "binary"),
        (
            "[[payloads]]\nbinary = \"sh\"\ntimeout = \"5 parsecs\"\n",
            "timeout",
        ),
    ] {
        let err = runq::workload::payload::payloads_from_toml(text).unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT);
        assert!(
            format!("{err:#}").contains(wanted),
            "{err:#} lacks {wanted}"
        );
    }
}

/// `rt_runtime_us` gives the payload's cgroup (v1 with RT group scheduling)
/// a real-time budget: without it a SCHED_FIFO program is refused there,
/// with it the program runs and the knob holds the budget.
#[test]
fn rt_runtime_us_lets_a_fifo_payload_run_in_its_cgroup() {
    let _serial = serial();
    require("chrt");
    let fifo = |rt_runtime_us: Option<u64>| PayloadSpec {
        args: vec!["-f".into(), "10".into(), "true".into()],
        timeout: Duration::from_secs(10),
        rt_runtime_us,
        ..PayloadSpec::new("fifo", "chrt")
    };
    let cgroup = TestCgroup::new();
    let Some(knob) = rt_knob(&cgroup) else {
        drop(cgroup);
        return common::skip(
            "rt_runtime_us_lets_a_fifo_payload_run_in_its_cgroup",
            "no cpu.rt_runtime_us here (cgroup v2, or a kernel without RT group scheduling)",
        );
    };
    let mut handle =
        PayloadHandle::spawn_in(&fifo(Some(150_000)), cgroup.manager.backend(), "payload").unwrap();
    assert_eq!(std::fs::read_to_string(&knob).unwrap().trim(), "150000");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !handle.tick(Duration::from_millis(20)) {
        assert!(Instant::now() < deadline, "chrt never ended");
    }
    let report = judge(handle.wait());
    assert_eq!(report.exit, ExitShape::Exited(0), "{report:#?}");
    assert!(report.passed, "{report:#?}");
    drop(cgroup);

    // Without a budget the same program is refused (chrt cannot set
    // SCHED_FIFO in a cgroup whose rt_runtime_us is 0).
    let (report, _) = run_in_cgroup(&fifo(None));
    assert_eq!(report.exit, ExitShape::Exited(1), "{report:#?}");
    assert!(!report.passed);
    assert_no_children();
}

/// The `cpu.rt_runtime_us` file of the test cgroup, if its hierarchy has one.
fn rt_knob(cgroup: &TestCgroup) -> Option<PathBuf> {
    cgroup
        .procs_files()
        .iter()
        .map(|p| p.with_file_name("cpu.rt_runtime_us"))
        .find(|k| k.exists())
}
