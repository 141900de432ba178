//! Tracing benchmark: runq's ptrace engine against the program run natively
//! and against cargo-tarpaulin's ptrace engine, all measured in this run on
//! this machine.
//!
//! 1. Overhead: a CPU-bound C program (threads + fork, `-g -O0`) and a Rust
//!    test binary, natively, under `runq trace`, and under
//!    `runq trace --coverage`: wall-time ratios.
//! 2. cargo-tarpaulin (`--engine ptrace`) on a small crate with
//!    compute-heavy unit tests, against `runq trace --coverage` of the very
//!    test binary tarpaulin built: wall-time ratio and line agreement.
//!    Reported as absent (with the install command) when tarpaulin is not
//!    installed.
//!
//! Run: `cargo bench --bench trace`. Wall times are medians of several runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");
const RUNS: usize = 5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/trace")
        .join(name)
}

/// Wall time of one execution, which must succeed.
fn wall(mut command: Command) -> Duration {
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let start = Instant::now();
    let status = command
        .status()
        .expect("cannot start the benchmark command");
    let elapsed = start.elapsed();
    assert!(status.success(), "benchmark command failed: {command:?}");
    elapsed
}

/// Median wall times of several commands, run `runs` times in interleaved
/// rounds so that load changes on the machine affect all of them alike.
fn interleaved_medians(runs: usize, makers: &[&dyn Fn() -> Command]) -> Vec<Duration> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); makers.len()];
    for _ in 0..runs {
        for (make, samples) in makers.iter().zip(&mut times) {
            samples.push(wall(make()));
        }
    }
    times
        .into_iter()
        .map(|mut samples| {
            samples.sort();
            samples[samples.len() / 2]
        })
        .collect()
}

fn runq_trace(flags: &[&str], program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(RUNQ);
    command
        .arg("trace")
        .args(flags)
        .arg("--")
        .arg(program)
        .args(args);
    command
}

fn print_overhead(label: &str, program: &Path, args: &[&str]) {
    let native = || {
        let mut c = Command::new(program);
        c.args(args);
        c
    };
    let traced = || runq_trace(&[], program, args);
    let covered = || runq_trace(&["--coverage"], program, args);
    let medians = interleaved_medians(RUNS, &[&native, &traced, &covered]);
    let (native, traced, covered) = (medians[0], medians[1], medians[2]);
    println!("{label}:");
    println!("  native                  {:>8.3} s", native.as_secs_f64());
    println!(
        "  runq trace              {:>8.3} s   {:.2}x native",
        traced.as_secs_f64(),
        traced.as_secs_f64() / native.as_secs_f64()
    );
    println!(
        "  runq trace --coverage   {:>8.3} s   {:.2}x native",
        covered.as_secs_f64(),
        covered.as_secs_f64() / native.as_secs_f64()
    );
}

/// lcov DA records of the file whose path ends with `suffix`: line -> hit.
fn lcov_lines(path: &Path, suffix: &str) -> BTreeMap<u32, bool> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines = BTreeMap::new();
    let mut in_file = false;
    for line in text.lines() {
        if let Some(file) = line.strip_prefix("SF:") {
            in_file = file.ends_with(suffix);
        } else if let Some(da) = line.strip_prefix("DA:").filter(|_| in_file) {
            let mut fields = da.split(',');
            let n: u32 = fields.next().unwrap().parse().unwrap();
            let hits: u64 = fields.next().unwrap().parse().unwrap();
            *lines.entry(n).or_insert(false) |= hits > 0;
        }
    }
    lines
}

/// Writes the benchmark crate into `dir`.
fn make_crate(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"trace_bench_crate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [lib]\npath = \"src/lib.rs\"\n",
    )
    .unwrap();
    std::fs::copy(fixture("bench_crate/lib.rs"), dir.join("src/lib.rs")).unwrap();
}

/// The newest test executable of the crate under `deps`.
fn newest_test_binary(deps: &Path) -> PathBuf {
    std::fs::read_dir(deps)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("trace_bench_crate-") && p.extension().is_none()
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).unwrap())
        .expect("no test binary was built")
}

