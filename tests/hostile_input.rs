//! Hostile input through the command line: every case exits 2 with a
//! message naming the field (or flag) and the limit, before anything runs
//! (no worker process, no cgroup root); `runq report` reads a bounded
//! amount and never prints a terminal escape sequence it was given.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");

fn runq(args: &[&str]) -> Output {
    Command::new(RUNQ)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUNQ_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("starting runq")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit 2 and every needle in stderr.
fn assert_refused(args: &[&str], needles: &[&str]) -> Output {
    let out = runq(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    out
}

/// `runq-*` cgroup directories anywhere at the top of the hierarchies.
fn cgroup_roots() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for mount in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for entry in std::fs::read_dir(mount.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with("runq-") {
                out.push(entry.path());
            }
        }
    }
    out
}

fn scenario_file(dir: &Path, body: &str) -> String {
    let path = dir.join("s.toml");
    std::fs::write(
        &path,
        format!("name = \"hostile\"\nduration = \"300ms\"\n{body}"),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn huge_sizes_are_refused_on_the_command_line_naming_parameter_and_limit() {
    for (work, field) in [
        ("page_fault_churn:region_kb=99999999999", "region_kb"),
        ("cache_pressure:size_kb=99999999999", "size_kb"),
        (
            "fan_out_compute:fan_out=1,footprint_kb=99999999999",
            "footprint_kb",
        ),
    ] {
        let started = Instant::now();
        assert_refused(
            &[
                "workload",
                "--work",
                work,
                "--workers",
                "2",
                "--duration",
                "300ms",
            ],
            &[field, "MemTotal"],
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{work}: ran");
    }
    // Each worker fits, all of them together do not.
    let kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .unwrap();
    let work = format!("cache_pressure:size_kb={}", kb / 2 + 1);
    assert_refused(
        &[
            "workload",
            "--work",
            &work,
            "--workers",
            "2",
            "--duration",
            "300ms",
        ],
        &["2 workers", "size_kb", "MemTotal"],
    );
}

#[test]
fn huge_sizes_in_a_scenario_are_refused_before_any_cgroup_exists() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario_file(
        dir.path(),
        "[[cgroups]]\nname = \"a\"\n[[cgroups.works]]\nwork = \"page_fault_churn:region_kb=99999999999\"\nworkers = 2\n",
    );
    let before = cgroup_roots();
    assert_refused(&["run", &file, "--quiet"], &["region_kb", "MemTotal"]);
    let new: Vec<PathBuf> = cgroup_roots()
        .into_iter()
        .filter(|r| !before.contains(r))
        .collect();
    assert!(new.is_empty(), "cgroup roots made: {new:?}");
}

#[test]
fn reserved_and_overlong_cgroup_names_are_refused_in_validation() {
    let dir = tempfile::tempdir().unwrap();
    let works = "[[cgroups.works]]\nwork = \"cpu_spin\"\nworkers = 1\n";
    let file = scenario_file(
        dir.path(),
        &format!("[[cgroups]]\nname = \"tasks\"\n{works}"),
    );
    assert_refused(&["run", &file, "--quiet"], &["cgroups[0].name", "reserved"]);
    let long = "x".repeat(201);
    let file = scenario_file(
        dir.path(),
        &format!("[[cgroups]]\nname = \"a\"\n{works}[[cgroups]]\nname = \"a/{long}\"\n{works}"),
    );
    assert_refused(&["run", &file, "--quiet"], &["cgroups[1].name", "200"]);
}

#[test]
fn a_repeated_work_parameter_is_called_duplicated() {
    assert_refused(
        &[
            "workload",
            "--work",
            "bursty:burst_ms=5,burst_ms=6",
            "--duration",
            "300ms",
        ],
        &["burst_ms", "duplicated"],
    );
}

#[test]
fn explore_parallelism_zero_and_empty_recipe_parts_are_refused() {
    assert_refused(
        &["explore", "--demo", "maze", "--parallelism", "0"],
        &["parallelism", "seq"],
    );
    assert_refused(
        &["replay", "seed=1;;", "--demo", "maze"],
        &["recipe part 2", "empty"],
    );
}

#[test]
fn report_refuses_endless_files_quickly() {
    let started = Instant::now();
    assert_refused(&["report", "/dev/zero"], &["/dev/zero", "limit"]);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn report_describes_wrong_schema_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    for (version, says) in [
        ("-1", "-1 is not a version"),
        ("\"1\"", "string"),
        ("null", "null"),
    ] {
        std::fs::write(&path, format!("{{\"schema_version\": {version}}}")).unwrap();
        assert_refused(
            &["report", path.to_str().unwrap()],
            &["schema_version", says],
        );
    }
}

#[test]
fn report_never_prints_escape_sequences_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let out = runq(&[
        "run",
        "steady",
        "--duration",
        "200ms",
        "--quiet",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        stderr(&out)
    );
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    value["scenario"] = serde_json::json!("evil\u{1b}]0;owned\u{7}\u{1b}[2J");
    std::fs::write(&path, value.to_string()).unwrap();
    let out = runq(&["report", path.to_str().unwrap()]);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}",
        stderr(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("evil"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
}

#[test]
fn out_of_range_durations_are_refused_naming_the_flag() {
    for duration in ["1e99s", "0", "-1s", "5 parsecs"] {
        let flag = format!("--duration={duration}");
        assert_refused(&["workload", &flag], &["--duration"]);
        assert_refused(&["run", "steady", "--quiet", &flag], &["--duration"]);
    }
}
