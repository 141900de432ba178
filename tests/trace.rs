//! `runq trace` end to end: C programs (compiled here with gcc) that fork,
//! vfork+exec, spawn threads, exec from a thread, get signals, crash, exit
//! non-zero and leave grandchildren behind, traced by the real runq binary.
//! Each test checks the process tree, the exit status and the coverage, and
//! that no traced process is left stopped or alive.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");

fn fixture_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/trace")
        .join(name)
}

/// Compiles a C fixture with gcc into `dir` (run there, so --coverage
/// builds put their .gcno/.gcda files there too).
fn compile_c(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new("gcc")
        .current_dir(dir)
        .args(flags)
        .arg("-pthread")
        .arg("-o")
        .arg(name)
        .arg(fixture_source(&format!("{name}.c")))
        .status()
        .unwrap_or_else(|e| panic!("cannot run gcc ({e}): install the Debian package gcc"));
    assert!(status.success(), "gcc failed on {name}.c");
    out
}

struct Traced {
    code: i32,
    stderr: String,
    json: Value,
    lcov: Option<String>,
}

/// Runs `runq trace <flags> --json F [--lcov L] -- cmd...` and parses F.
fn trace(dir: &Path, flags: &[&str], cmd: &[&str]) -> Traced {
    let json_path = dir.join("trace.json");
    let lcov_path = dir.join("trace.lcov");
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_file(&lcov_path);
    let mut command = Command::new(RUNQ);
    command
        .arg("trace")
        .args(flags)
        .arg("--json")
        .arg(&json_path);
    if flags.contains(&"--coverage") {
        command.arg("--lcov").arg(&lcov_path);
    }
    command.arg("--").args(cmd).stdin(Stdio::null());
    let output = output_within(command, Duration::from_secs(60));
    finish(output, &json_path, &lcov_path)
}

/// Runs `command` to completion, failing the test (after killing runq, whose
/// tracees then die by PTRACE_O_EXITKILL) if it takes longer than `limit`.
fn output_within(command: Command, limit: Duration) -> Output {
    common::output_within(command, limit, "runq")
}

fn finish(output: Output, json_path: &Path, lcov_path: &Path) -> Traced {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let text = std::fs::read_to_string(json_path)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    let json: Value = serde_json::from_str(&text).unwrap();
    let traced = Traced {
        code: output.status.code().expect("runq itself was killed"),
        stderr,
        json,
        lcov: std::fs::read_to_string(lcov_path).ok(),
    };
    assert_tree_gone(&traced.json);
    traced
}

fn processes(json: &Value) -> &Vec<Value> {
    json["processes"].as_array().unwrap()
}

/// The process records whose parent is `pid`.
fn children_of(json: &Value, pid: i64) -> Vec<&Value> {
    processes(json)
        .iter()
        .filter(|p| p["parent"].as_i64() == Some(pid))
        .collect()
}

fn root(json: &Value) -> &Value {
    &processes(json)[0]
}

fn exited(process: &Value) -> Option<i64> {
    (process["status"]["type"] == "exited").then(|| process["status"]["code"].as_i64().unwrap())
}

fn signaled(process: &Value) -> Option<String> {
    (process["status"]["type"] == "signaled")
        .then(|| process["status"]["signal"].as_str().unwrap().to_string())
}

