//! `runq compare` and `runq run --repeat`: synthetic report pairs with
//! known differences get the right verdicts and exit codes; a real A/B
//! (`nice_fairness` against the same scenario with its second cgroup
//! niced down) is a regression of that cgroup's throughput; malformed,
//! truncated and mismatched-schema files exit 2 naming the problem.

use std::path::{Path, PathBuf};

use runq::check::{evaluate, CgroupRun, CheckInput, RunFacts, Thresholds, WorkerSetup};
use runq::regress::RepeatReport;
use runq::report::RunReport;
use runq::topology::Topology;
use runq::workload::{ExitShape, WorkerReport};

mod common;
use common::{output_text as text, runq};

/// Relative jitter of each run, fixed so the tests are deterministic.
const JITTER_A: [f64; 8] = [-1.0, 0.5, -0.3, 0.9, 0.1, -0.7, 0.6, -0.2];
/// The same spread, other order and values: noise only.
const JITTER_B: [f64; 8] = [0.3, -0.9, 0.8, -0.4, 0.0, 0.7, -0.6, 0.2];

fn worker(index: usize, units: u64, cpu_ms: f64) -> WorkerReport {
    let mut w = WorkerReport::sentinel(
        1000 + index as i32,
        0,
        index,
        "cpu_spin",
        ExitShape::Exited(0),
    );
    w.work_units = units;
    w.cpu_time_ns = (cpu_ms * 1e6) as u64;
    w.wall_time_ns = 1_000_000_000;
    w.off_cpu_ns = w.wall_time_ns - w.cpu_time_ns;
    w.cpus_used = [index % 2].into_iter().collect();
    w.completed = true;
    w
}

/// A run of two spinners making `rate` units/s each (±2% times `jitter`).
fn synthetic_run(rate: f64, jitter: f64, seed: u64) -> RunReport {
    let units = (rate * (1.0 + 0.02 * jitter)) as u64;
    let cpu = 900.0 * (1.0 + 0.01 * jitter);
    let input = CheckInput {
        cgroups: vec![CgroupRun {
            name: "cg0".into(),
            cpuset: None,
            weight: None,
            workers: vec![worker(0, units, cpu), worker(1, units, cpu)],
            setups: vec![WorkerSetup::default(), WorkerSetup::default()],
            samples: Vec::new(),
            run_ms: 1000.0,
        }],
        num_cpus: 2,
        duration_ms: 1000.0,
    };
    let thresholds = Thresholds::default();
    let evaluation = evaluate(&RunFacts::new(&input), &thresholds);
    let topology = Topology::host().expect("host topology");
    RunReport::new("synthetic", &topology, seed, input, &thresholds, evaluation)
}

fn repeat_file(dir: &Path, name: &str, rate: f64, jitter: &[f64]) -> PathBuf {
    let runs = jitter
        .iter()
        .enumerate()
        .map(|(i, j)| synthetic_run(rate, *j, i as u64))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, RepeatReport::from_runs(runs).to_json()).unwrap();
    path
}

/// Runs compare with --json and returns (exit code, verdict per metric).
fn compare(a: &Path, b: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let json = a.with_file_name(format!(
        "cmp-{}.json",
        b.file_stem().unwrap().to_string_lossy()
    ));
    let mut args = vec!["compare", a.to_str().unwrap(), b.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--json", json.to_str().unwrap()]);
    let out = runq(&args);
    let value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), value, text(&out))
}

fn verdict<'a>(cmp: &'a serde_json::Value, metric: &str) -> &'a str {
    cmp["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == metric))
        .and_then(|m| m["verdict"].as_str())
        .unwrap_or_else(|| panic!("no metric {metric} in {cmp}"))
}