fn tarpaulin_installed() -> bool {
    Command::new("cargo")
        .args(["tarpaulin", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn compare_with_tarpaulin(work: &Path) {
    let crate_dir = work.join("crate");
    make_crate(&crate_dir);
    if !tarpaulin_installed() {
        println!("cargo-tarpaulin: NOT INSTALLED, comparison skipped");
        println!("  install it with: cargo install cargo-tarpaulin");
        // The Rust overhead figures still come from the same crate.
        let status = Command::new("cargo")
            .current_dir(&crate_dir)
            .args(["test", "--no-run", "--quiet"])
            .status()
            .unwrap();
        assert!(status.success());
        let binary = newest_test_binary(&crate_dir.join("target/debug/deps"));
        print_overhead("rust test binary (cargo test, debug)", &binary, &["-q"]);
        return;
    }
    let tarpaulin = |out: &Path| {
        let mut c = Command::new("cargo");
        c.current_dir(&crate_dir)
            .args([
                "tarpaulin",
                "--engine",
                "ptrace",
                "--skip-clean",
                "--out",
                "Lcov",
            ])
            .arg("--output-dir")
            .arg(out);
        c
    };
    // First run builds the instrumented test binary; not timed.
    let tarpaulin_out = work.join("tarpaulin");
    let status = tarpaulin(&tarpaulin_out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cargo tarpaulin failed on the benchmark crate"
    );
    let binary = newest_test_binary(&crate_dir.join("target/debug/deps"));
    print_overhead("rust test binary (built by tarpaulin)", &binary, &["-q"]);

    println!("cargo-tarpaulin --engine ptrace vs runq trace --coverage (same test binary):");
    // All tests: seconds of computation. One quick test: a typical unit
    // test run, where each tool's fixed cost dominates.
    for (label, filter) in [
        ("all 4 tests, compute-heavy", None),
        ("1 quick test (csv)", Some("csv")),
    ] {
        let tarpaulin_run = || {
            let mut c = tarpaulin(&tarpaulin_out);
            if let Some(f) = filter {
                c.args(["--", f]);
            }
            c
        };
        let runq_lcov = work.join("runq.lcov");
        let runq_run = || {
            let mut c = Command::new(RUNQ);
            c.arg("trace")
                .arg("--coverage")
                .arg("--lcov")
                .arg(&runq_lcov)
                .arg("--")
                .arg(&binary)
                .arg("-q")
                .args(filter);
            c
        };
        let native_run = || {
            let mut c = Command::new(&binary);
            c.arg("-q").args(filter);
            c
        };
        let medians = interleaved_medians(3, &[&native_run, &tarpaulin_run, &runq_run]);
        let (native_wall, tarpaulin_wall, runq_wall) = (medians[0], medians[1], medians[2]);
        println!("  {label}:");
        println!(
            "    native                               {:>8.3} s",
            native_wall.as_secs_f64()
        );
        println!(
            "    cargo tarpaulin (warm, --skip-clean) {:>8.3} s   {:.2}x native",
            tarpaulin_wall.as_secs_f64(),
            tarpaulin_wall.as_secs_f64() / native_wall.as_secs_f64()
        );
        println!(
            "    runq trace --coverage                {:>8.3} s   {:.2}x native, runq {:.1}x faster than tarpaulin",
            runq_wall.as_secs_f64(),
            runq_wall.as_secs_f64() / native_wall.as_secs_f64(),
            tarpaulin_wall.as_secs_f64() / runq_wall.as_secs_f64()
        );
        if filter.is_some() {
            continue;
        }
        // Both lcov files now hold the full run's coverage.
        let theirs = lcov_lines(&tarpaulin_out.join("lcov.info"), "src/lib.rs");
        let ours = lcov_lines(&runq_lcov, "src/lib.rs");
        let common: Vec<u32> = theirs
            .keys()
            .filter(|l| ours.contains_key(l))
            .copied()
            .collect();
        let agree = common.iter().filter(|l| theirs[l] == ours[l]).count();
        println!(
            "    line agreement: {agree}/{} lines both count = {:.1}% \
             (tarpaulin-only lines {}, runq-only lines {}: runq also counts test code)",
            common.len(),
            100.0 * agree as f64 / common.len().max(1) as f64,
            theirs.len() - common.len(),
            ours.len() - common.len()
        );
    }
}

fn main() {
    // libtest-style arguments (--bench, filters) are ignored.
    let work = tempfile::tempdir().expect("cannot create a temporary directory");
    let hot = work.path().join("hot_loop");
    let status = Command::new("gcc")
        .args(["-g", "-O0", "-pthread", "-o"])
        .arg(&hot)
        .arg(fixture("hot_loop.c"))
        .status()
        .expect("gcc not found: install the Debian package gcc");
    assert!(status.success());
    println!("trace benchmark (medians of {RUNS} interleaved runs; 3 with tarpaulin)");
    print_overhead(
        "C: 2 threads + 1 fork, hot loops (-g -O0)",
        &hot,
        &["20000000"],
    );
    compare_with_tarpaulin(work.path());
}
