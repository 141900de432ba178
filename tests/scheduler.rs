//! The scheduler under test, end to end: real sched_ext schedulers
//! (scx_bpfland and scx_rustland, installed by `scripts/setup-scx`) on a
//! real sched_ext kernel (`runq kernel fetch`) booted in qemu.
//!
//! Without the kernel, the schedulers or qemu a VM test says so loudly and
//! skips; under CI=true (CI provides them) it fails instead. Each boot
//! runs a guest script with several `runq run`s, whose exit codes and JSON
//! reports come back between `@@` markers on the guest's stdout.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use runq::report::RunReport;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");

/// Whether a VM test can run here. `None`: it cannot, and under CI=true
/// that is a failure.
fn vm_ready(test: &str) -> Option<()> {
    let mut missing = Vec::new();
    let on_path = |tool: &str| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file())
    };
    for tool in ["qemu-system-x86_64", "busybox"] {
        if !on_path(tool) {
            missing.push(format!("{tool} (scripts/setup)"));
        }
    }
    let kernels = runq::cache::kernels_dir()
        .map(|dir| runq::kernel::store::entries(&dir))
        .unwrap_or_default();
    if !kernels.iter().any(|k| k.metadata.capabilities.sched_ext) {
        missing.push("a cached kernel with sched_ext (`runq kernel fetch`)".into());
    }
    for scheduler in ["scx_bpfland", "scx_rustland"] {
        if runq::scheduler::find_binary(scheduler).is_err() {
            missing.push(format!("{scheduler} (scripts/setup-scx)"));
        }
    }
    if missing.is_empty() {
        return Some(());
    }
    let message = format!("{test} needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n*** SKIPPED {message} ***\n");
    None
}

/// What a guest script printed: exit codes, reports and other values by
/// case name.
struct Guest {
    output: Output,
    stdout: String,
}

impl Guest {
    fn marker(&self, kind: &str, name: &str) -> Option<String> {
        let head = format!("@@{kind} {name}\n");
        let start = self.stdout.find(&head)? + head.len();
        let end = self.stdout[start..].find("\n@@end")? + start;
        Some(self.stdout[start..end].to_string())
    }

    fn rc(&self, name: &str) -> i32 {
        let prefix = format!("@@rc {name} ");
        let line = self
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no exit code for {name}\n{}", self.describe()));
        line.trim().parse().unwrap()
    }

    fn report(&self, name: &str) -> RunReport {
        let json = self
            .marker("json", name)
            .unwrap_or_else(|| panic!("no report for {name}\n{}", self.describe()));
        RunReport::from_json(&json)
            .unwrap_or_else(|e| panic!("report of {name}: {e:#}\n{}", self.describe()))
    }