#[test]
fn synthetic_pairs_get_the_right_verdicts_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let a = repeat_file(dir.path(), "a.json", 50_000.0, &JITTER_A);
    let slower = repeat_file(dir.path(), "slower.json", 42_500.0, &JITTER_B);
    let faster = repeat_file(dir.path(), "faster.json", 57_500.0, &JITTER_B);
    let same = repeat_file(dir.path(), "same.json", 50_000.0, &JITTER_B);

    let (code, cmp, out) = compare(&a, &slower, &[]);
    assert_eq!(code, 1, "a 15% drop is a regression\n{out}");
    assert_eq!(verdict(&cmp, "work_units_per_sec"), "regressed", "{out}");
    assert_eq!(
        verdict(&cmp, "cg0/work_units_per_sec"),
        "regressed",
        "{out}"
    );
    assert_eq!(verdict(&cmp, "cpu_share_of_fair"), "unchanged", "{out}");
    assert!(
        out.contains("REGRESSED beyond 5% at alpha 0.01: work_units_per_sec"),
        "{out}"
    );

    let (code, cmp, out) = compare(&a, &faster, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(verdict(&cmp, "work_units_per_sec"), "improved", "{out}");

    let (code, cmp, out) = compare(&a, &same, &[]);
    assert_eq!(code, 0, "{out}");
    for m in cmp["metrics"].as_array().unwrap() {
        assert!(
            m["verdict"] == "unchanged" || m["verdict"] == "context",
            "noise only, yet {m}\n{out}"
        );
    }

    // Within the bound: significant, but not a regression.
    let (code, cmp, out) = compare(&a, &slower, &["--max-regression", "20%"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(verdict(&cmp, "work_units_per_sec"), "unchanged", "{out}");
    assert!(out.contains("significant, within 20%"), "{out}");

    // The bootstrap is seeded: the same inputs give the same intervals.
    let (_, again, _) = compare(&a, &slower, &[]);
    assert_eq!(
        cmp_intervals(&again),
        cmp_intervals(&compare(&a, &slower, &[]).1)
    );
}

fn cmp_intervals(cmp: &serde_json::Value) -> Vec<String> {
    cmp["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["interval"].to_string())
        .collect()
}

#[test]
fn too_few_runs_say_so_instead_of_guessing() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("one-a.json");
    let b = dir.path().join("one-b.json");
    std::fs::write(&a, synthetic_run(50_000.0, 0.0, 1).to_json()).unwrap();
    std::fs::write(&b, synthetic_run(25_000.0, 0.0, 2).to_json()).unwrap();
    let (code, cmp, out) = compare(&a, &b, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        verdict(&cmp, "work_units_per_sec"),
        "not_enough_runs",
        "{out}"
    );
    assert!(out.contains("run at least 5 each"), "{out}");
    // Four a side cannot reach 0.01 either (2/70 = 0.029); five can.
    let a4 = repeat_file(dir.path(), "a4.json", 50_000.0, &JITTER_A[..4]);
    let b4 = repeat_file(dir.path(), "b4.json", 25_000.0, &JITTER_B[..4]);
    assert_eq!(
        verdict(&compare(&a4, &b4, &[]).1, "work_units_per_sec"),
        "not_enough_runs"
    );
    let (code, cmp, out) = compare(&a4, &b4, &["--alpha", "0.05"]);
    assert_eq!(verdict(&cmp, "work_units_per_sec"), "regressed", "{out}");
    assert_eq!(code, 1);
}

#[test]
fn malformed_truncated_and_mismatched_files_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = repeat_file(dir.path(), "good.json", 50_000.0, &JITTER_A[..2]);
    let full = std::fs::read_to_string(&good).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty.json", String::new(), "empty file"),
        (
            "truncated.json",
            full[..full.len() / 2].to_string(),
            "truncated",
        ),
        ("garbage.json", "not json at all".into(), "not JSON"),
        (
            "version.json",
            full.replacen("\"schema_version\": 1", "\"schema_version\": 7", 1),
            "schema_version 7 is not supported",
        ),
        (
            "field.json",
            full.replacen("\"repeat\": 2", "\"repeat\": \"two\"", 1),
            "malformed repeat report at `repeat`",
        ),
        (
            "count.json",
            full.replacen("\"repeat\": 2", "\"repeat\": 3", 1),
            "`repeat` says 3 runs but `runs` holds 2",
        ),
        (
            "kind.json",
            full.replacen("\"kind\": \"repeat\"", "\"kind\": \"bench\"", 1),
            "kind \"bench\" is not a runq report",
        ),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let html = dir.path().join(format!("{name}.html"));
        for args in [
            vec!["compare", good.to_str().unwrap(), path.to_str().unwrap()],
            vec![
                "report",
                "--html",
                html.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        ] {
            let out = runq(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
            assert!(
                stderr.contains(&format!("{}: ", path.display())) && stderr.contains(expected),
                "{name}: expected {expected:?}\n{}",
                text(&out)
            );
            assert!(!stderr.contains("panicked"), "{}", text(&out));
        }
        assert!(!html.exists(), "{name}: no page is written for a bad input");
    }
    let missing = dir.path().join("missing.json");
    let out = runq(&["compare", good.to_str().unwrap(), missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = runq(&[
        "compare",
        good.to_str().unwrap(),
        good.to_str().unwrap(),
        "--alpha",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--alpha"),
        "{}",
        text(&out)
    );
}

/// `nice_fairness` with its second cgroup niced down, as cgroup v2's
/// `cpu.weight.nice` does: the cgroup's weight becomes the nice value's.
/// (Renicing the tasks inside it would change nothing across cgroups: the
/// group scheduler shares CPU between cgroups by their weights.)
fn niced_scenario(dir: &Path) -> PathBuf {
    let out = runq(&["list", "--toml", "nice_fairness"]);
    assert!(out.status.success(), "{}", text(&out));
    let toml = String::from_utf8(out.stdout).unwrap();
    // nice 10 has load weight 110 of nice 0's 1024: cgroup weight 100 * 110 / 1024.
    let niced = toml.replacen(
        "[[cgroups]]\nname = \"nice5\"\n",
        "[[cgroups]]\nname = \"nice5\"\nweight = 11\n",
        1,
    );
    assert_ne!(
        niced, toml,
        "the scenario's second cgroup is named nice5:\n{toml}"
    );
    let path = dir.join("nice_fairness_b.toml");
    std::fs::write(&path, niced).unwrap();
    path
}

#[test]
fn a_real_ab_reports_the_niced_cgroup_as_regressed() {
    let dir = tempfile::tempdir().unwrap();
    let b_toml = niced_scenario(dir.path());
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.json");
    for (scenario, json) in [("nice_fairness", &a), (b_toml.to_str().unwrap(), &b)] {
        let out = runq(&[
            "run",
            scenario,
            "--repeat",
            "5",
            "--duration",
            "1s",
            "--seed",
            "11",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "{}",
            text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("run 5/5 seed 15"), "{}", text(&out));
        assert!(stdout.contains("work_units_per_sec"), "{}", text(&out));
    }
    let (code, cmp, out) = compare(&a, &b, &[]);
    eprintln!("{out}");
    // The niced cgroup's CPU is the affected metric; its throughput may
    // not be called better.
    assert_eq!(verdict(&cmp, "nice5/cpu_util"), "regressed", "{out}");
    assert_ne!(
        verdict(&cmp, "nice5/work_units_per_sec"),
        "improved",
        "{out}"
    );
    assert_eq!(code, 1, "{out}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    assert_eq!(doc["kind"], "repeat");
    assert_eq!(doc["seeds"], serde_json::json!([11, 12, 13, 14, 15]));
    assert_eq!(doc["runs"].as_array().unwrap().len(), 5);
    let spread = doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "work_units_per_sec")
        .unwrap();
    for key in ["median", "q1", "q3", "min", "max", "cv"] {
        assert!(spread["summary"][key].is_number(), "{key} in {spread}");
    }
}