/// No process of the trace may still run or sit stopped (a zombie waiting
/// for an untraced parent that exited is fine).
fn assert_tree_gone(json: &Value) {
    for process in processes(json) {
        if process["detached"].is_string() {
            continue;
        }
        let pid = process["pid"].as_i64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim().chars().next())
                })
                .flatten();
            match state {
                None | Some('Z') | Some('X') => break,
                Some(state) => {
                    // A reused pid is someone else's process.
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let ours = process["command"][0]
                        .as_str()
                        .is_some_and(|c| cmdline.starts_with(c.as_bytes()));
                    if !ours {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "traced pid {pid} still alive in state {state} after runq returned"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Line numbers of `source` that carry `marker` (e.g. "/* HIT */").
fn marked_lines(source: &Path, marker: &str) -> Vec<u32> {
    std::fs::read_to_string(source)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .map(|(i, _)| i as u32 + 1)
        .collect()
}

/// lcov DA records of one source file: line -> hit.
fn lcov_lines(lcov: &str, source: &Path) -> BTreeMap<u32, bool> {
    let mut lines = BTreeMap::new();
    let mut in_file = false;
    for line in lcov.lines() {
        if let Some(path) = line.strip_prefix("SF:") {
            in_file = Path::new(path) == source;
        } else if let Some(da) = line.strip_prefix("DA:").filter(|_| in_file) {
            let (n, hits) = da.split_once(',').unwrap();
            lines.insert(n.parse().unwrap(), hits != "0");
        }
    }
    lines
}

/// lcov FNDA records of one source file: function name -> ran.
fn lcov_functions(lcov: &str, source: &Path) -> BTreeMap<String, bool> {
    let mut functions = BTreeMap::new();
    let mut in_file = false;
    for line in lcov.lines() {
        if let Some(path) = line.strip_prefix("SF:") {
            in_file = Path::new(path) == source;
        } else if let Some(fnda) = line.strip_prefix("FNDA:").filter(|_| in_file) {
            let (hits, name) = fnda.split_once(',').unwrap();
            functions.insert(name.to_string(), hits != "0");
        }
    }
    functions
}

/// Every HIT-marked line is hit, every MISS-marked line is instrumented and
/// not hit.
fn assert_markers(lcov: &str, source: &Path) {
    let lines = lcov_lines(lcov, source);
    assert!(
        !lines.is_empty(),
        "no coverage for {}:\n{lcov}",
        source.display()
    );
    for n in marked_lines(source, "HIT") {
        assert_eq!(
            lines.get(&n),
            Some(&true),
            "{}:{n} should be hit",
            source.display()
        );
    }
    for n in marked_lines(source, "MISS") {
        assert_eq!(
            lines.get(&n),
            Some(&false),
            "{}:{n} should be missed",
            source.display()
        );
    }
}

#[test]
fn fork_tree_with_grandchild_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "forks", &["-g", "-O0"]);
    let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap(), "9"]);
    assert_eq!(t.code, 9, "{}", t.stderr);
    let root_pid = root(&t.json)["pid"].as_i64().unwrap();
    assert_eq!(exited(root(&t.json)), Some(9));
    let kids = children_of(&t.json, root_pid);
    assert_eq!(kids.len(), 2, "{}", t.stderr);
    assert!(kids.iter().all(|k| k["origin"] == "fork"));
    let codes: BTreeSet<i64> = kids.iter().filter_map(|k| exited(k)).collect();
    assert_eq!(codes, BTreeSet::from([3, 6]));
    let a = kids.iter().find(|k| exited(k) == Some(3)).unwrap();
    let grandkids = children_of(&t.json, a["pid"].as_i64().unwrap());
    assert_eq!(grandkids.len(), 1);
    assert_eq!(exited(grandkids[0]), Some(6));
    assert_eq!(processes(&t.json).len(), 4);
    // The timeline has one fork event per child and an exit per process.
    let events = t.json["events"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["kind"] == "fork").count(), 3);
    assert_eq!(events.iter().filter(|e| e["kind"] == "exit").count(), 4);
    assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("forks.c"));
    let functions = lcov_functions(t.lcov.as_deref().unwrap(), &fixture_source("forks.c"));
    let expected = [
        ("child_work", true),
        ("grandchild", true),
        ("never_called", false),
        ("main", true),
    ];
    let expected: BTreeMap<String, bool> =
        expected.iter().map(|(n, r)| (n.to_string(), *r)).collect();
    assert_eq!(functions, expected);
    assert_eq!(t.json["coverage"]["functions_hit"], 3);
    assert!(t.stderr.contains("process tree"), "{}", t.stderr);
    assert!(t.stderr.contains("(fork)"), "{}", t.stderr);
}

#[test]
fn vfork_exec_followed_covers_both_programs() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "vfork_exec", &["-g", "-O0"]);
    let leaf = compile_c(dir.path(), "leaf", &["-g", "-O0"]);
    let t = trace(
        dir.path(),
        &["--coverage", "--follow-exec"],
        &[prog.to_str().unwrap(), leaf.to_str().unwrap(), "x"],
    );
    assert_eq!(t.code, 14, "{}", t.stderr);
    let root_pid = root(&t.json)["pid"].as_i64().unwrap();
    let kids = children_of(&t.json, root_pid);
    assert_eq!(kids.len(), 1);
    let child = kids[0];
    assert_eq!(child["origin"], "vfork");
    assert_eq!(exited(child), Some(4));
    assert_eq!(child["execd"], true);
    assert_eq!(child["execs"][0]["exe"], leaf.to_str().unwrap());
    let lcov = t.lcov.as_deref().unwrap();
    assert_markers(lcov, &fixture_source("leaf.c"));
    assert_markers(lcov, &fixture_source("vfork_exec.c"));
    let events = t.json["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["kind"] == "vfork"));
    assert!(events
        .iter()
        .any(|e| e["kind"] == "exec" && e["pid"] == child["pid"]));
}

