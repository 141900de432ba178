//! VM mode: real qemu booting the installed Debian kernel with runq as
//! init. Needs qemu-system-x86, linux-image-amd64 and busybox-static (see
//! .ci/run); a missing piece fails the test naming it.
//!
//! Every run gets its own TMPDIR; after it, that directory must be empty
//! and no process may still mention it (qemu's command line names the
//! per-run image inside it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");

fn require_tools() {
    for tool in ["qemu-system-x86_64", "busybox"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file());
        assert!(
            found,
            "{tool} is missing: install qemu-system-x86 and busybox-static (see .ci/run)"
        );
    }
    let has_kernel = std::fs::read_dir("/boot")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .unwrap_or(false);
    assert!(
        has_kernel || std::env::var_os("RUNQ_KERNEL").is_some(),
        "no /boot/vmlinuz-*: install linux-image-amd64 (see .ci/run)"
    );
}

/// Base images and extracted kernels are cached across test runs here.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-cache")
}

struct Run {
    output: Output,
    elapsed: Duration,
}

impl Run {
    fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// Runs `runq <args>` in `cwd` with a private TMPDIR, feeding `stdin`, and
/// checks that nothing is left behind.
fn runq_in(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(RUNQ)
        .args(args)
        .current_dir(cwd)
        .env("TMPDIR", tmp.path())
        .env("XDG_CACHE_HOME", cache_dir())
        .env_remove("RUNQ_CACHE_DIR")
        .env_remove("RUNQ_LOG")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting runq");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let marker = tmp.path().to_string_lossy().into_owned();
    assert_eq!(
        processes_mentioning(&marker),
        Vec::<String>::new(),
        "processes left"
    );
    Run { output, elapsed }
}

fn runq(args: &[&str]) -> Run {
    runq_in(Path::new(env!("CARGO_TARGET_TMPDIR")), args, None)
}

/// Command lines of live processes that contain `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(needle) {
            found.push(line);
        }
    }
    found
}

fn describe(run: &Run) -> String {
    format!(
        "exit {} after {:.1}s\n--- stdout\n{}\n--- stderr\n{}",
        run.code(),
        run.elapsed.as_secs_f64(),
        run.stdout(),
        run.stderr()
    )
}

#[test]
fn guest_topology_matches_the_requested_spec() {
    for (spec, nodes, llcs, cores, threads) in [
        ("1n1l2c1t", 1, 1, 2, 1),
        ("1n2l2c1t", 1, 2, 4, 1),
        ("2n2l2c1t", 2, 4, 8, 1),
        ("1n1l2c2t", 1, 1, 2, 2),
    ] {
        let run = runq(&["vm", "--topology", spec, "--", "topo", "--json"]);
        assert_eq!(run.code(), 0, "{spec}: {}", describe(&run));
        let json: serde_json::Value = serde_json::from_str(&run.stdout())
            .unwrap_or_else(|e| panic!("{spec}: guest printed no JSON ({e}): {}", describe(&run)));
        assert_eq!(json["spec"], spec, "{spec}: {json}");
        assert_eq!(json["uniform"], true, "{spec}: {json}");
        assert_eq!(
            json["nodes"].as_array().unwrap().len(),
            nodes,
            "{spec}: {json}"
        );
        assert_eq!(
            json["llcs"].as_array().unwrap().len(),
            llcs,
            "{spec}: {json}"
        );
        let cpus = json["cpus"].as_array().unwrap();
        assert_eq!(cpus.len(), cores * threads, "{spec}: {json}");
        let mut core_ids: Vec<u64> = cpus.iter().map(|c| c["core"].as_u64().unwrap()).collect();
        core_ids.dedup();
        assert_eq!(core_ids.len(), cores, "{spec}: SMT siblings: {json}");
    }
}

#[test]
fn guest_exit_codes_and_output_files_come_back() {
    // `runq trace` returns the traced program's exit code, so a shell
    // exiting 7 in the guest must give 7 on the host; the --json tree is
    // written in the guest's tmpfs and shipped back to the host path.
    let dir = tempfile::tempdir().unwrap();
    let run = runq_in(
        dir.path(),
        &[
            "vm",
            "--",
            "trace",
            "--json",
            "tree.json",
            "--",
            "/bin/sh",
            "-c",
            "echo guest-says-hi; exit 7",
        ],
        None,
    );
    assert_eq!(run.code(), 7, "{}", describe(&run));
    assert!(run.stdout().contains("guest-says-hi"), "{}", describe(&run));
    let tree = std::fs::read_to_string(dir.path().join("tree.json"))
        .unwrap_or_else(|e| panic!("tree.json not shipped back ({e}): {}", describe(&run)));
    let json: serde_json::Value = serde_json::from_str(&tree).expect("valid JSON");
    assert!(json.to_string().contains("/bin/sh"), "{json}");
}