    fn text(&self, name: &str) -> String {
        self.marker("text", name).unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "guest exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.output.status.code(),
            self.stdout,
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

/// Shell helpers for guest scripts: `run_case NAME ARGS...` runs `runq ARGS
/// --json` and prints its exit code, report and output between markers;
/// `wait_workers` polls until a run's first cgroup has processes.
const PRELUDE: &str = r#"
run_case() {
    name=$1; shift
    runq "$@" --json /tmp/$name.json > /tmp/$name.out 2>&1
    echo "@@rc $name $?"
    echo "@@json $name"; cat /tmp/$name.json 2>/dev/null; echo; echo "@@end"
    echo "@@text $name"; cat /tmp/$name.out; echo; echo "@@end"
}
wait_workers() {
    i=0
    while [ $i -lt 1200 ]; do
        # cgroup files report size 0: read them (cgroup.threads: runq's
        # cgroups may be threaded, whose cgroup.procs cannot be read).
        for f in /sys/fs/cgroup/runq-*/cg0/cgroup.threads; do
            [ -n "$(cat "$f" 2>/dev/null)" ] && return 0
        done
        i=$((i + 1)); sleep 0.05
    done
    echo "@@timeout waiting for workers"
}
wait_state() {
    i=0
    while [ $i -lt 1200 ]; do
        [ "$(cat /sys/kernel/sched_ext/state)" = "$1" ] && return 0
        i=$((i + 1)); sleep 0.05
    done
    echo "@@timeout waiting for state $1"
}
"#;

/// Boots the sched_ext kernel with `topology` and both schedulers in the
/// guest, runs `script` there.
fn guest(topology: &str, includes: &[PathBuf], script: &str) -> Guest {
    let mut args: Vec<String> = [
        "shell",
        "--kernel",
        "sched_ext",
        "--topology",
        topology,
        "--executable",
        "scx_bpfland",
        "--executable",
        "scx_rustland",
        "--timeout",
        "400s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for include in includes {
        args.push("--include".into());
        args.push(include.display().to_string());
    }
    let mut child = Command::new(RUNQ)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting runq shell");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(PRELUDE.as_bytes()).unwrap();
        stdin.write_all(script.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().expect("waiting for runq shell");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let guest = Guest { output, stdout };
    assert_eq!(
        guest.output.status.code(),
        Some(0),
        "the guest script failed\n{}",
        guest.describe()
    );
    guest
}

fn check<'a>(report: &'a RunReport, name: &str) -> &'a runq::check::CheckOutcome {
    report
        .checks
        .get(name)
        .unwrap_or_else(|| panic!("no check {name} in {:#?}", report.checks))
}

/// A run that passed under scx_bpfland with every worker seen on sched_ext.
fn assert_ran_under_bpfland(guest: &Guest, name: &str) {
    let report = guest.report(name);
    assert_eq!(guest.rc(name), 0, "{name}:\n{}", guest.text(name));
    let scheduler = report.scheduler.as_ref().expect("a scheduler section");
    let ops = scheduler.ops.as_deref().unwrap_or("");
    assert!(ops.starts_with("bpfland"), "{name}: ops {ops:?}");
    assert!(guest.text(name).contains(ops), "the summary names the ops");
    assert_eq!(scheduler.state_after_stop, "disabled");
    assert_eq!(scheduler.exit, Some(runq::process::Exit::Exited(0)));
    let on_ext = check(&report, "workers_on_scheduler");
    assert!(on_ext.passed && !on_ext.skipped, "{name}: {on_ext:#?}");
    let seen: BTreeMap<i32, (u32, u32)> = scheduler
        .workers
        .iter()
        .map(|w| (w.tid, (w.seen, w.on_ext)))
        .collect();
    let tids: BTreeSet<i32> = report
        .cgroups
        .iter()
        .flat_map(|c| c.workers.iter().map(|w| w.tid))
        .collect();
    assert!(!tids.is_empty());
    for tid in &tids {
        let (looks, on) = seen
            .get(tid)
            .unwrap_or_else(|| panic!("{name}: worker {tid} never looked at: {seen:?}"));
        assert!(
            *looks > 0 && on == looks,
            "{name}: worker {tid}: {on} of {looks}"
        );
    }
}

const CATALOG_CASES: &[&str] = &["steady", "cpuset_disjoint", "two_cgroups"];

fn catalog_script() -> String {
    CATALOG_CASES
        .iter()
        .map(|s| format!("run_case {s} run {s} --duration 2s --scheduler scx_bpfland\n"))
        .collect()
}

#[test]
fn bpfland_runs_catalog_scenarios_on_two_cpus_with_every_worker_on_ext() {
    if vm_ready("bpfland_runs_catalog_scenarios_on_two_cpus").is_none() {
        return;
    }
    // The TOML form too: [scheduler] in the file, a worker with policy ext.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("under_bpfland.toml");
    std::fs::write(
        &toml,
        r#"name = "under_bpfland"
duration = "2s"
[scheduler]
binary = "scx_bpfland"
args = ["--slice-us", "5000"]
attach_timeout = "60s"
[[cgroups]]
name = "cg0"
[[cgroups.works]]
work = "cpu_spin"
workers = 2
[[cgroups.works]]
work = "cpu_spin"
workers = 1
policy = "ext"
"#,
    )
    .unwrap();
    let script = format!("{}run_case toml run {}\n", catalog_script(), toml.display());
    let guest = guest("1n1l2c1t", std::slice::from_ref(&toml), &script);
    for name in CATALOG_CASES.iter().chain(&["toml"]) {
        assert_ran_under_bpfland(&guest, name);
    }
    let report = guest.report("toml");
    let scheduler = report.scheduler.unwrap();
    assert_eq!(scheduler.args, ["--slice-us", "5000"]);
    assert_eq!(report.cgroups[0].workers.len(), 3);
}

#[test]
fn bpfland_runs_catalog_scenarios_on_four_cpus_with_every_worker_on_ext() {
    if vm_ready("bpfland_runs_catalog_scenarios_on_four_cpus").is_none() {
        return;
    }
    let guest = guest("1n2l2c1t", &[], &catalog_script());
    for name in CATALOG_CASES {
        assert_ran_under_bpfland(&guest, name);
        assert_eq!(guest.report(name).topology.num_cpus, 4);
    }
}

/// Ejected while the run went on: `scheduler_attached` fails quoting the
/// kernel's reason, every worker is still collected, the run exits 1.
fn assert_ejected(guest: &Guest, name: &str, reason: &str, within_ms: f64) {
    let report = guest.report(name);
    assert_eq!(guest.rc(name), 1, "{name}:\n{}", guest.text(name));
    let attached = check(&report, "scheduler_attached");
    assert!(!attached.passed, "{name}: {attached:#?}");
    assert!(attached.summary.contains(reason), "{name}: {attached:#?}");
    let scheduler = report.scheduler.as_ref().unwrap();
    let ejection = scheduler.ejection.as_ref().expect("an ejection");
    assert_eq!(ejection.reason, reason);
    assert!(
        ejection.after_attach_ms < within_ms,
        "{name}: ejected {:.0} ms after attaching, expected within {within_ms} ms",
        ejection.after_attach_ms
    );
    assert!(ejection.exit.is_some(), "{name}: its exit is recorded");
    assert_eq!(scheduler.state_after_stop, "disabled");
    let completed = check(&report, "workers_completed");
    assert!(
        completed.passed && !completed.skipped,
        "{name}: {completed:#?}"
    );
    let workers: usize = report.cgroups.iter().map(|c| c.workers.len()).sum();
    assert_eq!(workers, 4, "{name}: every worker of steady is collected");
    let captures = report.captures.as_ref().expect("captures");
    assert!(
        captures.captures.iter().any(|c| c.tag == "scheduler_exit"),
        "{name}: a scheduler_exit capture"
    );
}

#[test]
fn ejections_and_bad_schedulers_in_a_guest() {
    if vm_ready("ejections_and_bad_schedulers_in_a_guest").is_none() {
        return;
    }
    let script = r#"
run_case throttle run steady --duration 8s --scheduler scx_bpfland --scheduler-arg=--throttle-us --scheduler-arg 30000000
run_case sigstop run steady --duration 14s --scheduler scx_rustland &
wait_workers; kill -STOP $(pidof scx_rustland); wait
run_case sysrq run steady --duration 4s --scheduler scx_bpfland &
wait_workers; echo S > /proc/sysrq-trigger; wait
run_case false run steady --duration 2s --scheduler /bin/false
echo "@@left false"; ls -d /sys/fs/cgroup/runq-* 2>/dev/null | wc -l; pidof false; echo "@@end"
cat > /tmp/never.toml <<'TOML'
name = "never_attaches"
duration = "2s"
[scheduler]
binary = "/bin/sleep"
args = ["600"]
attach_timeout = "3s"
stop_timeout = "1s"
[[cgroups]]
name = "cg0"
[[cgroups.works]]
work = "cpu_spin"
workers = 2
TOML
run_case never run /tmp/never.toml
echo "@@left never"; ls -d /sys/fs/cgroup/runq-* 2>/dev/null | wc -l; pidof sleep; echo "@@end"
scx_bpfland > /tmp/other.log 2>&1 & other=$!
wait_state enabled
run_case busy run steady --duration 2s --scheduler scx_rustland
kill -INT $other; wait $other; wait_state disabled
"#;
    let guest = guest("1n1l2c1t", &[], script);
    // Both schedulers' watchdogs give up after 5 s without progress; the
    // kernel checks every half timeout. rustland's stall is counted from
    // the SIGSTOP, which comes once the workers exist.
    assert_ejected(&guest, "throttle", "runnable task stall", 5000.0 + 3000.0);
    assert_ejected(
        &guest,
        "sigstop",
        "runnable task stall",
        5000.0 * 1.5 + 6000.0,
    );
    assert_ejected(&guest, "sysrq", "disabled by sysrq-S", 5000.0);
    // SysRq-S came once the workers existed: the kernel's time of it falls
    // inside the run, and the check says when.
    let sysrq = guest.report("sysrq");
    let ejection = sysrq.scheduler.as_ref().unwrap().ejection.as_ref().unwrap();
    assert!(ejection.at_ms > 0.0, "{ejection:#?}");
    let summary = &check(&sysrq, "scheduler_attached").summary;
    assert!(summary.contains("ms into the run, in step 1"), "{summary}");
    let details = check(&guest.report("throttle"), "scheduler_attached")
        .details
        .join("\n");
    assert!(details.contains("watchdog failed to check in"), "{details}");

    // A scheduler that exits at once: the check fails with its exit, no
    // worker was started, nothing is left.
    let report = guest.report("false");
    assert_eq!(guest.rc("false"), 1);
    let attached = check(&report, "scheduler_attached");
    assert!(
        !attached.passed && attached.summary.contains("exit code 1"),
        "{attached:#?}"
    );
    assert!(report.cgroups.is_empty(), "no worker was started");
    assert!(check(&report, "workers_completed").skipped);
    assert_eq!(guest.marker("left", "false").unwrap().trim(), "0");

    // A scheduler that runs but never attaches: the check fails naming the
    // timeout once it passed, the process is stopped, no worker started.
    let report = guest.report("never");
    assert_eq!(guest.rc("never"), 1, "{}", guest.text("never"));
    let attached = check(&report, "scheduler_attached");
    assert!(
        !attached.passed
            && attached
                .summary
                .contains("did not report it attached within 3s"),
        "{attached:#?}"
    );
    assert!(report.cgroups.is_empty(), "no worker was started");
    assert_eq!(guest.marker("left", "never").unwrap().trim(), "0");

    // Another scheduler attached: environment error naming it.
    assert_eq!(guest.rc("busy"), 3, "{}", guest.text("busy"));
    let text = guest.text("busy");
    assert!(
        text.contains("another sched_ext scheduler is attached (bpfland"),
        "{text}"
    );
}

fn runq(args: &[&str]) -> Output {
    Command::new(RUNQ)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("starting runq")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_schedulers_and_kernels_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("scx_plain_file");
    std::fs::write(&plain, "not a program").unwrap();
    let plain = plain.to_str().unwrap();
    let not_exec = runq(&["run", "steady", "--scheduler", plain]);
    assert_eq!(not_exec.status.code(), Some(2), "{}", stderr(&not_exec));
    let message = stderr(&not_exec);
    assert!(
        message.contains(&format!("--scheduler {plain}: not executable")),
        "{message}"
    );
    let unknown = runq(&["run", "steady", "--scheduler", "scx_no_such_scheduler"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("scripts/setup-scx"),
        "{}",
        stderr(&unknown)
    );
    let orphan_arg = runq(&["run", "steady", "--scheduler-arg", "-v"]);
    assert_eq!(orphan_arg.status.code(), Some(2));
    assert!(stderr(&orphan_arg).contains("--scheduler-arg"));

    if !std::path::Path::new("/sys/kernel/sched_ext").exists() {
        // This host cannot run one: exit 3 showing the VM form.
        let host = runq(&["run", "steady", "--scheduler", "/bin/true"]);
        assert_eq!(host.status.code(), Some(3), "{}", stderr(&host));
        let message = stderr(&host);
        assert!(
            message.contains("runq vm --kernel sched_ext -- run steady --scheduler /bin/true"),
            "{message}"
        );
    }

    // A kernel whose config has no sched_ext, refused before booting.
    let Some(kernel) = boot_kernel_without_sched_ext() else {
        let message =
            "no /boot kernel without sched_ext to refuse (linux-image-amd64 of Debian 12 is one)";
        assert!(std::env::var("CI").is_err(), "{message}");
        eprintln!("\n*** SKIPPED the kernel half: {message} ***\n");
        return;
    };
    let started = Instant::now();
    let refused = runq(&[
        "vm",
        "--kernel",
        kernel.to_str().unwrap(),
        "--",
        "run",
        "steady",
        "--scheduler",
        "/bin/true",
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("runq kernel fetch"),
        "{}",
        stderr(&refused)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused without booting"
    );
}

/// A /boot/vmlinuz-* whose config-* beside it lacks CONFIG_SCHED_CLASS_EXT.
fn boot_kernel_without_sched_ext() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/boot").ok()?;
    entries.filter_map(Result::ok).find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let release = name.strip_prefix("vmlinuz-")?;
        let config = std::fs::read_to_string(format!("/boot/config-{release}")).ok()?;
        (!config.contains("CONFIG_SCHED_CLASS_EXT=y")).then(|| e.path())
    })
}

