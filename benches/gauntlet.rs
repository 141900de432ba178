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
//! Run: `cargo bench --bench gauntlet`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(shared: bool, filter: &str) -> (Duration, String, bool) {
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
    (elapsed, text, output.status.success())
}

fn summary_line(text: &str) -> String {
    text.lines()
        .filter(|l| l.contains("boot(s)") || l.starts_with("test result"))
        .collect::<Vec<_>>()
        .join("\n    ")
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
    let (alone, alone_text, alone_ok) = run(false, &filter);
    println!(
        "  one boot per case: {:.1} s{}\n    {}",
        alone.as_secs_f64(),
        if alone_ok { "" } else { " (FAILED)" },
        summary_line(&alone_text)
    );
    let (shared, shared_text, shared_ok) = run(true, &filter);
    println!(
        "  shared boots:      {:.1} s{}\n    {}",
        shared.as_secs_f64(),
        if shared_ok { "" } else { " (FAILED)" },
        summary_line(&shared_text)
    );
    println!(
        "  shared / alone = {:.2} (saves {:.1} s)",
        shared.as_secs_f64() / alone.as_secs_f64(),
        alone.as_secs_f64() - shared.as_secs_f64()
    );
    if !(alone_ok && shared_ok) {
        eprintln!("{alone_text}\n{shared_text}");
        std::process::exit(1);
    }
}
