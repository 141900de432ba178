//! Captures of real kernel state: a busy child process in a real cgroup,
//! on the v1 `cpu` hierarchy (when the host has one) and on cgroup2.
//! Needs root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use runq::snapshot::{
    parse_periodic_tag, summarize_phases, CaptureData, CaptureTargets, EventKind, LoadAvg,
    PeriodicCaptures, SnapshotBridge, SnapshotSection,
};

mod common;

/// Where a test cgroup goes: the mount point of a hierarchy.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Hierarchy {
    /// The v1 hierarchy with the `cpu` controller.
    V1Cpu,
    /// The cgroup2 hierarchy (`cpu.stat` is a core file there, with or
    /// without the cpu controller).
    V2,
}

impl Hierarchy {
    /// The mount point, from /proc/self/mountinfo.
    fn mount(self) -> Option<PathBuf> {
        runq::cgroup::detect::read_mounts()
            .unwrap()
            .into_iter()
            .find(|m| match self {
                Hierarchy::V1Cpu => !m.unified && m.controllers.iter().any(|c| c == "cpu"),
                Hierarchy::V2 => m.unified,
            })
            .map(|m| m.mount_point)
    }
}

/// A real cgroup and a busy child inside it, removed on drop.
struct BusyChildInCgroup {
    child: Child,
    cgroup: PathBuf,
}

impl BusyChildInCgroup {
    fn start(name: &str) -> Self {
        let hierarchy = if Hierarchy::V1Cpu.mount().is_some() {
            Hierarchy::V1Cpu
        } else {
            Hierarchy::V2
        };
        Self::start_in(hierarchy, name)
    }

    fn start_in(hierarchy: Hierarchy, name: &str) -> Self {
        let root = hierarchy
            .mount()
            .unwrap_or_else(|| panic!("no {hierarchy:?} hierarchy is mounted"));
        let cgroup = root.join(format!("runq-test-{}-{name}", std::process::id()));
        std::fs::create_dir(&cgroup).expect("create test cgroup (run as root)");
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn sh");
        std::fs::write(cgroup.join("cgroup.procs"), child.id().to_string())
            .expect("move child into cgroup");
        BusyChildInCgroup { child, cgroup }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for BusyChildInCgroup {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The cgroup can be removed once the killed child is reaped.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.cgroup).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("could not remove {}", self.cgroup.display());
    }
}

/// `/proc/loadavg` read and parsed by the test itself (not with runq's
/// parser, whose output it checks): "0.50 0.25 0.10 3/456 789".
fn loadavg_now() -> LoadAvg {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (runnable, total) = fields[3].split_once('/').unwrap();
    LoadAvg {
        one: fields[0].parse().unwrap(),
        five: fields[1].parse().unwrap(),
        fifteen: fields[2].parse().unwrap(),
        runnable: runnable.parse().unwrap(),
        total: total.parse().unwrap(),
    }
}

/// Threads of this process.
fn own_threads() -> u32 {
    std::fs::read_dir("/proc/self/task").unwrap().count() as u32
}

