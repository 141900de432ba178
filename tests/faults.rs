//! The fault campaign: every long-running subcommand is hit with SIGKILL,
//! SIGINT and SIGTERM at seeded random moments, and must leave nothing
//! behind.
//!
//! For each trial: runq starts in its own process group; until it ends, its
//! tree is walked through /proc every few milliseconds and every process
//! seen (pid + start time, so a reused pid is not mistaken for it) and every
//! process group it used is remembered. Then:
//! - within 1.5 s of runq's end no remembered process is alive (zombies
//!   count as dead), no process is left in a remembered group, and none is
//!   a stopped tracee;
//! - SIGINT/SIGTERM give the subcommand's documented exit code (3, or
//!   128+N for `trace`, which reports the interrupting signal);
//! - no `runq-<pid>` cgroup root of a remembered pid is left after the next
//!   run (one is started when roots are found);
//! - no new /dev/shm entry naming a remembered pid, nothing new in the
//!   private TMPDIR runq got, no `/tmp/runq*` entry naming a remembered pid,
//!   no new `runq*`/`.tmp*` entry in the cache root (after SIGKILL,
//!   temporary entries named by a dead pid of the tree are allowed: the
//!   next start reaps them).
//!
//! Delays come from a seeded RNG: set RUNQ_FAULTS_SEED to replay a
//! campaign; each trial prints its line of the table
//! (`faults: <case> <signal> <delay> -> <outcome>`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::{Rng, SeedableRng};

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");
/// How long the tree may take to disappear after runq's end.
const GRACE: Duration = Duration::from_millis(1500);
/// How often the tree is walked while runq runs.
const WALK_EVERY: Duration = Duration::from_millis(5);

fn campaign_seed() -> u64 {
    std::env::var("RUNQ_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261127)
}

/// A required tool: missing means skip loudly, or fail under CI=true.
fn tool_present(tool: &str, install: &str) -> bool {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(tool).is_file());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing: {install}"
        );
        eprintln!("SKIPPED: {tool} is missing ({install})");
    }
    found
}

fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("faults");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---- /proc ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    state: char,
    ppid: i32,
    pgrp: i32,
    start: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .map(|c| c.replace('\0', " ").trim().to_string())
        .unwrap_or_default()
}

/// Everything ever seen of one runq's tree.
#[derive(Default)]
struct Tracker {
    root: i32,
    /// pid -> start time (clock ticks since boot).
    seen: HashMap<i32, u64>,
    groups: BTreeSet<i32>,
    own_group: i32,
}

impl Tracker {
    fn new(root: i32) -> Tracker {
        Tracker {
            root,
            own_group: nix::unistd::getpgrp().as_raw(),
            ..Tracker::default()
        }
    }

    /// Remembers the current descendants of the root (and of every process
    /// seen before, so orphans stay tracked) and their groups.
    fn walk(&mut self) {
        let stats: Vec<(i32, Stat)> = all_pids()
            .into_iter()
            .filter_map(|p| Some((p, read_stat(p)?)))
            .collect();
        let mut changed = true;
        while changed {
            changed = false;
            for (pid, stat) in &stats {
                if self.seen.get(pid) == Some(&stat.start) {
                    continue;
                }
                let related = *pid == self.root
                    || self.seen.contains_key(&stat.ppid)
                    || (stat.pgrp != self.own_group && self.groups.contains(&stat.pgrp));
                if related {
                    self.seen.insert(*pid, stat.start);
                    if stat.pgrp != self.own_group {
                        self.groups.insert(stat.pgrp);
                    }
                    changed = true;
                }
            }
        }
    }

    /// Remembered processes still alive (not zombies), and stopped ones.
    fn survivors(&self) -> (Vec<String>, Vec<String>) {
        let mut alive = Vec::new();
        let mut stopped = Vec::new();
        for pid in all_pids() {
            let Some(stat) = read_stat(pid) else { continue };
            let ours = self.seen.get(&pid) == Some(&stat.start)
                || (stat.pgrp != self.own_group && self.groups.contains(&stat.pgrp));
            if !ours || matches!(stat.state, 'Z' | 'X') {
                continue;
            }
            let line = format!("{pid} [{}] {}", stat.state, comm(pid));
            if matches!(stat.state, 't' | 'T') {
                stopped.push(line.clone());
            }
            alive.push(line);
        }
        (alive, stopped)
    }
}

// ---- leftovers ----

fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Entries of the cache root and of its subdirectories (`kernels/x`).
fn cache_names(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in dir_names(root) {
        let path = root.join(&name);
        if path.is_dir() && !name.starts_with('.') {
            out.extend(dir_names(&path).into_iter().map(|n| format!("{name}/{n}")));
        }
        out.insert(name);
    }
    out
}

/// The cache root runq uses with the case's environment.
fn cache_root(case: &Case) -> PathBuf {
    let var = |name: &str| {
        case.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| std::ffi::OsString::from(v))
            .or_else(|| std::env::var_os(name))
    };
    if let Some(dir) = var("RUNQ_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("runq");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/runq")
}

/// Directories where cgroup run roots may be made: the top of each
/// hierarchy and this process's cgroup in it.
fn cgroup_parents() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let own: Vec<String> = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string))
        .collect();
    for mount in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten() {
        let Ok(mount) = mount else { continue };
        let base = mount.path();
        out.push(base.clone());
        for path in &own {
            let dir = base.join(path.trim_start_matches('/'));
            if dir.is_dir() && !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    if Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
        out.push(PathBuf::from("/sys/fs/cgroup"));
    }
    out
}

fn owner_of(root_name: &str) -> Option<i32> {
    let rest = root_name.strip_prefix("runq-")?;
    rest.split('-').next()?.parse().ok()
}

/// `runq-<pid>` roots of remembered pids.
fn cgroup_roots_of(tracker: &Tracker) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for parent in cgroup_parents() {
        for name in dir_names(&parent) {
            if owner_of(&name).is_some_and(|pid| tracker.seen.contains_key(&pid)) {
                out.push(parent.join(name));
            }
        }
    }
    out
}

