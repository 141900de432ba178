//! Ready markers from both sides: shell and Rust writers, the bounded
//! reader, and its three outcomes.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use runq::workload::ready::{
    self, clear_marker, mark_ready, marker_path, wait_ready, ReadyOutcome, READY_DIR_ENV,
};
use runq::workload::ExitShape;

/// The tests share the process environment (RUNQ_READY_DIR): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn shell(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh must be installed")
}

/// Kills and reaps `child`, and checks it left no marker behind.
fn finish(mut child: Child) {
    let pid = child.id() as i32;
    let _ = child.kill();
    let _ = child.wait();
    assert!(!marker_path(pid).exists(), "marker of {pid} left behind");
}

#[test]
fn shell_child_marker_in_default_dir_is_seen_and_removed() {
    let _serial = serial();
    assert!(std::env::var_os(READY_DIR_ENV).is_none());
    assert_eq!(ready::ready_dir(), std::path::Path::new("/tmp"));
    // The writer spells the documented format itself.
    let child = shell("sleep 0.1; : > /tmp/runq-ready-$$; exec sleep 10");
    let pid = child.id() as i32;
    assert_eq!(
        marker_path(pid),
        std::path::PathBuf::from(format!("/tmp/runq-ready-{pid}"))
    );
    let started = Instant::now();
    assert_eq!(wait_ready(pid, Duration::from_secs(5)), ReadyOutcome::Ready);
    assert!(started.elapsed() >= Duration::from_millis(90));
    assert!(!marker_path(pid).exists(), "the reader removes the marker");
    finish(child);
}

#[test]
fn rust_writer_in_forked_child() {
    let _serial = serial();
    // SAFETY: the child only marks itself ready, then sleeps and _exits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            std::thread::sleep(Duration::from_millis(50));
            let code = match mark_ready() {
                Ok(_) => 0,
                Err(_) => 9,
            };
            std::thread::sleep(Duration::from_secs(10));
            unsafe { libc::_exit(code) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let pid = child.as_raw();
            let outcome = wait_ready(pid, Duration::from_secs(5));
            nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL).unwrap();
            nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(outcome, ReadyOutcome::Ready);
            assert!(!marker_path(pid).exists());
            // No staging file either.
            assert!(!std::path::Path::new(&format!("/tmp/.runq-ready-{pid}.tmp")).exists());
        }
    }
}

#[test]
fn child_dying_first_is_died_before_with_its_status_still_reapable() {
    let _serial = serial();
    let child = shell("sleep 0.05; exit 3");
    let pid = child.id() as i32;
    let outcome = wait_ready(pid, Duration::from_secs(5));
    assert_eq!(outcome, ReadyOutcome::DiedBefore(ExitShape::Exited(3)));
    // The reader did not reap it: its owner still gets the status.
    let mut child = child;
    assert_eq!(child.wait().unwrap().code(), Some(3));

    let child = shell("kill -9 $$");
    let pid = child.id() as i32;
    let outcome = wait_ready(pid, Duration::from_secs(5));
    assert_eq!(outcome, ReadyOutcome::DiedBefore(ExitShape::Signaled(9)));
    let mut child = child;
    assert_eq!(child.wait().unwrap().signal(), Some(9));
}

#[test]
fn child_that_never_marks_is_never_ready_after_the_bounded_poll() {
    let _serial = serial();
    let child = shell("exec sleep 10");
    let pid = child.id() as i32;
    let started = Instant::now();
    let outcome = wait_ready(pid, Duration::from_millis(300));
    let waited = started.elapsed();
    assert_eq!(outcome, ReadyOutcome::NeverReady);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    finish(child);
}

#[test]
fn marked_then_died_counts_as_ready() {
    let _serial = serial();
    let mut child = shell(": > /tmp/runq-ready-$$; exit 0");
    let pid = child.id() as i32;
    // Let it end first: the marker is still there.
    while !std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(wait_ready(pid, Duration::from_secs(1)), ReadyOutcome::Ready);
    assert!(!marker_path(pid).exists());
    child.wait().unwrap();
}

#[test]
fn a_process_that_is_not_our_child_is_seen_ending() {
    let _serial = serial();
    // A grandchild: not waitable by the test, so /proc decides.
    let mut parent = shell("sleep 0.3 & echo $!; wait");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grandchild: i32 = line.trim().parse().unwrap();
    match wait_ready(grandchild, Duration::from_secs(5)) {
        ReadyOutcome::DiedBefore(ExitShape::WaitFailed(why)) => {
            assert!(why.contains("not a child"), "{why}")
        }
        other => panic!("expected DiedBefore(WaitFailed), got {other:?}"),
    }
    parent.wait().unwrap();
}

#[test]
fn dir_override_by_environment_on_both_sides() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var(READY_DIR_ENV, dir.path());
    let result = std::panic::catch_unwind(|| {
        assert_eq!(ready::ready_dir(), dir.path());
        // The child inherits RUNQ_READY_DIR and writes there.
        let child = shell("sleep 0.05; : > \"$RUNQ_READY_DIR/runq-ready-$$\"; exec sleep 10");
        let pid = child.id() as i32;
        assert_eq!(
            marker_path(pid),
            dir.path().join(format!("runq-ready-{pid}"))
        );
        let outcome = wait_ready(pid, Duration::from_secs(5));
        finish(child);
        assert_eq!(outcome, ReadyOutcome::Ready);
        assert!(!std::path::Path::new(&format!("/tmp/runq-ready-{pid}")).exists());
        // A stale marker (an earlier process with this pid) is cleared.
        std::fs::write(marker_path(pid), "").unwrap();
        clear_marker(pid).unwrap();
        clear_marker(pid).unwrap();
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    });
    std::env::remove_var(READY_DIR_ENV);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