/// A program that execs itself again: the second image gets breakpoints
/// only on lines the first did not run.
#[test]
fn re_exec_of_a_covered_program_skips_hit_lines() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "vfork_exec", &["-g", "-O0"]);
    let leaf = compile_c(dir.path(), "leaf", &["-g", "-O0"]);
    let p = prog.to_str().unwrap();
    let t = trace(
        dir.path(),
        &["--coverage", "--follow-exec"],
        &[p, p, leaf.to_str().unwrap()],
    );
    assert_eq!(t.code, 10 + 10 + 4, "{}", t.stderr);
    assert_eq!(processes(&t.json).len(), 3);
    let counts: Vec<u64> = t.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "breakpoints" && e["exe"] == p)
        .map(|e| e["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts[1] < counts[0], "{counts:?}");
    assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("vfork_exec.c"));
    assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("leaf.c"));
}

#[test]
fn exec_not_followed_detaches_and_skips_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "vfork_exec", &["-g", "-O0"]);
    let leaf = compile_c(dir.path(), "leaf", &["-g", "-O0"]);
    let t = trace(
        dir.path(),
        &["--coverage"],
        &[prog.to_str().unwrap(), leaf.to_str().unwrap()],
    );
    assert_eq!(t.code, 14, "{}", t.stderr);
    let child = children_of(&t.json, root(&t.json)["pid"].as_i64().unwrap())[0];
    assert!(child["detached"].as_str().unwrap().contains("exec"));
    let lcov = t.lcov.unwrap();
    assert!(lcov_lines(&lcov, &fixture_source("leaf.c")).is_empty());
    assert_markers(&lcov, &fixture_source("vfork_exec.c"));
}

#[test]
fn threads_are_followed_and_covered() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "threads", &["-g", "-O0"]);
    let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap()]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert_eq!(processes(&t.json).len(), 1);
    assert_eq!(root(&t.json)["threads_total"], 6);
    let events = t.json["events"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["kind"] == "thread").count(), 5);
    assert_eq!(
        events.iter().filter(|e| e["kind"] == "thread_exit").count(),
        5
    );
    assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("threads.c"));
}

#[test]
fn threads_and_forks_at_o2_are_covered() {
    let dir = tempfile::tempdir().unwrap();
    let threads = compile_c(dir.path(), "threads", &["-g", "-O2"]);
    let t = trace(dir.path(), &["--coverage"], &[threads.to_str().unwrap()]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    let lines = lcov_lines(t.lcov.as_deref().unwrap(), &fixture_source("threads.c"));
    let hit: Vec<u32> = lines.iter().filter(|(_, h)| **h).map(|(l, _)| *l).collect();
    for n in marked_lines(&fixture_source("threads.c"), "HIT") {
        assert!(hit.contains(&n), "threads.c:{n} not hit at -O2: {lines:?}");
    }
    let forks = compile_c(dir.path(), "forks", &["-g", "-O2"]);
    let t = trace(dir.path(), &["--coverage"], &[forks.to_str().unwrap()]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    let lines = lcov_lines(t.lcov.as_deref().unwrap(), &fixture_source("forks.c"));
    // The grandchild's _exit line runs only in the grandchild.
    let grandchild_line = marked_lines(&fixture_source("forks.c"), "_exit(6)")[0];
    assert_eq!(lines.get(&grandchild_line), Some(&true), "{lines:?}");
}

/// Threads forking concurrently: new tasks' stops often arrive before their
/// creator's fork event, breakpoints are hit in parents and copied children
/// at once. Repeated to meet several interleavings.
#[test]
fn concurrent_forks_from_threads() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "storm", &["-g", "-O0"]);
    for _ in 0..3 {
        let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap()]);
        assert_eq!(t.code, 0, "a child exited wrongly: {}", t.stderr);
        assert_eq!(root(&t.json)["threads_total"], 5);
        let kids = children_of(&t.json, root(&t.json)["pid"].as_i64().unwrap());
        assert_eq!(kids.len(), 40);
        assert_eq!(processes(&t.json).len(), 41);
        let codes: BTreeSet<i64> = kids.iter().filter_map(|k| exited(k)).collect();
        assert_eq!(codes, (0..40).collect::<BTreeSet<i64>>());
        assert!(kids.iter().all(|k| k["threads_total"] == 2));
        assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("storm.c"));
    }
}

