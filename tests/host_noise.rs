//! Host noise and verdicts: a worker stopped with SIGSTOP fails the run on
//! a quiet host, and that failure is not blamed on the host; the same run
//! beside foreign CPU hogs pinned to the run's CPUs is reported as
//! host-busy with the foreign CPU time actually measured, and is
//! inconclusive (exit 3) under --strict-host.
//!
//! The machine may be shared (other builds), so "quiet" is what the
//! sampler measured, never assumed: the quiet case retries until a run's
//! measured foreign share is below the busy thresholds.

use std::process::{Child, Command};
use std::time::Duration;

use runq::error::{EXIT_CHECK_FAILED, EXIT_ENVIRONMENT};
use runq::host::{BUSY_FOREIGN_SHARE, BUSY_PEAK_SHARE};
use runq::report::RunReport;
use runq::scenario::{
    run_scenario_with, CgroupDef, HoldSpec, RunOptions, Scenario, Step, WorkSpec,
};
use runq::workload::WorkType;

mod common;
use common::StopWorker;

/// Two spinners; worker 0 is stopped for the 600 ms middle step.
fn stop_scenario() -> Scenario {
    Scenario {
        name: "stopped_worker".into(),
        family: "test".into(),
        description: String::new(),
        duration: Duration::from_secs(1),
        cgroups: vec![CgroupDef::new(
            "cg0",
            vec![WorkSpec::new(WorkType::CpuSpin, 2)],
        )],
        steps: [300, 600, 300]
            .iter()
            .map(|ms| Step::new(vec![], HoldSpec::Fixed(Duration::from_millis(*ms))))
            .collect(),
        thresholds: Default::default(),
        periodic_capture_ms: None,
        payloads: Vec::new(),
        scheduler: None,
    }
}

fn run_stopped(seed: u64) -> RunReport {
    let mut hooks = StopWorker::default();
    let mut rng = rand::rngs::mock::StepRng::new(seed, 1);
    let opts = RunOptions {
        seed: Some(seed),
        ..RunOptions::default()
    };
    run_scenario_with(&stop_scenario(), &opts, seed, &mut rng, &mut hooks).expect("run")
}

fn gap_failed(report: &RunReport) -> &runq::check::CheckOutcome {
    let gap = report.checks.get("longest_gap").expect("longest_gap");
    assert!(
        !gap.passed,
        "a 600 ms stop fails longest_gap\n{}",
        report.render_text()
    );
    gap
}

/// CPU time of a process and its threads, in ms (`/proc/PID/stat` utime
/// + stime, in clock ticks).
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 * 1e3 / procfs::ticks_per_second() as f64
}

/// A busy loop pinned to `cpu` at nice -20, outside the run's cgroups.
fn hog(cpu: usize) -> Child {
    Command::new("nice")
        .args([
            "-n",
            "-20",
            "taskset",
            "-c",
            &cpu.to_string(),
            "sh",
            "-c",
            "while :; do :; done",
        ])
        .spawn()
        .expect("start a CPU hog (nice, taskset, sh)")
}

#[test]
fn a_stopped_worker_on_a_quiet_host_is_a_failure_not_host_noise() {
    let mut measured = Vec::new();
    for attempt in 0..6 {
        let report = run_stopped(100 + attempt);
        let gap = gap_failed(&report);
        assert_eq!(report.exit_code(), EXIT_CHECK_FAILED);
        let noise = report
            .noise
            .as_ref()
            .expect("noise is sampled during holds");
        assert!(noise.held_ms > 1000.0, "the holds were sampled: {noise:?}");
        if noise.busy {
            // The host was busy with other work: the marking must then be
            // there; try again for a quiet run.
            assert!(gap.host_busy.is_some(), "{}", report.render_text());
            measured.push(noise.foreign_share);
            eprintln!(
                "attempt {attempt}: host busy ({}), retrying",
                noise.describe()
            );
            std::thread::sleep(Duration::from_millis(500 * (attempt + 1)));
            continue;
        }
        assert!(
            noise.foreign_share < BUSY_FOREIGN_SHARE && noise.peak_foreign_share < BUSY_PEAK_SHARE
        );
        assert!(gap.host_busy.is_none(), "{}", report.render_text());
        assert!(
            !report.render_text().contains("host busy:"),
            "{}",
            report.render_text()
        );
        assert_eq!(report.exit_code_strict(true), EXIT_CHECK_FAILED);
        eprintln!("quiet run: {}", noise.describe());
        return;
    }
    panic!(
        "the host never became quiet enough to run this test (foreign shares measured: {measured:?}); \
         stop other CPU-heavy work and rerun"
    );
}

#[test]
fn the_same_failure_beside_pinned_hogs_is_reported_as_host_busy() {
    let cpus = runq::topology::Topology::host().unwrap().cpu_ids();
    let mut hogs: Vec<Child> = cpus.iter().map(|&c| hog(c)).collect();
    let before: Vec<f64> = hogs.iter().map(|h| cpu_ms(h.id())).collect();
    let report = run_stopped(7);
    let hog_ms: f64 = hogs
        .iter()
        .zip(&before)
        .map(|(h, b)| cpu_ms(h.id()) - b)
        .sum();
    for h in &mut hogs {
        h.kill().unwrap();
        h.wait().unwrap();
    }
    let gap = gap_failed(&report);
    let noise = report.noise.as_ref().unwrap();
    eprintln!(
        "hogs used {hog_ms:.0} ms during the run; {}",
        noise.describe()
    );
    // The hogs' own CPU time shows up as foreign time (the holds cover all
    // but the run's set-up; ticks are 10 ms).
    let held_fraction = noise.held_ms / report.duration_ms;
    assert!(
        noise.foreign_cpu_ms >= 0.8 * hog_ms * held_fraction - 50.0,
        "foreign {:.0} ms < the hogs' {hog_ms:.0} ms x {held_fraction:.2}",
        noise.foreign_cpu_ms
    );
    assert!(noise.busy, "{noise:?}");
    let why = gap
        .host_busy
        .as_deref()
        .expect("the failure is marked host-busy");
    assert!(why.contains("foreign processes took"), "{why}");
    assert!(
        report
            .render_text()
            .contains("(host busy: foreign processes took"),
        "{}",
        report.render_text()
    );
    assert_eq!(report.exit_code(), EXIT_CHECK_FAILED);
    assert_eq!(report.exit_code_strict(true), EXIT_ENVIRONMENT);
}
