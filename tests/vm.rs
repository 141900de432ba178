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
    runq_in_env(cwd, args, stdin, &[])
}

/// [`runq_in`] with extra environment variables (set after the defaults).
fn runq_in_env(cwd: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &Path)]) -> Run {
    require_tools();
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut command = Command::new(RUNQ);
    command
        .args(args)
        .current_dir(cwd)
        .env("TMPDIR", tmp.path())
        .env("XDG_CACHE_HOME", cache_dir())
        .env_remove("RUNQ_CACHE_DIR");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
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
    let script = "echo guest-says-hi; exit 7";
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
            script,
        ],
        None,
    );
    assert_eq!(run.code(), 7, "{}", describe(&run));
    // The guest program's output, exactly: nothing of the boot mixed in.
    assert_eq!(run.stdout(), "guest-says-hi\n", "{}", describe(&run));
    let tree = std::fs::read_to_string(dir.path().join("tree.json"))
        .unwrap_or_else(|e| panic!("tree.json not shipped back ({e}): {}", describe(&run)));
    let json: serde_json::Value = serde_json::from_str(&tree).expect("valid JSON");
    // One process: the shell, with its arguments and its exit.
    let processes = json["processes"].as_array().expect("processes");
    assert_eq!(processes.len(), 1, "{json}");
    let shell = &processes[0];
    assert_eq!(
        shell["command"],
        serde_json::json!(["/bin/sh", "-c", script]),
        "{json}"
    );
    assert_eq!(
        shell["status"],
        serde_json::json!({"type": "exited", "code": 7}),
        "{json}"
    );
    assert_eq!(json["exit_code"], 7, "{json}");
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
        // The message names the flag (or the guest command) and the value.
        let wanted: &[&str] = match args[1] {
            "--topology" if args.len() == 5 => &["--topology", "1n0l2c1t", "at least 1"],
            "--topology" => &["--memory 256M", "128 MiB per node"],
            "--memory" => &["--memory", "lots", "512M"],
            "--timeout" => &["--timeout", "soon"],
            "--kernel" => &["--kernel", "/nonexistent/vmlinuz"],
            "--include" => &["--include /nonexistent/file", "name an existing file"],
            _ => match args[2] {
                "topo" => &["`runq topo --no-such-flag` is invalid", "'--no-such-flag'"],
                "vm" => &["`runq vm` would start a VM inside the VM"],
                _ => &[
                    "/nonexistent/dir/out.json",
                    "/nonexistent/dir does not exist",
                ],
            },
        };
        for w in wanted {
            assert!(
                run.stderr().contains(w),
                "{args:?}: {w:?} missing: {}",
                describe(&run)
            );
        }
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
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert!(lines.contains(&"shell-42"), "{}", describe(&run));
    // Both controllers enabled below the root, by whole name.
    let enabled: Vec<&str> = lines
        .iter()
        .find(|l| l.split_whitespace().any(|c| c == "cpuset"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    for controller in ["cpuset", "cpu"] {
        assert!(
            enabled.contains(&controller),
            "{controller} not in subtree_control {enabled:?}: {}",
            describe(&run)
        );
    }
}

/// What `--timings` says of the base image: "built" or "cached".
fn image_state(run: &Run) -> String {
    let stderr = run.stderr();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("runq vm: accel"))
        .unwrap_or_else(|| panic!("no --timings line: {}", describe(run)));
    line.rsplit("image ").next().unwrap().trim().to_string()
}

/// Base images in an initramfs cache directory (any depth).
fn cached_images(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".cpio.gz") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `name` on PATH.
fn which(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not on PATH"))
}

/// One fresh cache, three boots:
/// 1. builds the base image; `runq trace --coverage --lcov` of a program
///    shipped with `--include` writes its lcov file in the guest and it
///    comes back identical to the same trace on the host; `--console FILE`
///    keeps the guest kernel's console;
/// 2. reuses the cached image;
/// 3. with a changed input (another busybox) builds a new one.
#[test]
fn outputs_console_and_the_image_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let cache_env: &[(&str, &Path)] = &[
        ("RUNQ_CACHE_DIR", cache.path()),
        ("XDG_CACHE_HOME", cache.path()),
    ];
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trace/leaf.c");
    let program = dir.path().join("leaf");
    let status = Command::new("gcc")
        .args(["-g", "-O0", "-static", "-o"])
        .arg(&program)
        .arg(&source)
        .status()
        .expect("gcc (install the Debian package gcc)");
    assert!(status.success(), "gcc failed on leaf.c");
    let (program, source) = (program.to_str().unwrap(), source.to_str().unwrap());

    // The same trace on the host, for comparison.
    let host = Command::new(RUNQ)
        .current_dir(dir.path())
        .args(["trace", "--coverage", "--lcov", "host.info", "--", program])
        .output()
        .unwrap();
    assert_eq!(host.status.code(), Some(4), "{host:?}");
    let host_lcov = std::fs::read_to_string(dir.path().join("host.info")).unwrap();
    assert!(host_lcov.contains(&format!("SF:{source}")), "{host_lcov}");

    let run = runq_in_env(
        dir.path(),
        &[
            "vm",
            "--timings",
            "--console",
            "console.log",
            "--include",
            program,
            "--include",
            source,
            "--",
            "trace",
            "--coverage",
            "--lcov",
            "guest.info",
            "--",
            program,
        ],
        None,
        cache_env,
    );
    assert_eq!(run.code(), 4, "leaf exits 4: {}", describe(&run));
    assert_eq!(run.stdout(), "leaf: 1 arguments\n", "{}", describe(&run));
    let guest_lcov = std::fs::read_to_string(dir.path().join("guest.info"))
        .unwrap_or_else(|e| panic!("guest.info not shipped back ({e}): {}", describe(&run)));
    assert_eq!(
        guest_lcov, host_lcov,
        "the guest's lcov differs from the host's"
    );
    let console = std::fs::read_to_string(dir.path().join("console.log"))
        .unwrap_or_else(|e| panic!("no console file ({e}): {}", describe(&run)));
    assert!(console.contains("Linux version"), "{console}");
    assert!(console.contains("console=ttyS0"), "{console}");
    assert_eq!(image_state(&run), "built", "{}", describe(&run));
    let images = cached_images(cache.path());
    assert_eq!(images.len(), 1, "{images:?}");

    // Same inputs: the cached image is reused as it is.
    let run = runq_in_env(
        dir.path(),
        &["vm", "--timings", "--", "topo"],
        None,
        cache_env,
    );
    assert_eq!(run.code(), 0, "{}", describe(&run));
    assert_eq!(image_state(&run), "cached", "{}", describe(&run));
    assert_eq!(cached_images(cache.path()), images);

    // A changed input (busybox with one more byte): a new image.
    let busybox = dir.path().join("busybox");
    let mut bytes = std::fs::read(which("busybox")).unwrap();
    bytes.push(0);
    std::fs::write(&busybox, bytes).unwrap();
    std::fs::set_permissions(
        &busybox,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let env: Vec<(&str, &Path)> = cache_env
        .iter()
        .copied()
        .chain([("RUNQ_BUSYBOX", busybox.as_path())])
        .collect();
    let run = runq_in_env(dir.path(), &["vm", "--timings", "--", "topo"], None, &env);
    assert_eq!(run.code(), 0, "{}", describe(&run));
    assert_eq!(image_state(&run), "built", "{}", describe(&run));
    let rebuilt = cached_images(cache.path());
    assert_eq!(rebuilt.len(), 2, "{rebuilt:?}");
    assert!(images.iter().all(|i| rebuilt.contains(i)));
}
