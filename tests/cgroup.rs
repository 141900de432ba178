//! Cgroups on real hierarchies: the host's (v1 here: cpuset, cpu, cpuacct)
//! and a cgroup2 hierarchy mounted by the test itself.
//!
//! Needs root. On a hybrid host the cgroup2 hierarchy has no cpuset or cpu
//! controller (they are bound to v1), so the v2 tests cover creation, moves,
//! threaded placement, listing, removal and stale cleanup; cpuset and weight
//! on v2 need a pure-v2 kernel and are exercised by the VM mode.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runq::cgroup::{pid_alive, CgroupManager, CgroupVersion};
use runq::error::{exit_code_for, EXIT_BAD_INPUT, EXIT_ENVIRONMENT};

mod common;

/// A child process killed and reaped on drop.
struct Proc(Child);

impl Proc {
    fn sleep() -> Proc {
        Proc(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawning sleep"),
        )
    }

    /// This test binary re-run as a helper with `threads` extra threads.
    fn threaded(threads: usize) -> Proc {
        let child = helper_command(("RUNQ_CGROUP_HELPER_THREADS", &threads.to_string()))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning the helper");
        let proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        // The test harness starts its threads before the helper body runs,
        // so once the helper's named threads exist the set is final.
        while proc.helper_threads() < threads {
            assert!(
                Instant::now() < deadline,
                "helper never started its threads"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        proc
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Threads named [`HELPER_THREAD`] in the process.
    fn helper_threads(&self) -> usize {
        self.tids()
            .iter()
            .filter(|tid| {
                fs::read_to_string(format!("/proc/{}/task/{tid}/comm", self.pid()))
                    .is_ok_and(|comm| comm.trim() == HELPER_THREAD)
            })
            .count()
    }

    fn tids(&self) -> Vec<i32> {
        let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        tids.sort_unstable();
        tids
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test the helper processes re-run (with `--exact`): it starts with
/// [`helper_dispatch`], which turns the process into the helper an
/// environment variable asks for and never returns to the test harness.
/// Without those variables it is an ordinary test.
const HELPER_CARRIER: &str = "detect_picks_the_host_interface_and_owns_a_run_root";

/// Name of the threads a threaded helper starts.
const HELPER_THREAD: &str = "cg-helper";

/// This test binary re-run as a helper process, selected by `env`.
fn helper_command(env: (&str, &str)) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", HELPER_CARRIER, "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdin(Stdio::null());
    command
}

/// The body of the helper processes [`Proc::threaded`],
/// [`killed_run_leaves_a_root_the_next_run_removes`] and
/// [`detect_without_privileges_is_an_environment_error`] start; returns
/// only when no helper variable is set.
fn helper_dispatch() {
    if let Ok(count) = std::env::var("RUNQ_CGROUP_HELPER_THREADS") {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).unwrap();
        for _ in 0..count.parse::<usize>().unwrap() {
            std::thread::Builder::new()
                .name(HELPER_THREAD.into())
                .spawn(|| loop {
                    std::thread::park();
                })
                .unwrap();
        }
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(0);
    }
    if std::env::var("RUNQ_CGROUP_HELPER_DETECT").is_ok() {
        // Reports how detect() fails, through the exit code and stderr.
        match CgroupManager::detect() {
            Ok(_) => std::process::exit(0),
            Err(err) => {
                eprintln!("DETECT-ERROR: {err:#}");
                std::process::exit(exit_code_for(&err));
            }
        }
    }
    if let Ok(out) = std::env::var("RUNQ_CGROUP_HELPER_RUN") {
        // A run that owns cgroups, sits inside one, and is then killed.
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).unwrap();
        let manager = CgroupManager::detect().unwrap();
        manager.create("w/inner").unwrap();
        manager
            .move_procs("w/inner", &[std::process::id() as i32])
            .unwrap();
        let paths: Vec<String> = manager
            .paths("")
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        fs::write(format!("{out}.tmp"), paths.join("\n")).unwrap();
        fs::rename(format!("{out}.tmp"), &out).unwrap();
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(0);
    }
}

fn status_field(pid: i32, field: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim_start_matches(':').trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn affinity(pid: i32) -> Vec<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(pid)).unwrap();
    (0..nix::sched::CpuSet::count())
        .filter(|c| set.is_set(*c).unwrap())
        .collect()
}

fn cgroup_line(pid: i32, controller: &str) -> String {
    cgroup_line_of(&format!("/proc/{pid}/cgroup"), controller)
}

/// The line of a `/proc/.../cgroup` file for `controller` (by whole name),
/// or the unified (`0::`) line when `controller` is empty.
fn cgroup_line_of(file: &str, controller: &str) -> String {
    let text = fs::read_to_string(file).unwrap();
    text.lines()
        .find(|l| {
            let parts: Vec<&str> = l.splitn(3, ':').collect();
            parts[1].split(',').any(|c| c == controller)
                || (controller.is_empty() && parts[0] == "0")
        })
        .unwrap_or_else(|| panic!("no {controller} line in {file}:\n{text}"))
        .to_string()
}

/// `usage_usec` of a cgroup's CPU statistics.
trait UsageUsec {
    fn stat_usage_usec(&self, cgroup: &str) -> u64;
}

impl UsageUsec for CgroupManager {
    fn stat_usage_usec(&self, cgroup: &str) -> u64 {
        let stat = self.cpu_stat(cgroup).unwrap();
        *stat
            .get("usage_usec")
            .unwrap_or_else(|| panic!("no usage_usec in {stat:?}"))
    }
}

fn host_manager() -> CgroupManager {
    CgroupManager::detect().expect("cgroups must be usable on this host (run as root)")
}

/// The version the host should get: v2 only when the unified root offers
/// cpuset and cpu.
fn expected_host_version() -> CgroupVersion {
    let controllers = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if has("cpuset") && has("cpu") {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// Two usable CPUs from the run root's set (fails loudly on a 1-CPU host).
fn two_cpus(manager: &CgroupManager) -> (usize, usize) {
    let cpus = manager.effective_cpus("").unwrap();
    assert!(
        cpus.len() >= 2,
        "these tests need at least 2 CPUs, the run root has {cpus:?}"
    );
    (cpus[0], cpus[1])
}

#[test]
fn detect_picks_the_host_interface_and_owns_a_run_root() {
    helper_dispatch();
    let mut manager = host_manager();
    assert_eq!(manager.version(), expected_host_version());
    let pid = std::process::id();
    assert!(
        manager.root_name() == format!("runq-{pid}")
            || manager.root_name().starts_with(&format!("runq-{pid}-")),
        "{}",
        manager.root_name()
    );
    let roots = manager.paths("");
    assert!(!roots.is_empty());
    for root in &roots {
        assert!(root.is_dir(), "{} missing", root.display());
        assert!(root.ends_with(manager.root_name()));
    }
    if manager.version() == CgroupVersion::V1 {
        // cpuset and cpu hierarchies at least (cpuacct too when apart):
        // the controllers of the mounts the roots live in, by whole name.
        let mounts = runq::cgroup::detect::read_mounts().unwrap();
        let controllers: Vec<&str> = roots
            .iter()
            .flat_map(|root| {
                let mount = mounts
                    .iter()
                    .filter(|m| !m.unified && root.starts_with(&m.mount_point))
                    .max_by_key(|m| m.mount_point.as_os_str().len())
                    .unwrap_or_else(|| panic!("{} is on no v1 mount", root.display()));
                mount.controllers.iter().map(String::as_str)
            })
            .collect();
        for wanted in ["cpuset", "cpu"] {
            assert!(controllers.contains(&wanted), "{wanted}: {controllers:?}");
        }
    }
    manager.teardown().unwrap();
    for root in &roots {
        assert!(!root.exists(), "{} left behind", root.display());
    }
}

#[test]
fn nested_cpusets_restrict_moved_processes_and_refit_children() {
    let manager = host_manager();
    let (first, second) = two_cpus(&manager);
    manager.create("outer/inner").unwrap();
    for path in manager.paths("outer/inner") {
        assert!(path.is_dir(), "{}", path.display());
    }
    // v1 directories start with empty cpusets: runq initialised them.
    assert_eq!(
        manager.effective_cpus("outer/inner").unwrap(),
        manager.effective_cpus("").unwrap()
    );

    manager.set_cpuset("outer", &[first, second], None).unwrap();
    manager.set_cpuset("outer/inner", &[first], None).unwrap();
    let sleeper = Proc::sleep();
    manager.move_procs("outer/inner", &[sleeper.pid()]).unwrap();
    assert_eq!(manager.procs("outer/inner").unwrap(), vec![sleeper.pid()]);
    assert_eq!(affinity(sleeper.pid()), vec![first]);
    assert_eq!(
        status_field(sleeper.pid(), "Cpus_allowed_list"),
        first.to_string()
    );
    assert_eq!(manager.effective_cpus("outer/inner").unwrap(), vec![first]);

    // Narrowing the parent away from the child's CPU re-fits the child.
    manager.set_cpuset("outer", &[second], None).unwrap();
    assert_eq!(manager.effective_cpus("outer").unwrap(), vec![second]);
    assert_eq!(manager.effective_cpus("outer/inner").unwrap(), vec![second]);
    assert_eq!(affinity(sleeper.pid()), vec![second]);

    // Clearing returns to the parent's effective set, level by level.
    manager.clear_cpuset("outer").unwrap();
    manager.clear_cpuset("outer/inner").unwrap();
    let all = manager.effective_cpus("").unwrap();
    assert_eq!(manager.effective_cpus("outer/inner").unwrap(), all);
    assert_eq!(affinity(sleeper.pid()), all);

    // Swapping two siblings' sets (the SwapCpusets op) works in either order.
    manager.create("left").unwrap();
    manager.create("right").unwrap();
    manager.set_cpuset("left", &[first], None).unwrap();
    manager.set_cpuset("right", &[second], None).unwrap();
    manager.set_cpuset("left", &[second], None).unwrap();
    manager.set_cpuset("right", &[first], None).unwrap();
    assert_eq!(manager.effective_cpus("left").unwrap(), vec![second]);
    assert_eq!(manager.effective_cpus("right").unwrap(), vec![first]);
}

#[test]
fn weight_maps_to_shares_or_cpu_weight() {
    let manager = host_manager();
    manager.create("weighted").unwrap();
    let (file, checks): (&str, &[(u32, &str)]) = match manager.version() {
        CgroupVersion::V1 => (
            "cpu.shares",
            &[(100, "1024"), (200, "2048"), (1, "10"), (10_000, "102400")],
        ),
        CgroupVersion::V2 => (
            "cpu.weight",
            &[(100, "100"), (200, "200"), (1, "1"), (10_000, "10000")],
        ),
    };
    let dir = manager
        .paths("weighted")
        .into_iter()
        .find(|p| p.join(file).exists())
        .expect("a hierarchy with the cpu controller");
    for (weight, expected) in checks {
        manager.set_weight("weighted", *weight).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(file)).unwrap().trim(),
            *expected,
            "weight {weight}"
        );
    }
    for bad in [0, 10_001] {
        let err = manager.set_weight("weighted", bad).unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err:#}");
        assert!(format!("{err:#}").contains("1..=10000"), "{err:#}");
    }
}

#[test]
fn processes_and_single_threads_move_and_are_accounted() {
    let manager = host_manager();
    manager.create("procs").unwrap();
    manager.create("threads").unwrap();
    let helper = Proc::threaded(2);
    let tids = helper.tids();
    assert!(tids.len() >= 3, "{tids:?}");
    manager.move_procs("procs", &[helper.pid()]).unwrap();
    assert_eq!(manager.procs("procs").unwrap(), vec![helper.pid()]);
    assert_eq!(manager.threads("procs").unwrap(), tids);

    // One thread only; the rest of the process stays.
    let moved = *tids.iter().find(|t| **t != helper.pid()).unwrap();
    manager.move_threads("threads", &[moved]).unwrap();
    assert_eq!(manager.threads("threads").unwrap(), vec![moved]);
    assert!(!manager.threads("procs").unwrap().contains(&moved));
    let controller = if manager.version() == CgroupVersion::V1 {
        "cpuset"
    } else {
        ""
    };
    let thread_line = cgroup_line_of(
        &format!("/proc/{}/task/{moved}/cgroup", helper.pid()),
        controller,
    );
    assert!(
        thread_line.ends_with(&format!("/{}/threads", manager.root_name())),
        "{thread_line}"
    );
    let process_line = cgroup_line(helper.pid(), controller);
    assert!(
        process_line.ends_with(&format!("/{}/procs", manager.root_name())),
        "{process_line}"
    );

    // Burn some CPU inside a cgroup and see it accounted: the shell waits
    // for a line on stdin, so it is inside before it burns anything.
    manager.create("burn").unwrap();
    let mut burner = Proc(
        Command::new("sh")
            .args([
                "-c",
                "read go; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(
        manager.stat_usage_usec("burn"),
        0,
        "a new cgroup has run nothing"
    );
    manager.move_procs("burn", &[burner.pid()]).unwrap();
    assert_eq!(manager.procs("burn").unwrap(), vec![burner.pid()]);
    std::io::Write::write_all(&mut burner.0.stdin.take().unwrap(), b"go\n").unwrap();
    let status = burner.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // 200,000 shell iterations take well over 20 ms of CPU on any machine.
    let usage = manager.stat_usage_usec("burn");
    assert!(usage >= 20_000, "the burner's CPU time shows as {usage} us");

    // Moving a task that does not exist fails and names it.
    let gone = dead_pid();
    let err = manager.move_procs("procs", &[gone]).unwrap_err();
    assert!(format!("{err:#}").contains(&gone.to_string()), "{err:#}");
}

#[test]
fn remove_is_bottom_up_and_keeps_tasks_alive_in_the_parent() {
    let mut manager = host_manager();
    manager.create("a/b/c").unwrap();
    manager.create("a/d").unwrap();
    let sleeper = Proc::sleep();
    manager.move_procs("a/b/c", &[sleeper.pid()]).unwrap();
    let before = cgroup_line(
        sleeper.pid(),
        if manager.version() == CgroupVersion::V1 {
            "cpuset"
        } else {
            ""
        },
    );
    assert!(before.ends_with("/a/b/c"), "{before}");
    let paths: Vec<PathBuf> = manager.paths("a");
    manager.remove("a").unwrap();
    for path in &paths {
        assert!(!path.exists(), "{} left behind", path.display());
    }
    assert!(pid_alive(sleeper.pid()));
    let after = cgroup_line(
        sleeper.pid(),
        if manager.version() == CgroupVersion::V1 {
            "cpuset"
        } else {
            ""
        },
    );
    assert!(
        !after.contains("runq-"),
        "task not moved to the run root's parent: {after}"
    );
    // Removing again is fine; the run root stays until teardown.
    manager.remove("a").unwrap();
    assert!(manager.paths("")[0].is_dir());
    manager.move_procs("", &[sleeper.pid()]).unwrap();
    let roots = manager.paths("");
    manager.teardown().unwrap();
    for root in roots {
        assert!(!root.exists());
    }
    assert!(pid_alive(sleeper.pid()));
}

/// A pid that no process has now.
fn dead_pid() -> i32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    assert!(!pid_alive(pid));
    pid
}

/// Makes `runq-<pid>/x` by hand in every hierarchy (what a killed run leaves).
fn fake_root(parents: &[PathBuf], pid: i32) -> Vec<PathBuf> {
    let mut made = Vec::new();
    for parent in parents {
        let root = parent.join(format!("runq-{pid}"));
        fs::create_dir_all(root.join("x")).unwrap();
        made.push(root);
    }
    made
}

#[test]
fn stale_roots_of_dead_pids_are_removed_and_live_ones_kept() {
    let manager = host_manager();
    let parents = manager.root_parents();
    let sleeper = Proc::sleep();
    let live_owner = Proc::sleep();
    let dead = dead_pid();
    let stale = fake_root(&parents, dead);
    // A task left inside a stale cgroup (the cpu hierarchy needs no setup).
    let holder = stale
        .iter()
        .find(|root| !root.join("x/cpuset.cpus").exists())
        .unwrap_or(&stale[0])
        .join("x");
    if !holder.join("cpuset.cpus").exists() {
        fs::write(holder.join("cgroup.procs"), sleeper.pid().to_string()).unwrap();
    }
    let live = fake_root(&parents, live_owner.pid());

    let removed = manager.cleanup_stale();
    for root in &stale {
        assert!(!root.exists(), "stale {} still there", root.display());
    }
    // Exactly the dead pid's roots went (other dead runs' roots may go too,
    // but never a live one's).
    let mut ours: Vec<String> = removed
        .iter()
        .filter(|r| r.ends_with(&format!("/runq-{dead}")))
        .cloned()
        .collect();
    ours.sort();
    let mut expected: Vec<String> = stale.iter().map(|r| r.display().to_string()).collect();
    expected.sort();
    assert_eq!(ours, expected, "removed: {removed:?}");
    for root in &removed {
        let name = root.rsplit('/').next().unwrap();
        let owner = runq::cgroup::root_owner_pid(name).expect("a run root");
        assert!(!pid_alive(owner), "{root} of a live pid removed");
    }
    for root in &live {
        assert!(
            root.is_dir(),
            "root of live pid {} removed",
            live_owner.pid()
        );
    }
    assert!(
        pid_alive(sleeper.pid()),
        "a task of a stale cgroup was killed"
    );

    // detect() cleans too: once the owner dies, its roots go.
    drop(live_owner);
    let second = host_manager();
    for root in &live {
        assert!(!root.exists(), "{} not cleaned by detect()", root.display());
    }
    drop(second);
}

/// A run that died but was not reaped yet (a zombie, as an exploration
/// child is until its parent waits) owns nothing: its roots are stale.
#[test]
fn stale_roots_of_zombie_pids_are_removed() {
    let manager = host_manager();
    let parents = manager.root_parents();
    let mut zombie = Command::new("true").spawn().unwrap();
    let pid = zombie.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while runq::process::stat(pid).map(|s| s.state) != Some('Z') {
        assert!(Instant::now() < deadline, "pid {pid} never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    let roots = fake_root(&parents, pid);
    assert!(!pid_alive(pid), "a zombie counted as alive");
    manager.cleanup_stale();
    let left: Vec<_> = roots.iter().filter(|r| r.exists()).collect();
    zombie.wait().unwrap();
    for root in &roots {
        let _ = fs::remove_dir(root.join("x"));
        let _ = fs::remove_dir(root);
    }
    assert!(left.is_empty(), "roots of zombie {pid} kept: {left:?}");
}

#[test]
fn bad_input_is_rejected_with_exit_code_2_and_leaves_nothing() {
    let manager = host_manager();
    manager.create("cg").unwrap();
    let topology = runq::topology::Topology::host().unwrap();
    let outside = topology.cpu_ids().iter().max().unwrap() + 1;
    let err = manager.set_cpuset("cg", &[outside], None).unwrap_err();
    let text = format!("{err:#}");
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{text}");
    assert!(
        text.contains("\"cg\"") && text.contains(&outside.to_string()),
        "{text}"
    );
    assert_eq!(
        manager.effective_cpus("cg").unwrap(),
        manager.effective_cpus("").unwrap()
    );

    let err = manager.set_cpuset("cg", &[], None).unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err:#}");
    let err = manager.set_cpuset("cg", &[0], Some(&[4096])).unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err:#}");

    let err = manager.set_cpuset("missing", &[0], None).unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err:#}");
    assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    for bad in [
        "../escape",
        "a/../../b",
        "/abs",
        "cpu.shares",
        "with space",
        "tasks",
    ] {
        let err = manager.create(bad).unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{bad}: {err:#}");
        for parent in manager.root_parents() {
            assert!(!parent.join("escape").exists() && !parent.join("b").exists());
        }
    }
    let err = manager.move_procs("cg", &[0]).unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err:#}");
    assert!(manager.procs("cg").unwrap().is_empty());
}

#[test]
fn managers_are_independent_and_forked_children_do_not_tear_down() {
    let first = host_manager();
    let second = host_manager();
    assert_ne!(first.root_name(), second.root_name());
    first.create("x").unwrap();
    second.create("x").unwrap();
    // A forked child dropping its copy must leave the parent's cgroups.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(first);
            drop(second);
            unsafe { libc::_exit(0) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            nix::sys::wait::waitpid(child, None).unwrap();
        }
    }
    assert!(first.paths("x")[0].is_dir());
    let paths = second.paths("");
    drop(second);
    assert!(!paths[0].exists());
    assert!(first.paths("x")[0].is_dir());
}

// ---- cgroup v2 on a cgroup2 mount made by the test ----

/// A cgroup2 hierarchy mounted on a temporary directory; unmounted (and the
/// directory removed) on drop, even when the test fails.
struct V2Mount {
    dir: tempfile::TempDir,
}

impl V2Mount {
    fn new() -> V2Mount {
        let dir = tempfile::Builder::new()
            .prefix("runq-cg2-test")
            .tempdir()
            .unwrap();
        nix::mount::mount(
            Some("none"),
            dir.path(),
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mounting cgroup2 (needs root and a kernel with cgroup2)");
        V2Mount { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for V2Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn v2_manager(mount: &V2Mount) -> CgroupManager {
    CgroupManager::with_backend(CgroupVersion::V2, &[mount.path().to_path_buf()])
        .expect("v2 manager on the test mount")
}

fn cgroup_type(dir: &Path) -> String {
    fs::read_to_string(dir.join("cgroup.type"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn v2_create_move_threaded_remove_on_a_real_cgroup2_mount() {
    let mount = V2Mount::new();
    let mut manager = v2_manager(&mount);
    assert_eq!(manager.version(), CgroupVersion::V2);
    manager.create("a/b").unwrap();
    let sleeper = Proc::sleep();
    manager.move_procs("a/b", &[sleeper.pid()]).unwrap();
    assert_eq!(manager.procs("a/b").unwrap(), vec![sleeper.pid()]);
    assert!(cgroup_line(sleeper.pid(), "").ends_with(&format!("{}/a/b", manager.root_name())));
    let stat = manager.cpu_stat("a/b").unwrap();
    assert!(stat.contains_key("usage_usec"), "{stat:?}");

    // Every run cgroup is threaded; the run root is the thread root.
    let root_dir = manager.paths("")[0].clone();
    assert_eq!(cgroup_type(&root_dir), "domain threaded");
    assert_eq!(cgroup_type(&root_dir.join("a")), "threaded");
    assert_eq!(cgroup_type(&root_dir.join("a/b")), "threaded");

    // Single threads beside a sibling that holds a whole process.
    manager.create("t/one").unwrap();
    manager.create("t/two").unwrap();
    let helper = Proc::threaded(2);
    let workers: Vec<i32> = helper
        .tids()
        .into_iter()
        .filter(|t| *t != helper.pid())
        .collect();
    manager.move_threads("t/one", &[workers[0]]).unwrap();
    manager.move_threads("t/two", &[workers[1]]).unwrap();
    assert_eq!(manager.threads("t/one").unwrap(), vec![workers[0]]);
    assert_eq!(manager.threads("t/two").unwrap(), vec![workers[1]]);
    assert_eq!(manager.procs("t/one").unwrap(), vec![helper.pid()]);
    // What snapshots use on any cgroup directory, threaded or not.
    assert_eq!(
        runq::cgroup::procs_of_dir(&manager.paths("t/one")[0]).unwrap(),
        vec![helper.pid()]
    );
    let thread_cgroup =
        fs::read_to_string(format!("/proc/{}/task/{}/cgroup", helper.pid(), workers[0])).unwrap();
    let unified = thread_cgroup
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap();
    assert!(
        unified.ends_with(&format!("/{}/t/one", manager.root_name())),
        "{unified}"
    );
    // The rest of the process waits in the run root.
    assert!(manager.threads("").unwrap().contains(&helper.pid()));

    // Processes in an inner cgroup and in its child at once (allowed in a
    // threaded subtree, unlike v2 domain cgroups).
    let other = Proc::sleep();
    manager.move_procs("t", &[other.pid()]).unwrap();
    assert_eq!(manager.procs("t").unwrap(), vec![other.pid()]);
    let third = Proc::sleep();
    manager.create("t/one/deeper").unwrap();
    manager.move_procs("t/one/deeper", &[third.pid()]).unwrap();
    assert_eq!(manager.procs("t/one/deeper").unwrap(), vec![third.pid()]);

    let root = manager.paths("")[0].clone();
    manager.teardown().unwrap();
    assert!(!root.exists(), "v2 run root left behind");
    for pid in [sleeper.pid(), helper.pid(), other.pid(), third.pid()] {
        assert!(pid_alive(pid));
        assert_eq!(
            cgroup_line(pid, ""),
            cgroup_line(std::process::id() as i32, ""),
            "task {pid} not returned to the parent"
        );
    }
}

#[test]
fn v2_stale_roots_and_missing_controllers() {
    let mount = V2Mount::new();
    let manager = v2_manager(&mount);
    let dead = dead_pid();
    let stale = fake_root(&manager.root_parents(), dead);
    let sleeper = Proc::sleep();
    fs::write(stale[0].join("x/cgroup.procs"), sleeper.pid().to_string()).unwrap();
    manager.cleanup_stale();
    assert!(!stale[0].exists(), "stale v2 root not removed");
    assert!(pid_alive(sleeper.pid()));

    // On this hybrid host cpuset and cpu are bound to v1: say so (exit 3).
    let offered = fs::read_to_string(mount.path().join("cgroup.controllers")).unwrap();
    manager.create("c").unwrap();
    if !offered.split_whitespace().any(|c| c == "cpuset") {
        eprintln!(
            "NOTE: cgroup2 here offers [{}]: cpuset and cpu.weight on v2 need a pure-v2 kernel \
             (covered by the VM mode)",
            offered.trim()
        );
        let err = manager.set_cpuset("c", &[0], None).unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_ENVIRONMENT, "{err:#}");
        assert!(
            format!("{err:#}").contains("cpuset controller is not available"),
            "{err:#}"
        );
        let err = manager.set_weight("c", 100).unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_ENVIRONMENT, "{err:#}");
        // Without a cpuset controller nothing restricts CPUs.
        let online = runq::topology::Topology::host().unwrap().cpu_ids();
        assert_eq!(manager.effective_cpus("c").unwrap(), online);
    } else {
        manager.set_cpuset("c", &[0], None).unwrap();
        assert_eq!(manager.effective_cpus("c").unwrap(), vec![0]);
        manager.set_weight("c", 300).unwrap();
        let weight = fs::read_to_string(manager.paths("c")[0].join("cpu.weight")).unwrap();
        assert_eq!(weight.trim(), "300");
    }
}

#[test]
fn with_backend_rejects_paths_that_are_not_cgroup_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        CgroupManager::with_backend(CgroupVersion::V2, &[dir.path().to_path_buf()]).unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err:#}");
    let text = format!("{err:#}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    // A v1 hierarchy (on a hybrid host) or no directory at all (on a pure
    // v2 one) is no cgroup2 mount either.
    let err =
        CgroupManager::with_backend(CgroupVersion::V2, &[PathBuf::from("/sys/fs/cgroup/cpu")])
            .unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err:#}");
    assert!(format!("{err:#}").contains("/sys/fs/cgroup/cpu"), "{err:#}");
}

#[test]
fn killed_run_leaves_a_root_the_next_run_removes() {
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("paths");
    let mut run = Proc(
        helper_command(("RUNQ_CGROUP_HELPER_RUN", out.to_str().unwrap()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.exists() {
        assert!(
            Instant::now() < deadline,
            "the killed run never set up its cgroups"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let roots: Vec<PathBuf> = fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    for root in &roots {
        assert!(root.join("w/inner").is_dir(), "{} missing", root.display());
    }
    run.0.kill().unwrap();
    run.0.wait().unwrap();
    // SIGKILL runs no teardown; only a later run can remove the root.
    // The next run (detect) removes what the killed one left.
    let next = host_manager();
    for root in &roots {
        assert!(!root.exists(), "{} survived the next run", root.display());
    }
    drop(next);
}

#[test]
fn v1_with_backend_uses_only_the_given_hierarchies() {
    if expected_host_version() != CgroupVersion::V1 {
        common::skip(
            "v1_with_backend_uses_only_the_given_hierarchies",
            "this host has no cgroup v1 cpuset hierarchy",
        );
        return;
    }
    let mounts = runq::cgroup::detect::read_mounts().unwrap();
    let cpuset = mounts
        .iter()
        .find(|m| !m.unified && m.controllers.iter().any(|c| c == "cpuset"))
        .expect("a v1 cpuset mount")
        .mount_point
        .clone();
    let manager =
        CgroupManager::with_backend(CgroupVersion::V1, std::slice::from_ref(&cpuset)).unwrap();
    assert_eq!(manager.paths("").len(), 1);
    assert!(manager.paths("")[0].starts_with(&cpuset));
    manager.create("only").unwrap();
    assert!(!manager.effective_cpus("only").unwrap().is_empty());
    let err = manager.set_weight("only", 100).unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_ENVIRONMENT, "{err:#}");
    assert!(format!("{err:#}").contains("no cpu hierarchy"), "{err:#}");
}

#[test]
fn churn_of_add_move_remove_leaves_nothing() {
    let manager = host_manager();
    let all = manager.effective_cpus("").unwrap();
    let sleeper = Proc::sleep();
    let helper = Proc::threaded(1);
    let worker = *helper.tids().iter().find(|t| **t != helper.pid()).unwrap();
    let cycles = 150;
    let mut made = Vec::new();
    for cycle in 0..cycles {
        let name = format!("churn{}/leaf", cycle % 7);
        manager.create(&name).unwrap();
        let cpu = all[cycle % all.len()];
        manager.set_cpuset(&name, &[cpu], None).unwrap();
        manager.move_procs(&name, &[sleeper.pid()]).unwrap();
        if manager.version() == CgroupVersion::V1 {
            manager.move_threads(&name, &[worker]).unwrap();
            assert_eq!(affinity(worker), vec![cpu]);
        }
        assert_eq!(affinity(sleeper.pid()), vec![cpu]);
        if cycle % 3 == 0 {
            manager.clear_cpuset(&name).unwrap();
        }
        made.extend(manager.paths(&name));
        // Remove the leaf or the whole branch, tasks still inside.
        let target = if cycle % 2 == 0 {
            name.clone()
        } else {
            format!("churn{}", cycle % 7)
        };
        manager.remove(&target).unwrap();
        assert!(pid_alive(sleeper.pid()) && pid_alive(helper.pid()));
    }
    for cycle in 0..7 {
        manager.remove(&format!("churn{cycle}")).unwrap();
    }
    for path in made {
        assert!(!path.exists(), "{} left behind", path.display());
    }
    let root = &manager.paths("")[0];
    assert!(
        runq::cgroup::child_dirs(root).is_empty(),
        "run root not empty after churn"
    );
}

/// This whole suite again inside a qemu guest whose only hierarchy is
/// cgroup2 with cpuset and cpu (the v2 cpuset and weight paths a hybrid host
/// cannot reach). Needs qemu-system-x86_64, busybox and a kernel in /boot.
#[test]
fn pure_v2_guest_runs_this_suite() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup/pure-v2-guest.sh");
    for tool in ["qemu-system-x86_64", "busybox", "cpio"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{tool} is missing: install qemu-system-x86, busybox-static and cpio (see .ci/run)"
        );
    }
    let output = Command::new(&script)
        .arg(std::env::current_exe().unwrap())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "guest run failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let controllers = text
        .lines()
        .find_map(|l| l.strip_prefix("cgroup2 controllers:"))
        .unwrap_or_else(|| panic!("guest never reported its controllers:\n{text}"));
    let controllers: Vec<&str> = controllers.split_whitespace().collect();
    for wanted in ["cpuset", "cpu"] {
        assert!(
            controllers.contains(&wanted),
            "guest cgroup2 lacks {wanted}: {controllers:?}"
        );
    }
    // Both passes (from the root and from a populated non-root cgroup),
    // each reporting the one v1-only test as skipped, loudly.
    assert_eq!(text.matches("test result: ok.").count(), 2, "{text}");
    assert_eq!(
        text.matches("SKIPPED v1_with_backend_uses_only_the_given_hierarchies")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("== from 0::/session"), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
}

#[test]
fn detect_without_privileges_is_an_environment_error() {
    use std::os::unix::process::CommandExt;
    let output = helper_command(("RUNQ_CGROUP_HELPER_DETECT", "1"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(EXIT_ENVIRONMENT), "{stderr}");
    assert!(
        stderr.contains("DETECT-ERROR") && stderr.contains("run runq as root"),
        "{stderr}"
    );
}

/// Real-time budgets are a backend operation: on v1 with RT group
/// scheduling, the cgroup and its budgetless ancestors get one top-down
/// (the run root the larger root budget), so a SCHED_FIFO task may enter;
/// on v2 there is nothing to do.
#[test]
fn rt_budgets_are_granted_down_to_the_cgroup() {
    let manager = host_manager();
    let cpu_root = manager
        .paths("")
        .into_iter()
        .find(|p| p.join("cpu.rt_runtime_us").exists());
    let Some(cpu_root) = cpu_root else {
        assert!(
            manager.grant_rt_runtime("", &[10_000]).is_ok(),
            "a backend without RT budgets must accept the request"
        );
        common::skip(
            "rt_budgets_are_granted_down_to_the_cgroup",
            "no cgroup v1 cpu hierarchy with RT group scheduling (cpu.rt_runtime_us)",
        );
        return;
    };
    manager.create("rt/leaf").unwrap();
    let budget = |rel: &str| -> u64 {
        fs::read_to_string(cpu_root.join(rel).join("cpu.rt_runtime_us"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        budget("rt/leaf"),
        0,
        "new v1 cgroups start without a budget"
    );
    manager
        .grant_rt_runtime("rt/leaf", &[30_000, 10_000])
        .unwrap();
    assert!(runq::cgroup::RT_ROOT_BUDGETS_US.contains(&budget("")));
    assert!([30_000, 10_000].contains(&budget("rt")));
    assert!([30_000, 10_000].contains(&budget("rt/leaf")));
    // A budget already given is kept.
    manager.grant_rt_runtime("rt/leaf", &[5_000]).unwrap();
    assert!([30_000, 10_000].contains(&budget("rt/leaf")));
    // Now a task inside may become SCHED_FIFO (with no budget: EPERM).
    let sleeper = Proc::sleep();
    manager.move_procs("rt/leaf", &[sleeper.pid()]).unwrap();
    let chrt = Command::new("chrt")
        .args(["-f", "-p", "1", &sleeper.pid().to_string()])
        .output()
        .expect("chrt (util-linux)");
    assert!(
        chrt.status.success(),
        "SCHED_FIFO in the granted cgroup: {}",
        String::from_utf8_lossy(&chrt.stderr)
    );
    let err = manager.grant_rt_runtime("missing", &[10_000]).unwrap_err();
    assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{err:#}");
}

#[test]
fn rt_budgets_are_a_no_op_on_v2() {
    let mount = V2Mount::new();
    let manager = v2_manager(&mount);
    manager.create("rt").unwrap();
    manager.grant_rt_runtime("rt", &[10_000]).unwrap();
    assert!(!manager.paths("rt")[0].join("cpu.rt_runtime_us").exists());
}
