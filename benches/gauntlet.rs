//! Gauntlet benchmark: the example crate (examples/scx-tests) run twice in
//! this run on this machine, one boot per case and then shared boots
//! (`RUNQ_SHARED_BOOT=1`), over the same cases: wall time of each, the
//! ratio, boots per minute, and what the harness reported about its boots.
//!
//! `RUNQ_BENCH_FILTER` selects the cases (a libtest filter; default
//! `::1n1l2c1t::`, one topology with both profiles: 14 cases); set it to
//! `::` for the whole gauntlet (56 cases, about 20 minutes one boot per
//! case under TCG).
//!
//! Cases that fail their checks are named beside the timing (the
//! scheduler's verdict, not the benchmark's); the benchmark fails only when
//! the harness did not judge the cases.
//!
//! Run: `cargo bench --bench gauntlet`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(shared: bool, filter: &str) -> (Duration, String) {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args([
            "test",
            "--release",
            "-p",
            "scx-tests",
            "--",
            "--test-threads=1",
            filter,
        ])
        .env_remove("RUNQ_BUDGET");
    if shared {
        command.env("RUNQ_SHARED_BOOT", "1");
    } else {
        command.env_remove("RUNQ_SHARED_BOOT");
    }
    let started = Instant::now();
    let output = command.output().expect("running cargo test");
    let elapsed = started.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (elapsed, text)
}

/// The harness's boot summary and the bench target's `test result` line
/// (cargo's empty results for the other targets left out).
fn summary_line(text: &str) -> String {
    text.lines()
        .filter(|l| {
            l.contains("boot(s)")
                || (l.starts_with("test result") && !l.contains(" 0 passed; 0 failed"))
        })
        .collect::<Vec<_>>()
        .join("\n    ")
}

/// Cases whose checks failed: a scheduler's verdict, reported beside the
/// timing rather than hidden.
fn failed_cases(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("test "))
        .filter_map(|l| l.strip_suffix(" ... FAILED"))
        .map(str::trim)
        .collect()
}

fn report(label: &str, elapsed: Duration, text: &str) {
    let failed = failed_cases(text);
    println!(
        "  {label}: {:.1} s\n    {}",
        elapsed.as_secs_f64(),
        summary_line(text)
    );
    if !failed.is_empty() {
        println!("    failed their checks: {}", failed.join(", "));
    }
}

fn main() {
    let filter = std::env::var("RUNQ_BENCH_FILTER").unwrap_or_else(|_| "::1n1l2c1t::".into());
    // Build first, so neither run pays for compiling.
    let build = Command::new(env!("CARGO"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args(["test", "--release", "-p", "scx-tests", "--no-run"])
        .status()
        .expect("building the example");
    assert!(build.success());
    println!("gauntlet benchmark: examples/scx-tests, filter {filter:?}");
    let (alone, alone_text) = run(false, &filter);
    report("one boot per case", alone, &alone_text);
    let (shared, shared_text) = run(true, &filter);
    report("shared boots     ", shared, &shared_text);
    println!(
        "  shared / alone = {:.2} (saves {:.1} s)",
        shared.as_secs_f64() / alone.as_secs_f64(),
        alone.as_secs_f64() - shared.as_secs_f64()
    );
    // Timing means nothing if the harness itself broke (no case judged).
    for text in [&alone_text, &shared_text] {
        if !text.contains(" passed; ") || text.contains("produced no result") {
            eprintln!("{text}");
            std::process::exit(1);
        }
    }
}
