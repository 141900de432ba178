//! `#[runq::test]`: compile errors for bad attributes (trybuild), the names
//! the expansion gives, host-mode runs without a VM, the skip of a
//! topology larger than the host, how a failure is told, and one case run
//! inside a booted guest. The cases live in the fixture binary
//! tests/macro_cases.rs, driven here through libtest's command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

#[test]
fn bad_attributes_are_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}

/// Builds the fixture (a `test = false` target) with the profile this test
/// was built with and returns its path.
fn fixture() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let release = std::env::current_exe()
            .unwrap()
            .components()
            .any(|c| c.as_os_str() == "release");
        let mut command = Command::new(env!("CARGO"));
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "test",
            "--test",
            "macro_cases",
            "--no-run",
            "--message-format=json",
        ]);
        if release {
            command.arg("--release");
        }
        let output = command.output().expect("running cargo");
        assert!(
            output.status.success(),
            "building the fixture failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| v["target"]["name"] == "macro_cases")
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("cargo named the fixture's executable")
    })
}

/// Runs the fixture with `args`; `ci` sets or clears `CI`.
fn run_fixture(args: &[&str], ci: bool) -> Output {
    let mut command = Command::new(fixture());
    command.args(args).env_remove("RUNQ_BUDGET");
    if ci {
        command.env("CI", "true");
    } else {
        command.env_remove("CI");
    }
    command.output().expect("running the fixture")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn listed(args: &[&str]) -> Vec<String> {
    let output = run_fixture(args, false);
    assert!(output.status.success(), "{}", text(&output));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

#[test]
fn one_test_per_topology_and_profile_named_fn_topology_profile() {
    let names = listed(&["--list"]);
    let mut expected: Vec<String> = Vec::new();
    let small = runq::test::PRESETS
        .iter()
        .find(|(name, _)| *name == "small")
        .unwrap()
        .1;
    for topology in small {
        for profile in ["default", "lowlat"] {
            expected.push(format!("listed_only::{topology}::{profile}"));
        }
    }
    for name in [
        "host_asserts::1n1l1c1t::default",
        "host_fails::1n1l1c1t::default",
        "host_steady::1n1l1c1t::default",
        "host_too_large::4n2l4c2t::default",
        "vm_topology::1n2l1c1t::default",
        "vm_a_leaves_state::1n2l1c1t::default",
        "vm_b_finds_a_clean_guest::1n2l1c1t::default",
    ] {
        expected.push(name.to_string());
    }
    for (preset, topologies) in runq::test::PRESETS {
        for topology in *topologies {
            expected.push(format!("preset_{preset}::{topology}::default"));
        }
    }
    expected.sort();
    assert_eq!(names, expected);
    // A filter selects by topology or profile like any libtest filter.
    let lowlat = listed(&["--list", "::lowlat"]);
    assert_eq!(lowlat.len(), 4, "{lowlat:?}");
    assert!(lowlat.iter().all(|n| n.ends_with("::lowlat")));
    // The too-large host case is listed as ignored, so nextest skips it.
    assert!(
        listed(&["--list", "--ignored"]).contains(&"host_too_large::4n2l4c2t::default".to_string())
    );
}

#[test]
fn host_case_runs_on_the_host_without_a_vm() {
    let output = run_fixture(&["--exact", "host_steady::1n1l1c1t::default"], false);
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(all.contains("1 passed; 0 failed"), "{all}");
    assert!(!all.contains("boot(s)"), "a host case booted a VM:\n{all}");
    let output = run_fixture(&["--exact", "host_asserts::1n1l1c1t::default"], false);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn topology_larger_than_the_host_is_skipped_with_its_reason() {
    for ci in [false, true] {
        let output = run_fixture(&["--exact", "host_too_large::4n2l4c2t::default"], ci);
        let all = text(&output);
        assert!(output.status.success(), "{all}");
        assert!(all.contains("0 passed; 0 failed; 1 ignored"), "{all}");
        assert!(
            all.contains("ignored (topology 4n2l4c2t is larger than this host"),
            "{all}"
        );
        assert!(all.contains("4 NUMA nodes (it has"), "{all}");
        if ci {
            assert!(all.contains("SKIPPED under CI=true"), "{all}");
        }
    }
}

#[test]
fn a_failing_case_prints_its_message_and_the_rerun_command() {
    let output = run_fixture(&["--exact", "host_fails::1n1l1c1t::default"], false);
    let all = text(&output);
    assert!(!output.status.success(), "{all}");
    assert!(
        all.contains("host_fails::1n1l1c1t::default FAILED"),
        "{all}"
    );
    assert!(all.contains("this body fails on purpose"), "{all}");
    assert!(
        all.contains("-- --exact 'host_fails::1n1l1c1t::default'")
            && all.contains("--test macro_cases"),
        "{all}"
    );
}

#[test]
fn vm_case_runs_its_body_inside_the_guest() {
    let output = run_fixture(&["--exact", "vm_topology::1n2l1c1t::default"], false);
    let all = text(&output);
    if all.contains("1 ignored") && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("SKIPPED: this machine cannot boot a VM case:\n{all}");
        return;
    }
    assert!(output.status.success(), "{all}");
    assert!(all.contains("1 passed; 0 failed"), "{all}");
    assert!(all.contains("1 VM case(s) in 1 boot(s)"), "{all}");
}

#[test]
fn shared_boot_runs_a_group_in_one_guest_reset_between_cases() {
    let mut command = Command::new(fixture());
    command
        .args(["vm_", "--test-threads=1"])
        .env("RUNQ_SHARED_BOOT", "1")
        .env_remove("CI")
        .env_remove("RUNQ_BUDGET");
    let output = command.output().expect("running the fixture");
    let all = text(&output);
    if all.contains("ignored (") && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("SKIPPED: this machine cannot boot a VM case:\n{all}");
        return;
    }
    assert!(output.status.success(), "{all}");
    assert!(all.contains("3 passed; 0 failed"), "{all}");
    assert!(all.contains("3 VM case(s) in 1 boot(s)"), "{all}");
    // vm_a passed, so it left a process, a cgroup and a file; vm_b passed,
    // so the reset between them removed all three.
}
