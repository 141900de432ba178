//! Several test cases in one boot (guest side).
//!
//! `/init` is a test binary (see `runq::test`); the plan names the cases
//! to run. Each case runs as its own process, `/init <case> --exact`, with
//! [`CASE_RESULT_ENV`] naming the file its verdict goes to; init streams
//! its output, then sends the verdict file and the exit code, framed by
//! `CaseStart`/`CaseEnd`.
//!
//! Between cases init resets what a case can leave behind, so a failing
//! case's state never reaches the next one: every process but init is
//! killed and reaped (which also stops the case's scheduler), init waits
//! until sched_ext reports the scheduler gone, removes every cgroup, and
//! mounts a fresh `/tmp`. Kernel tunables a case changes through /proc or
//! /sys are not restored; a case that needs them changed should not share
//! a boot (run it without `RUNQ_SHARED_BOOT`).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::channel::{encode, Frame};
use super::guest::{run_streamed, Plan};

/// The environment variable naming the file a case writes its verdict to.
pub const CASE_RESULT_ENV: &str = "RUNQ_CASE_RESULT";
/// Where a case's verdict is written in the guest (outside `/tmp`, which
/// is reset between cases).
const RESULT_FILE: &str = "/run/runq-case-result.json";
/// How long the processes of a finished case may take to die.
const KILL_DEADLINE: Duration = Duration::from_secs(5);
/// How long the kernel may take to unload a killed scheduler.
const SCHED_EXT_DEADLINE: Duration = Duration::from_secs(20);
const SCHED_EXT_STATE: &str = "/sys/kernel/sched_ext/state";

/// Runs every case in order; returns 0 when each exited 0, else 1.
pub fn run_cases(
    plan: &Plan,
    cases: &[String],
    channel: &mut std::fs::File,
) -> anyhow::Result<i32> {
    let mut worst = 0;
    for (index, name) in cases.iter().enumerate() {
        if index > 0 {
            reset().with_context(|| format!("resetting the guest before case {name}"))?;
        }
        channel.write_all(&encode(&Frame::CaseStart { index }))?;
        let _ = std::fs::remove_file(RESULT_FILE);
        let mut case_plan = plan.clone();
        case_plan
            .env
            .push((CASE_RESULT_ENV.to_string(), RESULT_FILE.to_string()));
        let mut command = std::process::Command::new("/init");
        command.args([name.as_str(), "--exact", "--quiet", "--test-threads=1"]);
        let code = run_streamed(&case_plan, command, None, channel)?;
        if let Ok(data) = std::fs::read(RESULT_FILE) {
            channel.write_all(&encode(&Frame::File { index, data }))?;
        }
        channel.write_all(&encode(&Frame::CaseEnd { index, code }))?;
        channel.flush()?;
        if code != 0 {
            worst = 1;
        }
    }
    Ok(worst)
}

/// Puts the guest back into the state a fresh boot has (see the module
/// docs for what that covers).
fn reset() -> anyhow::Result<()> {
    kill_everything_else()?;
    wait_sched_ext_disabled()?;
    remove_cgroups(Path::new("/sys/fs/cgroup")).context("removing the cases' cgroups")?;
    let _ = umount2("/tmp", MntFlags::MNT_DETACH);
    mount(
        Some("tmpfs"),
        "/tmp",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .context("mounting a fresh /tmp")?;
    Ok(())
}

/// SIGKILLs every process but init (kill(-1) from pid 1 spares only
/// itself) and reaps them all.
fn kill_everything_else() -> anyhow::Result<()> {
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + KILL_DEADLINE;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return Ok(()),
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    anyhow::bail!(
                        "processes of the previous case survived SIGKILL for {}s",
                        KILL_DEADLINE.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("reaping the previous case's processes"),
        }
    }
}

fn wait_sched_ext_disabled() -> anyhow::Result<()> {
    if !Path::new(SCHED_EXT_STATE).exists() {
        return Ok(());
    }
    let deadline = Instant::now() + SCHED_EXT_DEADLINE;
    loop {
        let state = std::fs::read_to_string(SCHED_EXT_STATE).unwrap_or_default();
        if state.trim() == "disabled" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "sched_ext still reports {:?} {}s after the previous case's scheduler was killed",
                state.trim(),
                SCHED_EXT_DEADLINE.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes every cgroup below `dir`, children first (they hold no tasks:
/// every process but init is gone, and init lives in the root).
fn remove_cgroups(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroups(&entry.path())?;
            std::fs::remove_dir(entry.path())?;
        }
    }
    Ok(())
}