#[test]
fn clone_sharing_memory_is_a_clone_process() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "clone_vm", &["-g", "-O0"]);
    let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap()]);
    assert_eq!(
        t.code, 0,
        "clone_vm.c failed check {}: {}",
        t.code, t.stderr
    );
    let kids = children_of(&t.json, root(&t.json)["pid"].as_i64().unwrap());
    assert_eq!(kids.len(), 1);
    assert_eq!(kids[0]["origin"], "clone");
    assert_eq!(exited(kids[0]), Some(9));
    assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("clone_vm.c"));
}

#[test]
fn static_and_non_pie_executables_are_covered() {
    let dir = tempfile::tempdir().unwrap();
    for flags in [["-g", "-O0", "-static"], ["-g", "-O0", "-no-pie"]] {
        let prog = compile_c(dir.path(), "forks", &flags);
        let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap()]);
        assert_eq!(t.code, 0, "{flags:?}: {}", t.stderr);
        assert_eq!(processes(&t.json).len(), 4);
        assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("forks.c"));
    }
}

/// A process SIGKILLed while it forks: the kernel creates children whose
/// fork event is never reported. runq must still start them and finish.
#[test]
fn children_of_a_forker_killed_mid_fork_are_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "kill_forker", &["-g", "-O0"]);
    let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap(), "30"]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    let all = processes(&t.json);
    assert!(all.len() > 30, "{} processes", all.len());
    for process in all {
        assert!(process["status"].is_object(), "no end seen: {process}");
    }
    let forkers = children_of(&t.json, root(&t.json)["pid"].as_i64().unwrap());
    assert_eq!(forkers.len(), 30);
    assert!(forkers
        .iter()
        .all(|f| signaled(f).as_deref() == Some("SIGKILL")));
}

#[test]
fn exec_from_a_non_leader_thread() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "thread_exec", &["-g", "-O0"]);
    let leaf = compile_c(dir.path(), "leaf", &["-g", "-O0"]);
    let t = trace(
        dir.path(),
        &["--coverage", "--follow-exec"],
        &[prog.to_str().unwrap(), leaf.to_str().unwrap(), "a", "b"],
    );
    assert_eq!(t.code, 4, "{}", t.stderr);
    assert_eq!(processes(&t.json).len(), 1, "{}", t.stderr);
    let pid = root(&t.json)["pid"].as_i64().unwrap();
    let exec = t.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "exec")
        .expect("an exec event");
    assert_eq!(exec["pid"], pid);
    let from = exec["from_tid"].as_i64().expect("exec came from a thread");
    assert_ne!(from, pid);
    assert_eq!(exited(root(&t.json)), Some(4));
    assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("leaf.c"));
}

#[test]
fn signals_are_forwarded_and_group_stops_hold() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "signals", &["-g", "-O0"]);
    let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap()]);
    // The program checks every signal and stop itself; 0 means all held.
    assert_eq!(t.code, 0, "signals.c failed check {}: {}", t.code, t.stderr);
    let kids = children_of(&t.json, root(&t.json)["pid"].as_i64().unwrap());
    assert_eq!(kids.len(), 2);
    assert_eq!(exited(kids[0]), Some(7));
    assert_eq!(signaled(kids[1]).as_deref(), Some("SIGTERM"));
    let events = t.json["events"].as_array().unwrap();
    assert!(events
        .iter()
        .any(|e| e["kind"] == "group_stop" && e["signal"] == "SIGSTOP"));
    assert!(events
        .iter()
        .any(|e| e["kind"] == "signal" && e["signal"] == "SIGUSR1"));
    assert!(events
        .iter()
        .any(|e| e["kind"] == "signal" && e["signal"] == "SIGCHLD"));
    assert!(events
        .iter()
        .any(|e| e["kind"] == "signal" && e["signal"] == "SIGRTMIN+1"));
    assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("signals.c"));
}

