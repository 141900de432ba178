//! Output paths through the real binary: a device given as `--json` is
//! written into and stays a device, a symlink is followed, a full disk
//! is exit 3, and a missing directory is exit 2 before anything runs.

use std::os::unix::fs::FileTypeExt;
use std::process::Command;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");

fn run_steady_with_json(path: &std::path::Path) -> std::process::Output {
    Command::new(RUNQ)
        .args(["run", "steady", "--duration", "200ms", "--quiet", "--json"])
        .arg(path)
        .output()
        .expect("runq runs")
}

#[test]
fn a_character_device_given_as_json_stays_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("nul");
    let status = Command::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .status()
        .expect("mknod runs (the test needs root)");
    assert!(status.success(), "mknod c 1 3 needs root");
    let out = run_steady_with_json(&null);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let kind = std::fs::symlink_metadata(&null).unwrap().file_type();
    assert!(
        kind.is_char_device(),
        "--json replaced the device with {kind:?}"
    );
}

#[test]
fn a_symlinked_report_path_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.json");
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = run_steady_with_json(&link);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(text.contains("\"schema_version\""), "{text}");
}

#[test]
fn a_full_disk_is_exit_3_naming_the_path() {
    let out = run_steady_with_json(std::path::Path::new("/dev/full"));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--json /dev/full: the disk is full"),
        "{stderr}"
    );
}

#[test]
fn a_missing_directory_is_exit_2_before_any_worker_runs() {
    let out = Command::new(RUNQ)
        .args(["workload", "--work", "cpu_spin", "--workers", "1"])
        .args(["--duration", "5s", "--json", "/nonexistent/w.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("directory /nonexistent does not exist"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no worker table: nothing ran");
}