#[test]
fn captures_real_task_cgroup_and_load_state() {
    let busy = BusyChildInCgroup::start("state");
    let targets = CaptureTargets {
        worker_pids: vec![busy.pid()],
        cgroup_dirs: vec![busy.cgroup.clone()],
    };
    let mut bridge = SnapshotBridge::new();
    bridge.capture_scheduler("baseline", 0, &targets);
    std::thread::sleep(Duration::from_millis(300));
    let load_before = loadavg_now();
    bridge.capture_scheduler("after_busy", 1, &targets);
    let load_after = loadavg_now();
    bridge.capture_cgroup_procs("membership", 1, &targets);

    let CaptureData::Scheduler(before) = &bridge.get("baseline").unwrap().data else {
        panic!("baseline is not a scheduler capture");
    };
    let CaptureData::Scheduler(after) = &bridge.get("after_busy").unwrap().data else {
        panic!("after_busy is not a scheduler capture");
    };
    assert_eq!(after.tasks.len(), 1);
    let (t0, t1) = (&before.tasks[0], &after.tasks[0]);
    assert_eq!(t1.pid, busy.pid());
    // The child spins: it must have gained CPU time (at least 30 ms of the
    // 300 ms even on a heavily loaded 2-core machine).
    assert!(
        t1.run_time_ns >= t0.run_time_ns + 30_000_000,
        "busy child ran {} -> {} ns",
        t0.run_time_ns,
        t1.run_time_ns
    );
    assert!(
        t1.sched.contains_key("nr_switches"),
        "{:?}",
        t1.sched.keys()
    );
    assert!(t1.sched["se.sum_exec_runtime"] > 0.0);
    assert_eq!(after.cgroups.len(), 1);
    // Every key of the cgroup's cpu.stat is in the capture.
    let stat = &after.cgroups[0].stat;
    let file = std::fs::read_to_string(busy.cgroup.join("cpu.stat")).unwrap();
    for key in file.lines().filter_map(|l| l.split_whitespace().next()) {
        assert!(stat.contains_key(key), "{key} of {file} not in {stat:?}");
    }
    assert!(!stat.is_empty());
    // The captured load is /proc/loadavg of that moment: the averages move
    // only every 5 s, so they equal a reading just before or just after;
    // the task counts hold at least the busy child and this process.
    let load = after
        .loadavg
        .as_ref()
        .expect("/proc/loadavg is always there");
    for (field, got, a, b) in [
        ("one", load.one, load_before.one, load_after.one),
        ("five", load.five, load_before.five, load_after.five),
        (
            "fifteen",
            load.fifteen,
            load_before.fifteen,
            load_after.fifteen,
        ),
    ] {
        assert!(
            got == a || got == b,
            "{field}: captured {got}, read {a} and {b}"
        );
    }
    assert!(load.runnable >= 1, "{load:?}");
    assert!(load.runnable <= load.total, "{load:?}");
    assert!(load.total > own_threads(), "{load:?}");

    // /proc/schedstat exists only with CONFIG_SCHEDSTATS; either it was
    // parsed or its absence was logged.
    if Path::new("/proc/schedstat").exists() {
        assert!(!after.cpus.is_empty());
        assert!(after.cpus.iter().map(|c| c.run_time_ns).sum::<u64>() > 0);
    } else {
        assert!(after.cpus.is_empty());
        assert!(bridge.events().iter().any(
            |e| e.kind == EventKind::CaptureUnavailable && e.detail.contains("/proc/schedstat")
        ));
    }
    assert_eq!(
        after.sched_debug.is_some(),
        Path::new("/sys/kernel/debug/sched/debug").exists()
    );

    let CaptureData::CgroupProcs { cgroups } = &bridge.get("membership").unwrap().data else {
        panic!("membership is not a cgroup.procs capture");
    };
    assert_eq!(cgroups[0].pids, vec![busy.pid()]);

    let section: SnapshotSection = bridge.drain();
    let tags: Vec<_> = section.captures.iter().map(|c| c.tag.as_str()).collect();
    assert_eq!(tags, ["baseline", "after_busy", "membership"]);
    assert!(section.captures[1].elapsed_ms >= 300);
    assert_eq!(section.captures[0].step_index, 0);
    // The section round-trips through the JSON report.
    let json = serde_json::to_string(&section).unwrap();
    assert!(json.contains("\"type\":\"cgroup_procs\""));
    let back: SnapshotSection = serde_json::from_str(&json).unwrap();
    assert_eq!(back, section);
    assert!(bridge.is_empty());
}

#[test]
fn dead_worker_is_logged_as_unavailable() {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    let mut bridge = SnapshotBridge::new();
    let targets = CaptureTargets {
        worker_pids: vec![pid],
        cgroup_dirs: vec![PathBuf::from("/sys/fs/cgroup/cpu/runq-no-such-cgroup")],
    };
    bridge.capture_scheduler("gone", 1, &targets);
    let CaptureData::Scheduler(state) = &bridge.get("gone").unwrap().data else {
        panic!()
    };
    assert!(state.tasks.is_empty());
    assert!(state.cgroups.is_empty());
    let unavailable: Vec<_> = (bridge.events().iter())
        .filter(|e| e.kind == EventKind::CaptureUnavailable && e.tag.as_deref() == Some("gone"))
        .map(|e| e.detail.as_str())
        .collect();
    assert!(
        unavailable
            .iter()
            .any(|d| d.contains(&format!("/proc/{pid}/schedstat"))),
        "{unavailable:?}"
    );
    assert!(
        unavailable
            .iter()
            .any(|d| d.contains("runq-no-such-cgroup/cpu.stat")),
        "{unavailable:?}"
    );
}

