//! `runq::process`: supervised programs (`Launch`) with real processes, and
//! the /proc reader's view of live, zombie and vanished processes.

use std::path::Path;
use std::time::{Duration, Instant};

use runq::process::{self, Exit, Launch, LaunchError};

const SH: &str = "/bin/sh";

fn sh(script: &str) -> Launch {
    Launch::new(SH).args(["-c", script])
}

/// Pumps `child` until its tail contains `text` (deadline 10 s).
fn await_output(child: &mut process::Supervised, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !child.tail_text().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in the output: {:?}",
            child.tail_text()
        );
        child.pump(Duration::from_millis(20));
    }
}

/// Waits until `pid` is gone or a zombie (deadline 5 s).
fn await_dead(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while process::is_alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} is still alive");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn output_of_both_streams_and_the_exit_code_are_collected() {
    let mut child = sh("echo out; echo err >&2; exit 3").spawn().unwrap();
    let exit = child.wait_until(Instant::now() + Duration::from_secs(10));
    assert_eq!(exit, Some(Exit::Exited(3)));
    child.kill();
    assert_eq!(child.tail_text(), "out\nerr\n");
}

#[test]
fn the_tail_is_bounded_and_the_file_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.log");
    let mut child = sh("i=0; while [ $i -lt 500 ]; do echo line$i; i=$((i+1)); done")
        .tail_bytes(16)
        .output_file(&file)
        .spawn()
        .unwrap();
    assert_eq!(
        child.wait_until(Instant::now() + Duration::from_secs(10)),
        Some(Exit::Exited(0))
    );
    // Reaped already: stop only collects the rest of the output.
    assert_eq!(
        child.stop(libc::SIGTERM, Duration::from_secs(10)),
        Exit::Exited(0)
    );
    assert_eq!(child.tail_text(), "line498\nline499\n");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), 500);
    assert!(written.ends_with("line499\n"));
}

#[test]
fn captured_output_is_handed_over_once() {
    let mut child = sh("echo one; echo two").capture(true).spawn().unwrap();
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !child.output_closed() && Instant::now() < deadline {
        child.pump(Duration::from_millis(20));
        all.extend(child.take_output());
    }
    child.kill();
    all.extend(child.take_output());
    assert_eq!(String::from_utf8(all).unwrap(), "one\ntwo\n");
    assert!(child.take_output().is_empty());
}

#[test]
fn a_held_child_runs_nothing_until_released_and_leads_its_group() {
    let mut child = sh("echo started").hold(true).spawn().unwrap();
    let pid = child.pid();
    assert!(child.is_held());
    assert_eq!(nix::unistd::getpgid(Some(pid)).unwrap(), pid);
    // Held: still this test binary, not the shell, and silent.
    let before = process::stat(pid.as_raw()).unwrap();
    assert_ne!(before.comm, "sh");
    assert_eq!(child.pump(Duration::from_millis(100)), 0);
    assert_eq!(child.try_wait(), None);
    child.release().unwrap();
    assert!(!child.is_held());
    await_output(&mut child, "started");
    assert_eq!(
        child.wait_until(Instant::now() + Duration::from_secs(10)),
        Some(Exit::Exited(0))
    );
}

#[test]
fn an_exec_failure_is_reported_and_the_child_reaped() {
    match Launch::new("/nonexistent/program").spawn() {
        Err(LaunchError::Exec { errno, .. }) => assert_eq!(errno, nix::errno::Errno::ENOENT),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a missing program launched"),
    }
    let mut held = Launch::new("/nonexistent/program")
        .hold(true)
        .spawn()
        .unwrap();
    let pid = held.pid().as_raw();
    let err = held.release().unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot execute /nonexistent/program"),
        "{err}"
    );
    assert!(
        process::stat(pid).is_none(),
        "the failed child was not reaped"
    );
}

#[test]
fn stop_is_graceful_first() {
    let mut child =
        sh("trap 'echo got-term; exit 5' TERM; echo ready; while :; do sleep 0.02; done")
            .spawn()
            .unwrap();
    await_output(&mut child, "ready");
    let exit = child.stop(libc::SIGTERM, Duration::from_secs(5));
    assert_eq!(exit, Exit::Exited(5));
    assert!(child.tail_text().contains("got-term"));
}

#[test]
fn stop_escalates_to_sigkill_of_the_whole_group() {
    let mut child = sh("trap '' TERM; sleep 100 & echo sleeper=$!; while :; do sleep 0.02; done")
        .spawn()
        .unwrap();
    await_output(&mut child, "\n");
    let sleeper: i32 = child
        .tail_text()
        .trim()
        .strip_prefix("sleeper=")
        .and_then(|p| p.parse().ok())
        .expect("the sleeper's pid");
    let started = Instant::now();
    let exit = child.stop(libc::SIGTERM, Duration::from_millis(300));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(exit, Exit::Signaled(libc::SIGKILL));
    await_dead(sleeper);
}

#[test]
fn dropping_kills_and_reaps() {
    let child = sh("sleep 100").spawn().unwrap();
    let pid = child.pid().as_raw();
    assert!(process::is_alive(pid));
    drop(child);
    assert!(process::stat(pid).is_none(), "pid {pid} left behind");
}

#[test]
fn the_environment_can_carry_the_childs_own_pid() {
    let mut child = sh("echo \"$OWN\" \"$GONE\" \"$SET\"")
        .env_own_pid("OWN", "marker-")
        .env_remove("GONE")
        .env("SET", "yes")
        .spawn()
        .unwrap();
    let pid = child.pid().as_raw();
    assert_eq!(
        child.wait_until(Instant::now() + Duration::from_secs(10)),
        Some(Exit::Exited(0))
    );
    child.kill();
    assert_eq!(child.tail_text(), format!("marker-{pid}  yes\n"));
}

#[test]
fn private_shm_leaves_nothing_in_the_hosts_dev_shm() {
    if !nix::unistd::geteuid().is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("SKIP private_shm_leaves_nothing: needs root (CAP_SYS_ADMIN)");
        return;
    }
    let name = format!("runq-test-shm-{}", std::process::id());
    let host = Path::new("/dev/shm").join(&name);
    let script = format!("echo data > /dev/shm/{name} && test -f /dev/shm/{name} && echo made");
    let mut child = sh(&script).private_shm(true).spawn().unwrap();
    assert_eq!(
        child.wait_until(Instant::now() + Duration::from_secs(10)),
        Some(Exit::Exited(0))
    );
    child.kill();
    assert_eq!(child.tail_text(), "made\n");
    let leaked = host.exists();
    let _ = std::fs::remove_file(&host);
    assert!(
        !leaked,
        "{} leaked into the host's /dev/shm",
        host.display()
    );
}

#[test]
fn zombies_are_not_alive() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    // Not reaped: it becomes a zombie.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = process::stat(pid).expect("an unreaped child keeps its /proc entry");
        if stat.state == 'Z' {
            assert!(stat.is_ended());
            break;
        }
        assert!(Instant::now() < deadline, "child never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!process::is_alive(pid));
    child.wait().unwrap();
}

#[test]
fn descendants_are_found_through_every_thread() {
    let mut child = sh("sleep 100 & sleep 100 & echo spawned; wait")
        .spawn()
        .unwrap();
    await_output(&mut child, "spawned");
    let pid = child.pid().as_raw();
    let below = process::descendants(pid);
    assert_eq!(below.len(), 2, "{below:?}");
    assert_eq!(process::children_of(pid), below);
    drop(child);
    for p in below {
        await_dead(p);
    }
}
