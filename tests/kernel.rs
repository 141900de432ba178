//! Kernel management for real: `runq kernel fetch` against Debian's
//! registry, `runq kernel list`, and booting the fetched sched_ext kernel
//! under qemu. sid moves on, so nothing here assumes a version: the tests
//! assert capabilities (sched_ext, BTF, PVH) and what the cache recorded.
//!
//! The boot tests use runq's own cache (`RUNQ_CACHE_DIR`, else
//! `~/.cache/runq`), which .ci/run fills with `runq kernel fetch`; when it
//! holds no sched_ext kernel they fetch one. Without network, qemu or
//! busybox they say so loudly and skip, except under CI=true, where they
//! fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Fails under CI, else prints a loud skip note; returns whether to go on.
fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(!in_ci(), "{what} (CI provides it: see .ci/run)");
    eprintln!("SKIPPED: {what}");
    false
}

fn have_vm_tools() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = |tool: &str| std::env::split_paths(&path).any(|d| d.join(tool).is_file());
    require(
        found("qemu-system-x86_64") && found("busybox"),
        "qemu-system-x86_64 or busybox is missing: install qemu-system-x86 busybox-static",
    )
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `runq <args>` with `envs` set and a private TMPDIR that must be empty
/// afterwards.
fn runq(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let mut command = Command::new(RUNQ);
    command
        .args(args)
        .env("TMPDIR", tmp.path())
        .env_remove("RUNQ_KERNEL")
        .stdin(Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    let output = command.output().expect("starting runq");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "left in TMPDIR: {left:?}\n{}",
        describe(&output)
    );
    output
}

/// Boots with `runq vm <args>`; a guest kernel panic is retried once, and
/// said so (runq itself never retries).
fn boot(args: &[&str]) -> Output {
    let first = runq(args, &[]);
    let panicked = String::from_utf8_lossy(&first.stderr).contains("the guest kernel panicked");
    if first.status.code() == Some(3) && panicked {
        eprintln!(
            "NOTE: the guest kernel panicked; retrying the boot once:\n{}",
            describe(&first)
        );
        return runq(args, &[]);
    }
    first
}

fn list_json(envs: &[(&str, &Path)]) -> Value {
    let output = runq(&["kernel", "list", "--json"], envs);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn cached_sched_ext(list: &Value) -> Option<&Value> {
    list["kernels"]
        .as_array()?
        .iter()
        .find(|k| k["source"] == "cache" && k["sched_ext"] == true)
}

/// Makes sure runq's cache holds a sched_ext kernel (fetching one if
/// needed); false (skip) when that is impossible outside CI.
fn ensure_sched_ext_kernel() -> bool {
    if !have_vm_tools() {
        return false;
    }
    if cached_sched_ext(&list_json(&[])).is_some() {
        return true;
    }
    let output = runq(&["kernel", "fetch", "--suite", "sid"], &[]);
    require(
        output.status.success(),
        &format!("cannot fetch a sched_ext kernel:\n{}", describe(&output)),
    ) && cached_sched_ext(&list_json(&[])).is_some()
}

#[test]
fn fetch_records_the_kernel_a_second_fetch_is_a_no_op_and_corruption_is_found() {
    let cache = tempfile::tempdir().unwrap();
    let envs = [("RUNQ_CACHE_DIR", cache.path())];
    let output = runq(&["kernel", "fetch", "--suite", "sid"], &envs);
    if !require(
        output.status.success(),
        &format!(
            "fetching from Debian failed (network?):\n{}",
            describe(&output)
        ),
    ) {
        return;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("fetched "), "{}", describe(&output));
    assert!(
        stdout.contains("sched_ext yes, BTF yes, PVH yes"),
        "{}",
        describe(&output)
    );

    let list = list_json(&envs);
    let listed = cached_sched_ext(&list).unwrap_or_else(|| panic!("{list:#}"));
    assert_eq!(listed["btf"], true, "{list:#}");
    assert_eq!(listed["pvh"], true, "{list:#}");
    let dir = PathBuf::from(listed["path"].as_str().unwrap());
    let release = listed["release"].as_str().unwrap().to_string();
    let metadata = entry_metadata(&dir);
    assert_eq!(metadata["release"], release.as_str());
    assert_eq!(metadata["origin"]["suite"], "sid");
    for name in ["vmlinuz", "vmlinux", "config"] {
        let record = &metadata["files"][name];
        let data = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(record["size"], data.len() as u64, "{name}");
        assert_eq!(record["sha256"], sha256_hex(&data), "{name}");
    }
    let table = runq(&["kernel", "list"], &envs);
    let line = String::from_utf8_lossy(&table.stdout)
        .lines()
        .find(|l| l.starts_with(&release))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}", describe(&table)));
    assert!(
        line.split_whitespace()
            .take(5)
            .eq([release.as_str(), "cache", "yes", "yes", "yes"]),
        "{line}"
    );

    let again = runq(&["kernel", "fetch", "--suite", "sid"], &envs);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).starts_with(&format!("already cached {release}")),
        "{}",
        describe(&again)
    );
    assert_eq!(
        entry_metadata(&dir),
        metadata,
        "a no-op fetch rewrote the entry"
    );

    corrupt_and_boot(&dir, &release, &envs);
}