#[test]
fn periodic_captures_from_a_single_threaded_hold_loop() {
    let busy = BusyChildInCgroup::start("periodic");
    let targets = CaptureTargets {
        worker_pids: vec![busy.pid()],
        cgroup_dirs: vec![busy.cgroup.clone()],
    };
    let mut bridge = SnapshotBridge::new();
    bridge.capture_scheduler("baseline", 0, &targets);
    let start = Instant::now();
    let hold = Duration::from_millis(550);
    let mut periodic = PeriodicCaptures::new(Duration::from_millis(100), start);
    while start.elapsed() < hold {
        if let Some(tag) = periodic.due(Instant::now(), &mut bridge) {
            bridge.capture_scheduler(&tag, 1, &targets);
        }
        let left = hold.saturating_sub(start.elapsed());
        std::thread::sleep(periodic.time_until_due(Instant::now()).min(left));
    }
    let tags = bridge.tags();
    let periodic_tags: Vec<u32> = tags.iter().filter_map(|t| parse_periodic_tag(t)).collect();
    // 5 are due in 550 ms; a loaded machine may skip at most a couple.
    assert!((3..=5).contains(&periodic_tags.len()), "{tags:?}");
    assert_eq!(
        periodic_tags,
        (0..periodic_tags.len() as u32).collect::<Vec<_>>()
    );
    let section = bridge.drain();
    let summaries = summarize_phases(&section.captures);
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[1].step_index, 1);
    assert_eq!(summaries[1].captures, periodic_tags.len());
    assert!(summaries[1].worker_run_ms >= 30.0, "{summaries:?}");
}

/// The same capture on cgroup2, where `cpu.stat` holds `usage_usec`,
/// `user_usec` and `system_usec` (a core file, there even without the
/// cpu controller).
#[test]
fn captures_cpu_stat_of_a_cgroup2_cgroup() {
    if Hierarchy::V2.mount().is_none() {
        return common::skip(
            "captures_cpu_stat_of_a_cgroup2_cgroup",
            "no cgroup2 hierarchy is mounted",
        );
    }
    let busy = BusyChildInCgroup::start_in(Hierarchy::V2, "v2stat");
    let targets = CaptureTargets {
        worker_pids: vec![busy.pid()],
        cgroup_dirs: vec![busy.cgroup.clone()],
    };
    let mut bridge = SnapshotBridge::new();
    bridge.capture_scheduler("before", 0, &targets);
    std::thread::sleep(Duration::from_millis(300));
    bridge.capture_scheduler("after", 1, &targets);
    let stat_of = |tag: &str| {
        let CaptureData::Scheduler(state) = &bridge.get(tag).unwrap().data else {
            panic!("{tag} is not a scheduler capture");
        };
        assert_eq!(state.cgroups.len(), 1, "{:?}", state.cgroups);
        assert_eq!(state.cgroups[0].path, busy.cgroup);
        state.cgroups[0].stat.clone()
    };
    let (before, after) = (stat_of("before"), stat_of("after"));
    for key in ["usage_usec", "user_usec", "system_usec"] {
        assert!(after.contains_key(key), "{key} missing: {after:?}");
    }
    assert!(
        !after.contains_key("usage_ns"),
        "no cpuacct on v2: {after:?}"
    );
    // The busy child got at least 30 ms of the 300 ms even on a loaded host.
    let (u0, u1) = (before["usage_usec"], after["usage_usec"]);
    assert!(u1 >= u0 + 30_000, "cgroup usage {u0} -> {u1} us");
    assert!(after["usage_usec"] >= after["user_usec"]);
    assert!(
        !bridge
            .events()
            .iter()
            .any(|e| e.kind == EventKind::CaptureUnavailable && e.detail.contains("cpu.stat")),
        "{:?}",
        bridge.events()
    );
}