#[test]
fn segfault_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "crash", &["-g", "-O0"]);
    let crash_line = marked_lines(&fixture_source("crash.c"), "CRASH */")[0];

    let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap(), "9"]);
    assert_eq!(t.code, 9, "{}", t.stderr);
    // The faulting line began (its breakpoint fired) before it faulted.
    let lines = lcov_lines(t.lcov.as_deref().unwrap(), &fixture_source("crash.c"));
    assert_eq!(lines.get(&crash_line), Some(&true), "{lines:?}");
    let child = children_of(&t.json, root(&t.json)["pid"].as_i64().unwrap())[0];
    assert_eq!(signaled(child).as_deref(), Some("SIGSEGV"));
    assert_eq!(child["crash"]["fault_address"], "0x0");
    let location = child["crash"]["location"].as_str().unwrap();
    assert!(
        location.ends_with(&format!("crash.c:{crash_line}")),
        "{location}"
    );
    assert!(t.stderr.contains("crash: SIGSEGV"), "{}", t.stderr);

    let t = trace(dir.path(), &[], &[prog.to_str().unwrap(), "self"]);
    assert_eq!(t.code, 128 + 11, "{}", t.stderr);
    assert_eq!(signaled(root(&t.json)).as_deref(), Some("SIGSEGV"));
    assert_eq!(t.json["root_status"]["signal"], "SIGSEGV");
}

#[test]
fn killed_by_signals() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "killed", &["-g", "-O0"]);
    let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap()]);
    assert_eq!(t.code, 128 + 15, "{}", t.stderr);
    assert_eq!(signaled(root(&t.json)).as_deref(), Some("SIGTERM"));
    let child = children_of(&t.json, root(&t.json)["pid"].as_i64().unwrap())[0];
    assert_eq!(signaled(child).as_deref(), Some("SIGKILL"));
    assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("killed.c"));
}

#[test]
fn grandchildren_outliving_the_root_are_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "orphans", &["-g", "-O0"]);
    let marker = dir.path().join("grandchild-done");
    let t = trace(
        dir.path(),
        &["--coverage"],
        &[prog.to_str().unwrap(), marker.to_str().unwrap()],
    );
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert!(
        marker.exists(),
        "runq returned before the grandchild finished"
    );
    let root_end = root(&t.json)["end"].as_f64().unwrap();
    let child = children_of(&t.json, root(&t.json)["pid"].as_i64().unwrap())[0];
    let grandchild = children_of(&t.json, child["pid"].as_i64().unwrap())[0];
    assert_eq!(exited(grandchild), Some(5));
    assert!(grandchild["end"].as_f64().unwrap() > root_end + 0.1);
    assert_markers(t.lcov.as_deref().unwrap(), &fixture_source("orphans.c"));
}

#[test]
fn rust_debug_binary_is_covered() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture_source("rust_lines.rs");
    let prog = dir.path().join("rust_lines");
    let status = Command::new("rustc")
        .args(["-g", "-C", "opt-level=0", "--edition", "2021", "-o"])
        .arg(&prog)
        .arg(&source)
        .status()
        .expect("rustc not found (it builds this crate, so it should be on PATH)");
    assert!(status.success());
    let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap(), "3"]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    let lcov = t.lcov.unwrap();
    assert_markers(&lcov, &source);
    // The standard library's sources are not counted.
    assert!(!lcov.contains("SF:/rustc/"));
    let functions = lcov_functions(&lcov, &source);
    assert_eq!(functions.get("triangle"), Some(&true), "{functions:?}");
    assert_eq!(functions.get("main"), Some(&true), "{functions:?}");
    assert_eq!(functions.get("never_called"), Some(&false), "{functions:?}");
    assert_eq!(root(&t.json)["threads_total"], 3);
}

