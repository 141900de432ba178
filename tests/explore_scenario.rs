//! Exploring the randomized scenarios with the real binary: real cgroups,
//! real workers, forked timelines; then replaying recipes on them.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

mod common;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");

/// The tests of this file run one at a time, so each can check that its
/// own runs left no process and no cgroup behind.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runq(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(RUNQ).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `runq-<pid>` cgroup roots at any depth of every mounted hierarchy.
fn run_roots() -> BTreeSet<String> {
    common::runq_roots(|_| true)
        .iter()
        .map(|r| r.display().to_string())
        .collect()
}

fn pid_alive(root: &str) -> bool {
    let name = root.rsplit('/').next().unwrap_or("");
    runq::cgroup::root_owner_pid(name).is_some_and(runq::cgroup::pid_alive)
}

/// Processes running this very runq binary.
fn runq_processes() -> Vec<i32> {
    let me = std::fs::canonicalize(RUNQ).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|exe| exe == me)
                .unwrap_or(false)
        })
        .collect()
}

fn assert_nothing_left(before: &BTreeSet<String>) {
    let leaked: Vec<String> = run_roots()
        .difference(before)
        .filter(|r| !pid_alive(r))
        .cloned()
        .collect();
    assert!(leaked.is_empty(), "cgroup roots left behind: {leaked:?}");
    assert!(
        runq_processes().is_empty(),
        "runq processes left: {:?}",
        runq_processes()
    );
}

#[test]
fn exploring_cpusets_forks_at_step_boundaries_and_cleans_up() {
    let _serial = serial();
    let before = run_roots();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("explore.json");
    let json_arg = json.to_str().unwrap();
    let (code, stdout, stderr) = runq(&[
        "explore",
        "explore_cpusets",
        "--seed",
        "1",
        "--seeds",
        "2",
        "--energy",
        "5",
        "--timelines-per-split",
        "2",
        "--json",
        json_arg,
    ]);
    // Seed 1 plans the same timelines every time, and a healthy kernel
    // keeps every `always`: nothing is found.
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stdout.contains("BUG:"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &report["report"];
    let timelines = r["timelines"].as_u64().unwrap();
    assert!(timelines <= 5);
    assert_eq!(timelines, 5 - r["energy_left"].as_u64().unwrap());
    assert!(r["fork_points"].as_u64().unwrap() >= 1, "{stdout}");
    assert!(timelines > r["roots"].as_u64().unwrap(), "{stdout}");
    assert_eq!(r["crashes"].as_u64(), Some(0), "{stdout}\n{stderr}");
    // Seed 1's plans make these two `sometimes` hold and never the other
    // two; the `always` ones were checked at every step and held.
    assert_fired(
        r,
        &["two cgroups share one CPU", "three cgroups run at once"],
        &[
            "every step passes cpuset_isolation",
            "every step passes workers_completed",
        ],
    );
    assert_eq!(
        r["never_fired"],
        serde_json::json!([
            "a lone cgroup holds one CPU with 3 workers",
            "workers crowded onto one CPU"
        ]),
        "{stdout}"
    );
    assert!(stdout.contains("assertions:"));
    assert_nothing_left(&before);
}

/// Checks an exploration report's assertions: each of `sometimes` held at
/// least once, each of `always` was checked and never failed, and no
/// `always` failed anywhere.
fn assert_fired(report: &serde_json::Value, sometimes: &[&str], always: &[&str]) {
    let assertions = report["assertions"].as_array().unwrap();
    let find = |name: &str| {
        assertions
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no assertion {name:?} in {assertions:#?}"))
    };
    for name in sometimes {
        let a = find(name);
        assert!(a["passes"].as_u64().unwrap() >= 1, "{name} never held: {a}");
    }
    for name in always {
        let a = find(name);
        assert_eq!(a["kind"], "always", "{a}");
        assert!(
            a["checks"].as_u64().unwrap() >= 1,
            "{name} never checked: {a}"
        );
        assert_eq!(a["failures"], 0, "{a}");
    }
    assert_eq!(report["always_failed"], serde_json::json!([]), "{report}");
}

#[test]
fn exploring_policies_in_a_window_of_two() {
    let _serial = serial();
    let before = run_roots();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("explore.json");
    let (code, stdout, stderr) = runq(&[
        "explore",
        "explore_policies",
        "--seed",
        "1",
        "--seeds",
        "1",
        "--energy",
        "4",
        "--parallelism",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("window of 2"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &report["report"];
    assert_eq!(r["window"], 2, "{stdout}");
    // The window was used and held: a fork point's two children ran at once,
    // never more. How many fork points the root finds depends on which
    // checks the CPU time let it judge, so the energy may not all be spent;
    // what was spent is exactly the timelines started, within the budget.
    assert_eq!(r["max_live_children"], 2, "{stdout}");
    let timelines = r["timelines"].as_u64().unwrap();
    assert!(timelines >= r["roots"].as_u64().unwrap() + 2, "{stdout}");
    assert!(timelines <= 4, "{stdout}");
    assert_eq!(
        timelines + r["energy_left"].as_u64().unwrap(),
        4,
        "{stdout}"
    );
    // Seed 1 plans all four situations; whether a weight `always` is judged
    // depends on the CPU the workers got (a loaded host may leave them too
    // little), but none may fail.
    assert_fired(
        r,
        &[
            "SCHED_IDLE beside a normal worker on one CPU",
            "heavy and light cgroups share a CPU",
            "nice 19 beside nice 0 on one CPU",
            "three cgroups on one CPU",
        ],
        &[],
    );
    assert_eq!(r["never_fired"], serde_json::json!([]), "{stdout}");
    assert_nothing_left(&before);
}

fn plan_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.starts_with("step "))
        .map(str::to_string)
        .collect()
}

/// Draw count printed for a step: "step N (after D draws): ...".
fn draws_before(line: &str) -> u64 {
    line.split("(after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[test]
fn replay_reruns_the_same_plan_and_a_fork_changes_only_what_follows() {
    let _serial = serial();
    let before = run_roots();
    // A healthy kernel keeps every `always` on these plans: exit 0 each time.
    let (code, first, err) = runq(&["replay", "seed=5", "explore_cpusets"]);
    assert_eq!(code, 0, "{first}\n{err}");
    let (code, second, err) = runq(&["replay", "seed=5", "explore_cpusets"]);
    assert_eq!(code, 0, "{second}\n{err}");
    let plan = plan_lines(&first);
    assert_eq!(plan.len(), 4, "{first}");
    assert_eq!(plan, plan_lines(&second));

    // Fork where step 2 is planned: steps 0-1 stay, the rest changes.
    let at = draws_before(&plan[2]);
    let recipe = format!("seed=5;fork={at}@0x00000000deadbeef");
    let (code, forked, err) = runq(&["replay", &recipe, "explore_cpusets"]);
    assert_eq!(code, 0, "{forked}\n{err}");
    assert!(forked.contains("forks applied: 1 of 1"), "{forked}");
    let forked_plan = plan_lines(&forked);
    assert_eq!(forked_plan[..2], plan[..2]);
    assert_ne!(forked_plan[2..], plan[2..]);
    assert_nothing_left(&before);
}

#[test]
fn unknown_scenario_is_bad_input_listing_the_explorable_ones() {
    let _serial = serial();
    let (code, _, stderr) = runq(&["explore", "steady"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("explore_cpusets") && stderr.contains("explore_policies"));
    let (code, _, stderr) = runq(&["replay", "seed=1", "nope"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("nope") && stderr.contains("explore_cpusets"),
        "{stderr}"
    );
}