/// Flips a byte of the cached vmlinux: booting it must fail before qemu
/// starts, naming the fetch command.
fn corrupt_and_boot(dir: &Path, release: &str, envs: &[(&str, &Path)]) {
    let vmlinux = dir.join("vmlinux");
    let mut data = std::fs::read(&vmlinux).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0x01;
    std::fs::write(&vmlinux, data).unwrap();
    for kernel in [release, "sched_ext"] {
        let started = Instant::now();
        let output = runq(&["vm", "--kernel", kernel, "--", "topo"], envs);
        assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("is corrupt"), "{}", describe(&output));
        assert!(stderr.contains("vmlinux"), "{}", describe(&output));
        assert!(
            stderr.contains("runq kernel fetch --suite sid --flavour amd64"),
            "{}",
            describe(&output)
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "qemu seems to have started"
        );
    }
}

fn entry_metadata(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("runq-kernel.json")).unwrap()).unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_sched_ext_kernel_boots_with_the_requested_topologies() {
    if !ensure_sched_ext_kernel() {
        return;
    }
    for spec in ["1n2l2c1t", "2n1l1c2t"] {
        let output = boot(&[
            "vm",
            "--kernel",
            "sched_ext",
            "--topology",
            spec,
            "--timeout",
            "120s",
            "--",
            "topo",
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.lines().any(|l| l == format!("spec: {spec}")),
            "{}",
            describe(&output)
        );
    }
}

#[test]
fn the_guest_has_the_kernel_config_and_sched_ext() {
    if !ensure_sched_ext_kernel() {
        return;
    }
    let script = "grep -qx CONFIG_SCHED_CLASS_EXT=y /boot/config-$(uname -r) || exit 7\n\
                  test -d /sys/kernel/sched_ext || exit 8\n";
    let mut child = Command::new(RUNQ)
        .args(["shell", "--kernel", "sched_ext", "--timeout", "120s"])
        .env_remove("RUNQ_KERNEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
}

#[test]
fn an_unknown_release_is_bad_input_naming_the_fetch_command() {
    let output = runq(&["vm", "--kernel", "no-such-release", "--", "topo"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--kernel no-such-release"), "{stderr}");
    assert!(stderr.contains("runq kernel fetch"), "{stderr}");
}

#[test]
fn a_killed_vm_leaves_a_temp_dir_the_next_run_removes() {
    if !ensure_sched_ext_kernel() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(RUNQ)
        .args([
            "vm",
            "--kernel",
            "sched_ext",
            "--timeout",
            "120s",
            "--",
            "topo",
        ])
        .env("TMPDIR", tmp.path())
        .env_remove("RUNQ_KERNEL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("runq-vm-{}-", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    let run_dir = loop {
        let found = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&prefix));
        if let Some(entry) = found {
            break entry.path();
        }
        assert!(Instant::now() < deadline, "no {prefix}* appeared in TMPDIR");
        assert!(
            child.try_wait().unwrap().is_none(),
            "runq vm ended before its run dir appeared"
        );
        std::thread::yield_now();
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        run_dir.is_dir(),
        "a SIGKILLed run cannot remove its directory"
    );

    // The next run (even one that stops at bad input) removes it.
    let output = Command::new(RUNQ)
        .args(["vm", "--kernel", "no-such-release", "--", "topo"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(!run_dir.exists(), "{} was not reaped", run_dir.display());
}
