//! The example crate (examples/scx-tests: scx_bpfland over the `small`
//! gauntlet with two profiles) driven as its users drive it:
//!
//! * nextest's `--partition count:1/2` and `count:2/2` list every case
//!   exactly once between them, and a real run of two cases through the two
//!   partitions runs each once (one of them the expected failure);
//! * `cargo test` runs the gauntlet with shared boots under a budget that
//!   covers every topology and every profile.
//!
//! They need cargo-nextest, qemu, a cached sched_ext kernel and
//! scx_bpfland in runq's scheduler cache; without them they say so and
//! skip, under `CI=true` they fail (CI provides them).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says loudly why a test cannot run here; under CI that is a failure.
fn missing(what: &str) {
    assert!(!ci(), "CI=true but {what}");
    eprintln!("SKIPPED: {what}");
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(workspace())
        .args(args)
        .env_remove("RUNQ_BUDGET")
        .env_remove("RUNQ_SHARED_BOOT");
    command
}

/// `cargo test --release -p scx-tests -- ARGS`: the example's harness.
fn example_test(harness_args: &[&str]) -> Command {
    let mut command = cargo(&["test", "--release", "-p", "scx-tests", "--"]);
    command.args(harness_args);
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn have_nextest() -> bool {
    cargo(&["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether this machine has what the example's VM cases need; prints why
/// not otherwise.
fn can_boot_the_example() -> bool {
    let output = example_test(&["--list", "--ignored"])
        .env_remove("CI")
        .output()
        .expect("running cargo");
    assert!(output.status.success(), "{}", text(&output));
    // libtest's list lines are `NAME: test`; cargo adds summaries around them.
    let ignored = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.ends_with(": test"))
        .count();
    if ignored == 0 {
        return true;
    }
    missing(&format!(
        "the example's cases cannot boot here (scheduler, kernel or qemu missing):\n{}",
        String::from_utf8_lossy(&output.stderr)
    ));
    false
}

/// `cargo nextest list` names (`binary test`), with more arguments (a
/// partition, a filter expression).
fn nextest_list(more: &[&str]) -> Vec<String> {
    let mut args = vec![
        "nextest",
        "list",
        "--release",
        "-p",
        "scx-tests",
        "--run-ignored",
        "all",
        "--message-format",
        "oneline",
    ];
    args.extend(more);
    let output = cargo(&args).output().expect("running cargo nextest");
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn nextest_partitions_list_every_case_exactly_once() {
    if !have_nextest() {
        return missing("cargo-nextest is not installed (cargo install --locked cargo-nextest)");
    }
    let all = nextest_list(&[]);
    // 7 tests x 4 topologies x 2 profiles.
    assert_eq!(all.len(), 56, "{all:#?}");
    let first = nextest_list(&["--partition", "count:1/2"]);
    let second = nextest_list(&["--partition", "count:2/2"]);
    let first_set: BTreeSet<&String> = first.iter().collect();
    let second_set: BTreeSet<&String> = second.iter().collect();
    assert!(
        first_set.is_disjoint(&second_set),
        "{first:#?}\n{second:#?}"
    );
    let union: BTreeSet<&String> = first_set.union(&second_set).copied().collect();
    let all_set: BTreeSet<&String> = all.iter().collect();
    assert_eq!(union, all_set);
    assert_eq!(first.len() + second.len(), all.len());
    // -E selects a topology by name.
    let numa = nextest_list(&["-E", "test(/::2n1l2c1t::/)"]);
    assert_eq!(numa.len(), 14, "{numa:#?}");
    assert!(numa.iter().all(|n| n.contains("::2n1l2c1t::")));
}

#[test]
fn two_partitions_run_each_selected_case_once_including_the_expected_failure() {
    if !have_nextest() {
        return missing("cargo-nextest is not installed (cargo install --locked cargo-nextest)");
    }
    if !can_boot_the_example() {
        return;
    }
    let cases = [
        "cpu_hogs_share_evenly::1n1l2c1t::default",
        "forced_ejection::1n1l2c1t::lowlat",
    ];
    let filter = cases
        .iter()
        .map(|c| format!("test(={c})"))
        .collect::<Vec<_>>()
        .join(" | ");
    let mut ran: Vec<String> = Vec::new();
    for partition in ["count:1/2", "count:2/2"] {
        let output = cargo(&[
            "nextest",
            "run",
            "--release",
            "-p",
            "scx-tests",
            "--partition",
            partition,
            "-E",
            &filter,
            "--no-fail-fast",
        ])
        .output()
        .expect("running cargo nextest");
        let all = text(&output);
        // A case that ran either passed, or failed its checks (scx_bpfland
        // under TCG may be judged unfair): both count as run; a failure
        // must be a judged run and fail the partition.
        // (nextest repeats a failure's line in its final summary)
        let mut ran_here: BTreeSet<&str> = BTreeSet::new();
        let mut failed = false;
        for line in all.lines().map(str::trim_start) {
            let outcome = ["PASS [", "FAIL ["]
                .into_iter()
                .find(|o| line.starts_with(*o));
            let case = cases.iter().find(|c| line.ends_with(*c));
            if let (Some(outcome), Some(case)) = (outcome, case) {
                ran_here.insert(case);
                failed |= outcome == "FAIL [";
            }
        }
        ran.extend(ran_here.iter().map(|c| c.to_string()));
        if failed {
            assert!(all.contains("checks failed:"), "{partition}:\n{all}");
        }
        assert_eq!(output.status.success(), !failed, "{partition}:\n{all}");
    }
    ran.sort();
    assert_eq!(
        ran,
        cases.to_vec(),
        "each case runs in exactly one partition"
    );
}

#[test]
fn gauntlet_under_cargo_test_with_shared_boots_and_a_budget() {
    if !can_boot_the_example() {
        return;
    }
    let output = example_test(&["--test-threads=1"])
        .env("RUNQ_SHARED_BOOT", "1")
        .env("RUNQ_BUDGET", BUDGET)
        .output()
        .expect("running cargo test");
    let all = text(&output);
    let ran = outcomes(&all);
    let passed: Vec<&str> = ran.iter().filter(|(_, ok)| *ok).map(|(n, _)| *n).collect();
    let failed: Vec<&str> = ran.iter().filter(|(_, ok)| !*ok).map(|(n, _)| *n).collect();
    let topologies: BTreeSet<&str> = ran
        .iter()
        .filter_map(|(n, _)| n.split("::").nth(1))
        .collect();
    let profiles: BTreeSet<&str> = ran
        .iter()
        .filter_map(|(n, _)| n.split("::").nth(2))
        .collect();
    assert_eq!(topologies.len(), 4, "every topology ran:\n{all}");
    assert_eq!(profiles.len(), 2, "every profile ran:\n{all}");
    assert!(
        all.contains("RUNQ_BUDGET="),
        "the budget's selection is printed:\n{all}"
    );
    assert!(all.contains("shared boot(s)"), "{all}");
    assert!(
        all.contains("ignored (RUNQ_BUDGET="),
        "skipped cases are ignored:\n{all}"
    );
    assert!(
        passed.iter().any(|n| n.starts_with("forced_ejection::")),
        "the expected failure ran and counted as a pass:\n{all}"
    );
    // The table at the end: a row per test, the expected failure as xfail,
    // the budget's leftovers as skip.
    assert!(all.contains("runq: the gauntlet ("), "{all}");
    let row = |test: &str| {
        all.lines()
            .find(|l| l.trim_start().starts_with(&format!("{test} ")))
            .unwrap_or_else(|| panic!("no row for {test}:\n{all}"))
            .to_string()
    };
    assert!(row("forced_ejection").contains("xfail"), "{all}");
    assert!(row("cpu_hogs_share_evenly").contains("skip"), "{all}");
    // The scheduler's own verdicts are not runq's to assert (scx_bpfland
    // under TCG on two host cores can leave a hog short on a NUMA
    // topology): a failing case must be a judged run, told in full, never
    // a harness error; and the run's exit status must say so.
    for name in &failed {
        let section = failure_section(&all, name);
        assert!(
            section.contains("checks failed:") || section.contains("FAIL "),
            "{name} failed without a judged run:\n{section}"
        );
        assert!(
            section.contains(&format!("-- --exact '{name}'")),
            "{name}'s failure names its rerun command:\n{section}"
        );
    }
    assert_eq!(output.status.success(), failed.is_empty(), "{all}");
    if !failed.is_empty() {
        eprintln!(
            "NOTE: scx_bpfland failed {} of {} case(s) by its checks: {}",
            failed.len(),
            ran.len(),
            failed.join(", ")
        );
    }
}

/// `test NAME ... ok` / `... FAILED` lines of a libtest run.
fn outcomes(all: &str) -> Vec<(&str, bool)> {
    all.lines()
        .filter_map(|l| l.strip_prefix("test "))
        .filter_map(|l| {
            l.strip_suffix(" ... ok")
                .map(|n| (n.trim(), true))
                .or_else(|| l.strip_suffix(" ... FAILED").map(|n| (n.trim(), false)))
        })
        .collect()
}

/// The text libtest prints for a failed case, up to the next one.
fn failure_section<'a>(all: &'a str, name: &str) -> &'a str {
    let header = format!("---- {name} ----");
    let Some(start) = all.find(&header) else {
        return "";
    };
    let rest = &all[start + header.len()..];
    let end = rest
        .find("\n---- ")
        .or_else(|| rest.find("\nfailures:"))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Enough for one boot per (topology, profile) with a few cases each under
/// TCG; with KVM it covers more cases.
const BUDGET: &str = "5m";