/// The private temporary directory runq gets in a case (TMPDIR), so that
/// every new entry in it is runq's, whatever else runs on the machine.
fn tmp_dir(case: &Case) -> PathBuf {
    let dir = scratch().join(format!("tmp-{}", case.name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Before {
    tmp_dir: PathBuf,
    cache_root: PathBuf,
    shm: BTreeSet<String>,
    system_tmp: BTreeSet<String>,
    tmp: BTreeSet<String>,
    cache: BTreeSet<String>,
}

impl Before {
    fn take(case: &Case) -> Before {
        let cache_root = cache_root(case);
        let tmp_dir = tmp_dir(case);
        Before {
            shm: dir_names(Path::new("/dev/shm")),
            system_tmp: dir_names(Path::new("/tmp")),
            tmp: dir_names(&tmp_dir),
            cache: cache_names(&cache_root),
            cache_root,
            tmp_dir,
        }
    }

    /// New entries left behind by this trial. After SIGKILL, temporary
    /// files named by a dead pid of the tree are allowed: the next start
    /// reaps them, as it reaps cgroup roots.
    fn leftovers(&self, tracker: &Tracker, killed: bool) -> Vec<String> {
        let names_a_pid = |name: &str| {
            name.split(|c: char| !c.is_ascii_digit())
                .filter_map(|d| d.parse::<i32>().ok())
                .any(|pid| tracker.seen.contains_key(&pid))
        };
        let mut out = Vec::new();
        for name in dir_names(Path::new("/dev/shm")).difference(&self.shm) {
            if names_a_pid(name) {
                out.push(format!("/dev/shm/{name}"));
            }
        }
        let temporary = |name: &str| {
            let base = name.rsplit('/').next().unwrap_or(name);
            (base.starts_with("runq") || base.starts_with(".tmp")) && !(killed && names_a_pid(base))
        };
        for name in dir_names(&self.tmp_dir).difference(&self.tmp) {
            if !(killed && names_a_pid(name)) {
                out.push(format!("{}/{name}", self.tmp_dir.display()));
            }
        }
        // Anything runq put in /tmp despite TMPDIR, named by its pid.
        for name in dir_names(Path::new("/tmp")).difference(&self.system_tmp) {
            if name.starts_with("runq") && names_a_pid(name) {
                out.push(format!("/tmp/{name}"));
            }
        }
        for name in cache_names(&self.cache_root).difference(&self.cache) {
            if temporary(name) {
                out.push(format!("{}/{name}", self.cache_root.display()));
            }
        }
        out
    }
}

// ---- one trial ----

/// A subcommand under test.
struct Case {
    name: &'static str,
    args: Vec<String>,
    /// Exit code expected after SIGINT/SIGTERM: `None` means 128+signal.
    interrupt_exit: Option<i32>,
    /// Delays are drawn from this range (ms after the start).
    delay_ms: (u64, u64),
    /// Longest runq may take to end after the signal.
    end_within: Duration,
    env: Vec<(String, String)>,
}

fn case(name: &'static str, args: &[&str], delay_ms: (u64, u64)) -> Case {
    Case {
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        interrupt_exit: Some(3),
        delay_ms,
        end_within: Duration::from_secs(15),
        env: Vec::new(),
    }
}

struct Outcome {
    line: String,
    failures: Vec<String>,
}

fn spawn(case: &Case, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let mut cmd = Command::new(RUNQ);
    cmd.args(&case.args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUNQ_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    cmd.env("TMPDIR", tmp_dir(case));
    for (k, v) in &case.env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("starting runq")
}

fn trial(case: &Case, signal: Signal, delay: Duration) -> Outcome {
    let before = Before::take(case);
    let log = scratch().join(format!("{}-{signal}.log", case.name));
    let mut child = spawn(case, &log);
    let mut tracker = Tracker::new(child.id() as i32);
    let started = Instant::now();
    let mut status = None;
    while started.elapsed() < delay {
        tracker.walk();
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(WALK_EVERY);
    }
    let signalled = status.is_none();
    if signalled {
        tracker.walk();
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    }
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = status.or_else(|| child.try_wait().unwrap()) {
            break Some(s);
        }
        if sent.elapsed() > case.end_within {
            break None;
        }
        tracker.walk();
        std::thread::sleep(WALK_EVERY);
    };
    let mut failures = Vec::new();
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Outcome {
            line: format!("{} {signal} {delay:?}: did not end", case.name),
            failures: vec![format!(
                "{} {signal}: runq did not end within {:?}",
                case.name, case.end_within
            )],
        };
    };
    let ended = Instant::now();
    let (alive, stopped) = loop {
        let (alive, stopped) = tracker.survivors();
        if alive.is_empty() || ended.elapsed() > GRACE {
            break (alive, stopped);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let what = format!("{} {signal} at {delay:?}", case.name);
    if !alive.is_empty() {
        failures.push(format!(
            "{what}: still alive {GRACE:?} after runq ended: {alive:?}"
        ));
        for line in &alive {
            if let Some(pid) = line.split(' ').next().and_then(|p| p.parse().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    if !stopped.is_empty() {
        failures.push(format!("{what}: stopped tracees: {stopped:?}"));
    }
    use std::os::unix::process::ExitStatusExt;
    let outcome = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "?".into(),
    };
    if signalled {
        let expected = match signal {
            Signal::SIGKILL => None,
            _ => Some(case.interrupt_exit.unwrap_or(128 + signal as i32)),
        };
        match expected {
            None if status.signal() != Some(libc::SIGKILL) => {
                failures.push(format!("{what}: ended with {outcome}, not by SIGKILL"))
            }
            Some(code) if status.code() != Some(code) => failures.push(format!(
                "{what}: ended with {outcome}, expected exit {code}; output:\n{}",
                tail(&log_text)
            )),
            _ => {}
        }
    }
    let roots = cgroup_roots_of(&tracker);
    if !roots.is_empty() {
        next_run();
        let left = cgroup_roots_of(&tracker);
        if !left.is_empty() {
            failures.push(format!(
                "{what}: cgroup roots left after the next run: {left:?}"
            ));
        }
    }
    let leftovers = loop {
        let left = before.leftovers(&tracker, signalled && signal == Signal::SIGKILL);
        if left.is_empty() || ended.elapsed() > GRACE {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !leftovers.is_empty() {
        failures.push(format!("{what}: left behind: {leftovers:?}"));
    }
    let line = format!(
        "faults: {:<20} {signal:<8} {:>5} ms -> {:<10} {} processes seen, {}",
        case.name,
        delay.as_millis(),
        if signalled {
            outcome
        } else {
            format!("{outcome} (ended before the signal)")
        },
        tracker.seen.len(),
        if failures.is_empty() { "ok" } else { "FAILED" }
    );
    Outcome { line, failures }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The next run, which must reap the roots of dead runs.
fn next_run() {
    let status = Command::new(RUNQ)
        .args(["run", "steady", "--duration", "100ms", "--quiet"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("starting the next run");
    assert!(status.code().is_some(), "the next run was killed: {status}");
}

/// Runs every signal `per_signal` times at seeded delays; panics with all
/// failures at the end.
fn campaign(case: &Case, signals: &[Signal], per_signal: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(campaign_seed() ^ hash(case.name));
    let mut failures = Vec::new();
    let mut table = BTreeMap::new();
    for &signal in signals {
        for _ in 0..per_signal {
            let delay = Duration::from_millis(rng.gen_range(case.delay_ms.0..=case.delay_ms.1));
            let outcome = trial(case, signal, delay);
            println!("{}", outcome.line);
            let entry = table.entry(signal.to_string()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += usize::from(!outcome.failures.is_empty());
            failures.extend(outcome.failures);
        }
    }
    for (signal, (trials, failed)) in &table {
        println!(
            "faults table: {:<20} {signal:<8} {trials} trials, {failed} failed",
            case.name
        );
    }
    assert!(
        failures.is_empty(),
        "seed {}: {} failure(s):\n{}",
        campaign_seed(),
        failures.len(),
        failures.join("\n")
    );
}

fn hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

const ALL: [Signal; 3] = [Signal::SIGKILL, Signal::SIGINT, Signal::SIGTERM];

// ---- the cases ----

#[test]
fn run_scenario_under_signals() {
    let case = case(
        "run",
        &["run", "steady", "--duration", "5s", "--quiet"],
        (150, 1500),
    );
    campaign(&case, &ALL, 2);
}

#[test]
fn run_payload_scenario_under_signals() {
    if !tool_present("cyclictest", "install rt-tests") {
        return;
    }
    let case = case(
        "run-payload",
        &["run", "scenarios/payload_cyclictest.toml", "--quiet"],
        (300, 2000),
    );
    campaign(&case, &ALL, 2);
}

#[test]
fn workload_fork_under_signals() {
    let case = case(
        "workload-fork",
        &[
            "workload",
            "--work",
            "futex_ping_pong",
            "--workers",
            "4",
            "--duration",
            "5s",
        ],
        (150, 1200),
    );
    campaign(&case, &ALL, 2);
}

#[test]
fn workload_thread_under_signals() {
    let case = case(
        "workload-thread",
        &[
            "workload",
            "--work",
            "pipe_io",
            "--workers",
            "4",
            "--clone",
            "thread",
            "--duration",
            "5s",
        ],
        (150, 1200),
    );
    campaign(&case, &ALL, 2);
}

#[test]
fn explore_under_signals() {
    let case = case(
        "explore",
        &["explore", "explore_cpusets", "--seeds", "3", "--keep-going"],
        (150, 2500),
    );
    campaign(&case, &ALL, 2);
}

/// A shell tree with background members, a daemonized one (setsid) and a
/// foreground one, all exec'd programs: without --follow-exec runq detaches
/// from each at its exec.
const TREE: &str = "sleep 30 & sleep 31 & setsid sleep 32 & sh -c 'sleep 33; true'; true";

#[test]
fn trace_detached_tree_under_signals() {
    let mut case = case("trace", &["trace", "--", "sh", "-c", TREE], (150, 700));
    case.interrupt_exit = None;
    campaign(&case, &ALL, 2);
}

#[test]
fn trace_follow_exec_under_signals() {
    let mut case = case(
        "trace-follow-exec",
        &["trace", "--follow-exec", "--", "sh", "-c", TREE],
        (150, 700),
    );
    case.interrupt_exit = None;
    campaign(&case, &ALL, 2);
}

#[test]
fn vm_under_signals() {
    if !tool_present("qemu-system-x86_64", "install qemu-system-x86") {
        return;
    }
    let has_kernel = dir_names(Path::new("/boot"))
        .iter()
        .any(|n| n.starts_with("vmlinuz-"));
    if !has_kernel && std::env::var_os("RUNQ_KERNEL").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no /boot/vmlinuz-*: install linux-image-amd64"
        );
        eprintln!("SKIPPED: no kernel to boot (install linux-image-amd64)");
        return;
    }
    // The base image is cached where tests/vm.rs caches it.
    let mut case = case(
        "vm",
        &[
            "vm",
            "--timeout",
            "120s",
            "--",
            "workload",
            "--duration",
            "60s",
        ],
        (1500, 6000),
    );
    case.end_within = Duration::from_secs(30);
    case.env = vec![(
        "XDG_CACHE_HOME".into(),
        format!("{}/vm-cache", env!("CARGO_TARGET_TMPDIR")),
    )];
    campaign(&case, &[Signal::SIGKILL, Signal::SIGINT], 1);
}
