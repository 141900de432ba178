//! Helpers shared by the integration tests (each test file that needs them
//! declares `mod common;`).
//!
//! | helper | what it owns |
//! | --- | --- |
//! | [`runq_roots`], [`runq_roots_of`] | finding `runq-<pid>` cgroup roots left behind, at every level of every mounted hierarchy |
//! | [`skip`] | reporting a test that cannot run here loudly (and failing it under `CI=true`) |
//! | [`runq`], [`output_text`] | running the runq binary and showing what it printed |
//! | [`output_within`] | running a command with a time limit, its output in files |
//! | [`StopWorker`] | step hooks that SIGSTOP worker 0 for the middle step |

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runq::scenario::{Boundary, ExecutorHooks};

/// Every `runq-<pid>` (or `runq-<pid>-<n>`) cgroup directory, at any depth
/// of every mounted cgroup or cgroup2 hierarchy, whose owner `keep` accepts.
///
/// Runs put their root under the cgroup they run in on v1 (so a root can
/// sit several levels down, e.g. below a test's own cgroup) and at the
/// hierarchy root on v2: only a walk of whole trees sees both.
pub fn runq_roots(keep: impl Fn(i32) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for mount in cgroup_mounts() {
        walk(&mount, &keep, &mut found);
    }
    found.sort();
    found.dedup();
    found
}

/// The roots owned by the run with this pid.
pub fn runq_roots_of(pid: u32) -> Vec<PathBuf> {
    runq_roots(|owner| owner as u32 == pid)
}

/// Mount points of cgroup (v1) and cgroup2 file systems, from
/// `/proc/self/mountinfo` (field 5 is the mount point; the file system type
/// follows the ` - ` separator).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("reading mountinfo");
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let fs_type = tail.split(' ').next()?;
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                return None;
            }
            head.split(' ').nth(4).map(PathBuf::from)
        })
        .collect();
    mounts.sort();
    mounts.dedup();
    mounts
}

fn walk(dir: &Path, keep: &impl Fn(i32) -> bool, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if runq::cgroup::root_owner_pid(&name).is_some_and(keep) {
            found.push(path.clone());
        }
        walk(&path, keep, found);
    }
}

/// Reports that `test` cannot run here: `SKIPPED <test>: <why>` straight
/// to the process's stderr, past the test harness's capture (which hides
/// what a passing test prints), so every run shows it. Under `CI=true` a
/// skip is a failure: CI provides everything the suite needs.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run: {why} (CI=true, where every test must run)");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Runs the runq binary built with these tests and waits for it.
pub fn runq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runq"))
        .args(args)
        .output()
        .expect("run runq")
}

/// Both streams of a finished command, labelled, for assertion messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Step hooks that SIGSTOP worker 0 at boundary 1 and SIGCONT it at
/// boundary 2: a worker the scheduler cannot run, for the stall checks.
#[derive(Default)]
pub struct StopWorker {
    /// The worker it stopped (kept after the resume, for the assertions).
    pub pid: Option<i32>,
}

impl ExecutorHooks for StopWorker {
    fn at_boundary(&mut self, b: &mut Boundary<'_>) -> anyhow::Result<()> {
        match b.index {
            1 => {
                let pid = b.live[0].worker_pids[0];
                kill(Pid::from_raw(pid), Signal::SIGSTOP)?;
                self.pid = Some(pid);
            }
            2 => {
                if let Some(pid) = self.pid {
                    kill(Pid::from_raw(pid), Signal::SIGCONT)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Runs `command` to completion, failing the test (after killing and
/// reaping it) if it takes longer than `limit`; `what` names it then.
/// Output goes to files, not pipes: a chatty program, or a process left
/// running that holds a pipe open, must not block the test.
pub fn output_within(mut command: Command, limit: Duration, what: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut child = command
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: std::fs::read(&stdout_path).unwrap(),
        stderr: std::fs::read(&stderr_path).unwrap(),
    }
}
