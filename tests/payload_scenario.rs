//! Payloads inside scenarios: a fixture runs in its cgroup beside workers,
//! and its metrics, bounds and tree land in the RunReport.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use runq::error::{exit_code_for, EXIT_BAD_INPUT, EXIT_CHECK_FAILED, EXIT_OK};
use runq::scenario::{load, run_scenario, RunOptions};
use runq::workload::payload::PayloadReport;

mod common;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn scenario_file(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn payload_reports(report: &runq::report::RunReport) -> Vec<PayloadReport> {
    report.payloads.clone()
}

#[test]
fn every_payload_scenario_file_loads_and_validates() {
    let topo = runq::topology::Topology::host().unwrap();
    for name in [
        "payload_stress_ng.toml",
        "payload_hackbench.toml",
        "payload_cyclictest.toml",
    ] {
        let scenario = load(&scenario_file(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(scenario.payloads.len(), 1, "{name}");
        runq::scenario::validate(&scenario, &topo).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
}

#[test]
fn hackbench_beside_workers_reports_metrics_and_checks() {
    let _serial = serial();
    let mut scenario = load(&scenario_file("payload_hackbench.toml")).unwrap();
    scenario.duration = std::time::Duration::from_millis(1500);
    let report = run_scenario(&scenario, &RunOptions::default()).unwrap();
    let payloads = payload_reports(&report);
    assert_eq!(payloads.len(), 1);
    let hackbench = &payloads[0];
    assert!(hackbench.passed, "{hackbench:#?}");
    assert!(hackbench.metrics["time_s"] > 0.0);
    assert!(hackbench.escaped.is_empty());
    let check = report
        .checks
        .get("payload:hackbench")
        .expect("payload check");
    assert!(check.passed, "{check:?}");
    assert!(check.details.iter().any(|d| d.starts_with("time_s = ")));
    // The workers ran and were checked too.
    assert!(report.cgroups.iter().any(|c| !c.workers.is_empty()));
    assert_eq!(report.exit_code(), EXIT_OK, "{:#?}", report.checks);
    assert!(no_runq_cgroups_left());
}

#[test]
fn a_violated_payload_bound_fails_the_run() {
    let _serial = serial();
    let mut scenario = load(&scenario_file("payload_hackbench.toml")).unwrap();
    scenario.duration = std::time::Duration::from_millis(800);
    // No hackbench finishes in a microsecond.
    scenario.payloads[0].bounds[0].max = Some(0.000001);
    let report = run_scenario(&scenario, &RunOptions::default()).unwrap();
    let check = report.checks.get("payload:hackbench").unwrap();
    assert!(!check.passed);
    assert!(check.summary.contains("exceeds max"), "{}", check.summary);
    assert_eq!(report.exit_code(), EXIT_CHECK_FAILED);
    assert!(no_runq_cgroups_left());
}

#[test]
fn payload_in_an_undeclared_cgroup_is_bad_input() {
    let mut scenario = load(&scenario_file("payload_hackbench.toml")).unwrap();
    scenario.payloads[0].cgroup = Some("nowhere".into());
    scenario.payloads[0].binary = "/nonexistent/cyclictest".into();
    let err = run_scenario(&scenario, &RunOptions::default()).unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT);
    let text = format!("{err:#}");
    assert!(text.contains("payloads[0].cgroup: \"nowhere\""), "{text}");
    assert!(text.contains("apt-get install rt-tests"), "{text}");
}

#[test]
fn runq_run_cli_writes_payloads_into_the_json_report() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_runq"))
        .args(["run", &scenario_file("payload_stress_ng.toml"), "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(EXIT_OK),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("payload:stress-ng-cpu"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let payload = &report["payloads"][0];
    assert_eq!(payload["name"], "stress-ng-cpu");
    assert!(payload["metrics"]["bogo_ops_per_s"].as_f64().unwrap() > 0.0);
    assert!(payload["tree"].as_array().unwrap().len() >= 3);
    assert!(no_runq_cgroups_left());
}

/// No run root of this process is left in any hierarchy, at any depth.
fn no_runq_cgroups_left() -> bool {
    let left = common::runq_roots_of(std::process::id());
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
    true
}

/// Pids of the processes called `comm` below `root`.
fn descendants_named(root: i32, comm: &str) -> Vec<i32> {
    runq::process::descendants(root)
        .into_iter()
        .filter(|p| runq::process::stat(*p).is_some_and(|s| s.comm == comm))
        .collect()
}

/// Starts the cyclictest scenario, waits until cyclictest runs, sends
/// `signal` to runq and returns (runq's exit code, cyclictest pids seen).
fn interrupt_cyclictest(signal: nix::sys::signal::Signal) -> (Option<i32>, Vec<i32>) {
    use std::time::{Duration, Instant};
    let mut runq = Command::new(env!("CARGO_BIN_EXE_runq"))
        .args(["run", &scenario_file("payload_cyclictest.toml"), "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = runq.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let found = descendants_named(pid, "cyclictest");
        // Its shared memory exists once its measuring threads report.
        if !found.is_empty()
            && found
                .iter()
                .all(|p| runq::process::children_of(*p).is_empty())
        {
            let threads = std::fs::read_dir(format!("/proc/{}/task", found[0]))
                .map(|d| d.count())
                .unwrap_or(0);
            if threads >= 3 {
                break found;
            }
        }
        assert!(Instant::now() < deadline, "cyclictest never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    let status = runq.wait().unwrap();
    for p in &seen {
        let deadline = Instant::now() + Duration::from_secs(5);
        while runq::process::is_alive(*p) {
            assert!(Instant::now() < deadline, "cyclictest {p} outlived runq");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    (status.code(), seen)
}

/// cyclictest keeps its statistics in /dev/shm/cyclictest<pid> and removes
/// them only when it ends normally: whatever ends runq, none may be left.
#[test]
fn an_interrupted_or_killed_run_leaves_no_payload_shared_memory() {
    use nix::sys::signal::Signal;
    let _serial = serial();
    if runq::workload::payload::resolve_binary("cyclictest").is_err() {
        common::skip(
            "an_interrupted_or_killed_run_leaves_no_payload_shared_memory",
            "cyclictest is not installed (apt-get install rt-tests)",
        );
        return;
    }
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL] {
        let (code, seen) = interrupt_cyclictest(signal);
        if signal == Signal::SIGKILL {
            assert_eq!(code, None, "{signal}");
        } else {
            assert_eq!(code, Some(3), "{signal}");
        }
        for p in seen {
            let shm = PathBuf::from(format!("/dev/shm/cyclictest{p}"));
            let leaked = shm.exists();
            let _ = std::fs::remove_file(&shm);
            assert!(!leaked, "{signal}: {} left behind", shm.display());
        }
    }
    // The next run reaps the killed run's cgroups.
    let _ = runq::cgroup::CgroupManager::detect().unwrap();
}