/// Agreement of runq's hit lines with gcov's executed lines, over the lines
/// both tools count, for gcov_sample.c built with `opt`. The two differ in
/// where a function's first line is (gcov: the declaration, DWARF: the
/// opening brace) and in case labels, which DWARF gives no address; such
/// lines are only in one tool's set.
fn gcov_agreement(opt: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "gcov_sample", &["-g", opt, "--coverage"]);
    let t = trace(
        dir.path(),
        &["--coverage"],
        &[prog.to_str().unwrap(), "negate"],
    );
    assert_eq!(t.code, 0, "{}", t.stderr);
    let source = fixture_source("gcov_sample.c");
    let ours = lcov_lines(t.lcov.as_deref().unwrap(), &source);
    let (gcov, gcov_functions) = gcov_lines(dir.path(), "gcov_sample");
    // Functions both tools know ran (or not) alike. At -O0 both know the
    // same ones; gcov drops functions that were inlined everywhere, runq
    // still sees their inlined copies.
    let functions = lcov_functions(t.lcov.as_deref().unwrap(), &source);
    for (name, ran) in &gcov_functions {
        if opt == "-O0" || functions.contains_key(name) {
            assert_eq!(
                functions.get(name),
                Some(ran),
                "function {name} (runq {functions:?})"
            );
        }
    }
    if opt == "-O0" {
        assert_eq!(functions.len(), gcov_functions.len(), "{functions:?}");
    }
    let common: Vec<u32> = ours
        .keys()
        .filter(|l| gcov.contains_key(l))
        .copied()
        .collect();
    let agree = common.iter().filter(|l| ours[l] == gcov[l]).count();
    let agreement = 100.0 * agree as f64 / common.len() as f64;
    let disagree: Vec<(u32, bool, bool)> = common
        .iter()
        .filter(|l| ours[l] != gcov[l])
        .map(|l| (*l, ours[l], gcov[l]))
        .collect();
    eprintln!(
        "gcov agreement at {opt}: {agree}/{} common lines = {agreement:.1}% \
         (runq-only lines {}, gcov-only lines {}); disagreements \
         (line, runq, gcov): {disagree:?}",
        common.len(),
        ours.len() - common.len(),
        gcov.len() - common.len()
    );
    // Nearly every line gcov knows is one runq counts too.
    assert!(common.len() * 100 >= gcov.len() * 80, "{ours:?}\n{gcov:?}");
    assert!(gcov.values().any(|h| !h) && gcov.values().any(|h| *h));
    agreement
}

#[test]
fn coverage_agrees_with_gcov_at_o0() {
    let agreement = gcov_agreement("-O0");
    assert!(
        agreement >= 98.0,
        "only {agreement:.1}% agreement with gcov"
    );
}

/// Optimized code moves and merges lines, so both tools attribute some
/// differently; most must still agree.
#[test]
fn coverage_mostly_agrees_with_gcov_at_o2() {
    let agreement = gcov_agreement("-O2");
    assert!(
        agreement >= 90.0,
        "only {agreement:.1}% agreement with gcov"
    );
}

