//! What a sched_ext scheduler under test costs, measured in this run in a
//! guest booted with Debian sid's sched_ext kernel (from runq's cache):
//! `runq vm --kernel sched_ext -- run steady` with and without
//! `--scheduler scx_bpfland`, 5 interleaved rounds. Per round: the wall
//! time of the whole command, and from the copied-back JSON report the
//! scheduler's attach time (launch to `state` = enabled with its ops) and
//! the run's work units per second. Medians, and the ratios with/without.
//!
//! Needs `runq kernel fetch` and `scripts/setup-scx` first.
//!
//! Run: `cargo bench --bench scheduler`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use runq::regress::metrics_of;
use runq::report::RunReport;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");
const ROUNDS: usize = 5;

/// One measured run: wall time, attach time (with a scheduler), work rate.
struct Sample {
    wall: Duration,
    attach_ms: Option<f64>,
    work_per_sec: f64,
}

fn run(scheduler: bool, json: &Path) -> Sample {
    let json_text = json.display().to_string();
    let mut args = vec![
        "vm",
        "--kernel",
        "sched_ext",
        "--topology",
        "1n1l2c1t",
        "--",
        "run",
        "steady",
        "--json",
        &json_text,
    ];
    if scheduler {
        args.extend(["--scheduler", "scx_bpfland"]);
    }
    let started = Instant::now();
    let output = Command::new(RUNQ)
        .args(&args)
        .output()
        .expect("running runq");
    let wall = started.elapsed();
    let report = RunReport::from_json(&std::fs::read_to_string(json).expect("the JSON report"))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", String::from_utf8_lossy(&output.stderr)));
    let attach_ms = report.scheduler.as_ref().and_then(|s| s.attach_ms);
    assert_eq!(
        attach_ms.is_some(),
        scheduler,
        "the scheduler attached exactly when asked for:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let work_per_sec = metrics_of(&report)
        .into_iter()
        .find(|m| m.name == "work_units_per_sec")
        .map(|m| m.value)
        .expect("work_units_per_sec");
    Sample {
        wall,
        attach_ms,
        work_per_sec,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let json = dir.path().join("run.json");
    let mut without = Vec::new();
    let mut with = Vec::new();
    for round in 1..=ROUNDS {
        let plain = run(false, &json);
        let bpfland = run(true, &json);
        println!(
            "round {round}: without {:.1} s ({:.0} units/s); with scx_bpfland {:.1} s, attached in {:.0} ms ({:.0} units/s)",
            plain.wall.as_secs_f64(),
            plain.work_per_sec,
            bpfland.wall.as_secs_f64(),
            bpfland.attach_ms.unwrap_or(f64::NAN),
            bpfland.work_per_sec
        );
        without.push(plain);
        with.push(bpfland);
    }
    let wall = |s: &[Sample]| median(s.iter().map(|x| x.wall.as_secs_f64()).collect());
    let work = |s: &[Sample]| median(s.iter().map(|x| x.work_per_sec).collect());
    let attach = median(with.iter().filter_map(|x| x.attach_ms).collect());
    println!(
        "medians of {ROUNDS}: wall {:.1} s without, {:.1} s with (x{:.2}); scx_bpfland attaches in {attach:.0} ms; work units/s {:.0} without, {:.0} with (x{:.2})",
        wall(&without),
        wall(&with),
        wall(&with) / wall(&without),
        work(&without),
        work(&with),
        work(&with) / work(&without)
    );
}
