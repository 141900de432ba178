//! Exploring the randomized scenarios with the real binary: real cgroups,
//! real workers, forked timelines; then replaying recipes on them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

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

/// `runq-<pid>` cgroup roots under every mounted hierarchy.
fn run_roots() -> BTreeSet<String> {
    let mut roots = BTreeSet::new();
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return roots;
    };
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if !line.contains(" - cgroup") || fields.len() < 5 {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(fields[4]) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("runq-") {
                    roots.insert(entry.path().display().to_string());
                }
            }
        }
    }
    roots
}

fn pid_alive(root: &str) -> bool {
    let name = root.rsplit("runq-").next().unwrap_or("");
    let pid = name.split('-').next().unwrap_or("");
    Path::new(&format!("/proc/{pid}")).exists()
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
        "--seeds",
        "2",
        "--energy",
        "5",
        "--timelines-per-split",
        "2",
        "--json",
        json_arg,
    ]);
    // 1 = an `always` failed on this kernel: then a recipe must be printed.
    assert!(code == 0 || code == 1, "{stdout}\n{stderr}");
    if code == 1 {
        assert!(
            stdout.contains("BUG:") && stdout.contains("runq replay 'seed="),
            "{stdout}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &report["report"];
    let timelines = r["timelines"].as_u64().unwrap();
    assert!(timelines <= 5);
    assert_eq!(timelines, 5 - r["energy_left"].as_u64().unwrap());
    assert!(r["fork_points"].as_u64().unwrap() >= 1, "{stdout}");
    assert!(timelines > r["roots"].as_u64().unwrap(), "{stdout}");
    assert_eq!(r["crashes"].as_u64(), Some(0), "{stdout}\n{stderr}");
    let names: Vec<&str> = r["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"every step passes cpuset_isolation"));
    assert!(names.contains(&"two cgroups share one CPU"));
    assert!(stdout.contains("assertions:"));
    assert_nothing_left(&before);
}

#[test]
fn exploring_policies_in_a_window_of_two() {
    let _serial = serial();
    let before = run_roots();
    let (code, stdout, stderr) = runq(&[
        "explore",
        "explore_policies",
        "--seeds",
        "1",
        "--energy",
        "4",
        "--parallelism",
        "2",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("window of 2"), "{stdout}");
    assert!(
        stdout.contains("on one CPU the worker with 3x the weight gets more CPU")
            || stdout.contains("SCHED_IDLE"),
        "{stdout}"
    );
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
    let (code, first, err) = runq(&["replay", "seed=5", "explore_cpusets"]);
    assert!(code == 0 || code == 1, "{first}\n{err}");
    let (_, second, _) = runq(&["replay", "seed=5", "explore_cpusets"]);
    let plan = plan_lines(&first);
    assert_eq!(plan.len(), 4, "{first}");
    assert_eq!(plan, plan_lines(&second));

    // Fork where step 2 is planned: steps 0-1 stay, the rest changes.
    let at = draws_before(&plan[2]);
    let recipe = format!("seed=5;fork={at}@0x00000000deadbeef");
    let (code, forked, err) = runq(&["replay", &recipe, "explore_cpusets"]);
    assert!(code == 0 || code == 1, "{forked}\n{err}");
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
}