#[test]
fn passing_and_failing_scenarios_give_their_exit_codes_through_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let run = runq_in(
        dir.path(),
        &[
            "vm",
            "--",
            "run",
            "steady",
            "--duration",
            "1s",
            "--json",
            "pass.json",
        ],
        None,
    );
    assert_eq!(run.code(), 0, "{}", describe(&run));
    assert!(run.stdout().contains("result: PASS"), "{}", describe(&run));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("pass.json")).unwrap()).unwrap();
    assert_eq!(report["scenario"], "steady");
    assert_eq!(
        report["topology"]["spec"], "1n1l2c1t",
        "the guest's topology"
    );

    // A scenario file (shipped with --include) whose stall bound no real
    // scheduler can meet: the check fails in the guest, exit 1 on the host.
    std::fs::write(
        dir.path().join("strict.toml"),
        "name = \"strict\"\nduration = \"1s\"\n\n[[cgroups]]\nname = \"cg0\"\n\n\
         [[cgroups.works]]\nwork = \"cpu_spin\"\nworkers = 4\n\n\
         [thresholds]\nmax_gap_ms = 0.01\n",
    )
    .unwrap();
    let run = runq_in(
        dir.path(),
        &[
            "vm",
            "--include",
            "strict.toml",
            "--",
            "run",
            "strict.toml",
            "--json",
            "fail.json",
        ],
        None,
    );
    assert_eq!(run.code(), 1, "{}", describe(&run));
    assert!(
        run.stdout().contains("FAIL longest_gap"),
        "{}",
        describe(&run)
    );
    assert!(dir.path().join("fail.json").is_file(), "{}", describe(&run));
}

#[test]
fn bad_input_is_rejected_before_booting() {
    let started = Instant::now();
    for args in [
        &["vm", "--topology", "1n0l2c1t", "--", "topo"][..],
        &["vm", "--memory", "lots", "--", "topo"],
        &[
            "vm",
            "--topology",
            "4n1l1c1t",
            "--memory",
            "256M",
            "--",
            "topo",
        ],
        &["vm", "--timeout", "soon", "--", "topo"],
        &["vm", "--", "topo", "--no-such-flag"],
        &["vm", "--", "vm", "--", "topo"],
        &["vm", "--kernel", "/nonexistent/vmlinuz", "--", "topo"],
        &["vm", "--include", "/nonexistent/file", "--", "topo"],
        &[
            "vm",
            "--",
            "trace",
            "--json",
            "/nonexistent/dir/out.json",
            "--",
            "/bin/true",
        ],
    ] {
        let run = runq(args);
        assert_eq!(run.code(), 2, "{args:?}: {}", describe(&run));
        assert!(
            run.stderr().contains("error"),
            "{args:?}: {}",
            describe(&run)
        );
        assert!(
            !run.stderr().contains("panicked"),
            "{args:?}: {}",
            describe(&run)
        );
    }
    // Nothing was booted: all of it together takes far less than one boot.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_bad_runq_kernel_is_bad_input_naming_the_variable() {
    let output = Command::new(RUNQ)
        .args(["vm", "--", "topo"])
        .env("RUNQ_KERNEL", "/nonexistent/kernel")
        .env("XDG_CACHE_HOME", cache_dir())
        .env_remove("RUNQ_CACHE_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RUNQ_KERNEL=/nonexistent/kernel"),
        "{stderr}"
    );
}

#[test]
fn guest_kernel_panic_is_reported_with_the_console_tail() {
    // No init in the initramfs: the kernel falls back to mounting a root
    // file system, finds none and panics.
    let run = runq(&["vm", "--kernel-arg", "rdinit=/no-such-init", "--", "topo"]);
    assert_eq!(run.code(), 3, "{}", describe(&run));
    let stderr = run.stderr();
    assert!(
        stderr.contains("the guest kernel panicked"),
        "{}",
        describe(&run)
    );
    // The kernel's own report, from its first line, not only the tail.
    let report = stderr
        .split("--- the guest kernel's report ---\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no kernel report: {}", describe(&run)));
    assert!(report.starts_with('['), "{}", describe(&run));
    assert!(
        report.lines().next().unwrap().contains("Kernel panic"),
        "{}",
        describe(&run)
    );
    // The whole console is kept in a file whose path is printed.
    let kept = stderr
        .lines()
        .find_map(|l| l.strip_prefix("the whole guest console: "))
        .unwrap_or_else(|| panic!("no console path: {}", describe(&run)));
    let console = std::fs::read_to_string(kept).unwrap();
    assert!(console.contains("Kernel panic"), "{console}");
    assert!(console.contains("Linux version"), "{console}");
    std::fs::remove_file(kept).unwrap();
}

#[test]
fn guest_hang_is_killed_at_the_timeout() {
    let run = runq(&[
        "vm",
        "--timeout",
        "30s",
        "--",
        "trace",
        "--",
        "/bin/sleep",
        "600",
    ]);
    assert_eq!(run.code(), 3, "{}", describe(&run));
    let stderr = run.stderr();
    assert!(
        stderr.contains("did not finish within --timeout 30s"),
        "{}",
        describe(&run)
    );
    assert!(
        stderr.contains("last lines of the guest console"),
        "{}",
        describe(&run)
    );
    assert!(run.elapsed < Duration::from_secs(45), "{}", describe(&run));
}

#[test]
fn shell_runs_commands_from_stdin_and_returns_their_exit_code() {
    let run = runq_in(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &["shell", "--timeout", "60s"],
        Some("echo shell-$((6*7)); cat /sys/fs/cgroup/cgroup.subtree_control; exit 5\n"),
    );
    assert_eq!(run.code(), 5, "{}", describe(&run));
    let stdout = run.stdout();
    assert!(stdout.contains("shell-42"), "{}", describe(&run));
    assert!(
        stdout.contains("cpuset") && stdout.contains("cpu"),
        "{}",
        describe(&run)
    );
}