/// gcov's executed lines and functions for `name`.c, from the .gcda the
/// run wrote.
fn gcov_lines(dir: &Path, name: &str) -> (BTreeMap<u32, bool>, BTreeMap<String, bool>) {
    let gcda = dir.join(format!("{name}.gcda"));
    assert!(
        gcda.exists(),
        "the --coverage build wrote no {}",
        gcda.display()
    );
    let output = Command::new("gcov")
        .current_dir(dir)
        .args(["--json-format", "--stdout"])
        .arg(&gcda)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcov ({e}): install the Debian package gcc"));
    assert!(output.status.success());
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut lines = BTreeMap::new();
    let mut functions = BTreeMap::new();
    for file in json["files"].as_array().unwrap() {
        if !file["file"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{name}.c"))
        {
            continue;
        }
        for function in file["functions"].as_array().unwrap() {
            functions.insert(
                function["name"].as_str().unwrap().to_string(),
                function["execution_count"].as_u64().unwrap() > 0,
            );
        }
        for line in file["lines"].as_array().unwrap() {
            let n = line["line_number"].as_u64().unwrap() as u32;
            let hit = line["count"].as_u64().unwrap() > 0;
            *lines.entry(n).or_insert(false) |= hit;
        }
    }
    (lines, functions)
}

#[test]
fn lcov_output_is_accepted_by_genhtml() {
    let dir = tempfile::tempdir().unwrap();
    let prog = compile_c(dir.path(), "forks", &["-g", "-O0"]);
    let t = trace(dir.path(), &["--coverage"], &[prog.to_str().unwrap()]);
    assert_eq!(t.code, 0);
    let html = dir.path().join("html");
    let output = Command::new("genhtml")
        .arg("--output-directory")
        .arg(&html)
        .arg(dir.path().join("trace.lcov"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run genhtml ({e}): install the Debian package lcov"));
    assert!(
        output.status.success(),
        "genhtml rejected the lcov file: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(html.join("index.html").exists());
    let summary = t.json["coverage"].clone();
    assert!(summary["lines_hit"].as_u64().unwrap() > 0);
    assert!(summary["lines_hit"].as_u64() < summary["lines_total"].as_u64());
}

/// Waits until `tracer` traces `count` processes (the sleeper and the child
/// it forks), so a signal sent next finds the whole tree under ptrace.
fn wait_for_traced_tree(tracer: i32, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let tracer_line = |tid: &str| format!("TracerPid:\t{tid}");
    loop {
        // The tracer may be any thread of runq.
        let tracers: Vec<String> = std::fs::read_dir(format!("/proc/{tracer}/task"))
            .unwrap()
            .flatten()
            .map(|e| tracer_line(&e.file_name().to_string_lossy()))
            .collect();
        let traced = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .filter(|e| {
                std::fs::read_to_string(e.path().join("status"))
                    .is_ok_and(|status| status.lines().any(|l| tracers.iter().any(|t| t == l)))
            })
            .count();
        if traced >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "runq {tracer} traces {traced} processes, never {count}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts runq on the sleeper fixture, waits until it traces the whole
/// tree, then sends `signal`.
fn interrupt_sleeper(dir: &Path, flags: &[&str], run_ms: u64, signal: i32) -> (Traced, PathBuf) {
    let prog = compile_c(dir, "sleeper", &["-g", "-O0"]);
    let marker = dir.join("sleeper-done");
    let json_path = dir.join("trace.json");
    let lcov_path = dir.join("trace.lcov");
    let stderr_path = dir.join("runq.stderr");
    let mut child = Command::new(RUNQ)
        .arg("trace")
        .args(flags)
        .arg("--coverage")
        .arg("--lcov")
        .arg(&lcov_path)
        .arg("--json")
        .arg(&json_path)
        .arg("--")
        .arg(&prog)
        .arg(&marker)
        .arg(run_ms.to_string())
        // A file, not a pipe: detached processes keep it open after runq ends.
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_traced_tree(child.id() as i32, 2);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::try_from(signal).unwrap(),
    )
    .unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "runq was slow to react"
    );
    let output = Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(&stderr_path).unwrap(),
    };
    (finish(output, &json_path, &lcov_path), marker)
}

#[test]
fn sigterm_to_runq_kills_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (t, marker) = interrupt_sleeper(dir.path(), &[], 20_000, libc::SIGTERM);
    assert_eq!(t.code, 128 + 15, "{}", t.stderr);
    assert_eq!(t.json["interrupted_by"], "SIGTERM");
    assert_eq!(processes(&t.json).len(), 2);
    for process in processes(&t.json) {
        assert_eq!(signaled(process).as_deref(), Some("SIGKILL"), "{process}");
    }
    assert!(!marker.exists());
}

#[test]
fn sigint_with_detach_lets_the_tree_finish_untraced() {
    let dir = tempfile::tempdir().unwrap();
    let (t, marker) = interrupt_sleeper(
        dir.path(),
        &["--on-interrupt", "detach"],
        1500,
        libc::SIGINT,
    );
    assert_eq!(t.code, 128 + 2, "{}", t.stderr);
    let pids: Vec<i64> = processes(&t.json)
        .iter()
        .map(|p| p["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for process in processes(&t.json) {
        assert!(process["detached"].is_string(), "{process}");
        assert!(process["status"].is_null());
    }
    // Still running, and nobody traces them now.
    for pid in &pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("TracerPid:\t0"), "{status}");
    }
    // With every int3 removed they finish normally (a leftover breakpoint
    // would kill them with SIGTRAP).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the detached program never finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_input_is_rejected_before_spawning() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(RUNQ).arg("trace").args(args).output().unwrap();
        (
            output.status.code().unwrap(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--", "no-such-program-runq-test"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not found in PATH"), "{err}");

    let (code, err) = run(&["--lcov", "/tmp/x.lcov", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--lcov needs --coverage"), "{err}");

    let json = dir.path().join("missing-dir/out.json");
    let (code, err) = run(&["--json", json.to_str().unwrap(), "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");

    // No line table: compiled without -g.
    let prog = compile_c(dir.path(), "leaf", &["-O0"]);
    let marker = dir.path().join("out.json");
    let (code, err) = run(&[
        "--coverage",
        "--json",
        marker.to_str().unwrap(),
        "--",
        prog.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no DWARF line table"), "{err}");
    assert!(!marker.exists(), "a rejected run wrote its report");
    assert!(!err.contains("leaf:"), "the program ran: {err}");
}