/// The pids of `pid`'s children whose command starts with `prefix`.
fn children_named(pid: u32, prefix: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|comm| comm.starts_with(prefix))
        })
        .collect()
}

#[test]
fn sigkill_of_runq_during_a_scheduler_run_leaves_no_qemu() {
    if vm_ready("sigkill_of_runq_during_a_scheduler_run_leaves_no_qemu").is_none() {
        return;
    }
    let mut child = Command::new(RUNQ)
        .args([
            "vm",
            "--kernel",
            "sched_ext",
            "--timeout",
            "300s",
            "--",
            "run",
            "steady",
            "--duration",
            "120s",
            "--scheduler",
            "scx_bpfland",
        ])
        .env("RUNQ_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting runq vm");
    let pid = child.id();
    // The guest's log comes through runq's stderr: wait for the attach.
    let (lines, seen) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut log = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("attached as bpfland") {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("the scheduler never attached in the guest:\n{log}");
            }
        }
    }
    let qemu = children_named(pid, "qemu");
    assert_eq!(qemu.len(), 1, "one qemu child of runq: {qemu:?}\n{log}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.split_whitespace().nth(2) == Some("Z"))
    };
    while !gone(qemu[0]) {
        assert!(Instant::now() < deadline, "qemu {} outlived runq", qemu[0]);
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap();
}
