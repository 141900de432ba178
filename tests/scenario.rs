//! Scenario runs on the host: real workers in real cgroups, real checks.
//!
//! Needs root and a cpuset + cpu cgroup hierarchy (v1 or v2); fails loudly
//! naming what is missing otherwise.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{runq_roots_of, StopWorker};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runq::report::RunReport;
use runq::scenario::{
    catalog, run_scenario, run_scenario_with, Boundary, BoundaryMode, CgroupDef, CpusetSpec,
    ExecutorHooks, Op, RunOptions, Scenario, Step, WorkSpec,
};
use runq::topology::Topology;
use runq::workload::{AffinityIntent, WorkType};

mod common;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");

fn opts(seed: u64) -> RunOptions {
    RunOptions {
        seed: Some(seed),
        ..RunOptions::default()
    }
}

fn check<'a>(report: &'a RunReport, name: &str) -> &'a runq::check::CheckOutcome {
    report
        .checks
        .get(name)
        .unwrap_or_else(|| panic!("no check {name} in\n{}", report.render_text()))
}

fn spin_scenario(
    name: &str,
    workers: usize,
    cpuset: Option<CpusetSpec>,
    holds_ms: &[u64],
) -> Scenario {
    let mut def = CgroupDef::named("cg0")
        .workers(workers)
        .work(WorkType::CpuSpin);
    def.cpuset = cpuset;
    holds_ms.iter().fold(
        Scenario::named(name)
            .family("test")
            .duration(Duration::from_secs(1))
            .cgroup(def),
        |s, ms| s.step(Step::hold(Duration::from_millis(*ms))),
    )
}

fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

#[test]
fn a_healthy_run_passes_and_cleans_up() {
    let s = catalog::find("steady").unwrap();
    let o = RunOptions {
        duration: Some(Duration::from_millis(800)),
        ..opts(1)
    };
    let report = run_scenario(&s, &o).expect("run steady");
    assert!(report.checks.passed, "{}", report.render_text());
    assert_eq!(report.stats.workers, 4);
    assert!(
        report.cgroups[0].samples.len() > 20,
        "sampled during the hold"
    );
    assert!(runq_roots_of(std::process::id()).is_empty());
}

#[test]
fn a_stopped_worker_fails_the_gap_check() {
    let s = spin_scenario("stopped", 2, None, &[200, 600, 150]);
    let mut hooks = StopWorker::default();
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    let report = run_scenario_with(&s, &opts(2), 2, &mut rng, &mut hooks).expect("run");
    let stopped = hooks.pid.unwrap();
    assert!(!report.checks.passed, "{}", report.render_text());
    let gap = check(&report, "longest_gap");
    assert!(!gap.passed, "{}", report.render_text());
    assert!(
        gap.details.iter().any(|d| d.contains(&stopped.to_string())),
        "the stalled worker {stopped} is named: {:?}",
        gap.details
    );
    assert!(check(&report, "workers_completed").passed);
    assert_eq!(report.exit_code(), 1);
}

/// Moves worker 0 out of its cgroup (to the run root) and pins it to CPU 1.
struct Escape;

impl ExecutorHooks for Escape {
    fn at_boundary(&mut self, b: &mut Boundary<'_>) -> anyhow::Result<()> {
        if b.index == 1 {
            let pid = b.live[0].worker_pids[0];
            for dir in &b.live[0].paths {
                let root = dir.parent().unwrap();
                std::fs::write(root.join("cgroup.procs"), pid.to_string())?;
            }
            let mut set = nix::sched::CpuSet::new();
            set.set(1)?;
            nix::sched::sched_setaffinity(Pid::from_raw(pid), &set)?;
        }
        Ok(())
    }
}

#[test]
fn a_worker_moved_outside_its_cpuset_fails_isolation() {
    let topo = Topology::host().unwrap();
    assert!(topo.num_cpus() >= 2, "this test needs 2 CPUs");
    let s = spin_scenario("escape", 1, Some(CpusetSpec::Exact(vec![0])), &[150, 400]);
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    let report = run_scenario_with(&s, &opts(3), 3, &mut rng, &mut Escape).expect("run");
    let iso = check(&report, "cpuset_isolation");
    assert!(!iso.passed, "{}", report.render_text());
    assert!(report.cgroups[0].workers[0].cpus_used.contains(&1));
    assert!(runq_roots_of(std::process::id()).is_empty());
}

#[test]
fn the_same_worker_kept_inside_its_cpuset_passes_isolation() {
    let s = spin_scenario("kept", 1, Some(CpusetSpec::Exact(vec![0])), &[500]);
    let report = run_scenario(&s, &opts(4)).expect("run");
    assert!(
        check(&report, "cpuset_isolation").passed,
        "{}",
        report.render_text()
    );
    assert_eq!(
        report.cgroups[0].workers[0]
            .cpus_used
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![0]
    );
}

#[test]
fn narrowing_the_cpuset_of_running_workers_is_not_a_violation() {
    // Pinned to CPU 1 with no cpuset for the first hold, then confined to
    // CPU 0: CPU 1 was allowed when the worker used it.
    let topo = Topology::host().unwrap();
    assert!(topo.num_cpus() >= 2, "this test needs 2 CPUs");
    let work = WorkSpec::new(WorkType::CpuSpin, 1).affinity(AffinityIntent::Exact(vec![1]));
    let mut s = spin_scenario("narrowed", 1, None, &[200, 300]);
    s.cgroups[0].works = vec![work];
    s.steps[1].ops = vec![Op::SetCpuset {
        cgroup: "cg0".into(),
        cpuset: CpusetSpec::Exact(vec![0]),
    }];
    let report = run_scenario(&s, &opts(5)).expect("run");
    let used: Vec<usize> = report.cgroups[0].workers[0]
        .cpus_used
        .iter()
        .copied()
        .collect();
    assert_eq!(used, vec![0, 1], "{}", report.render_text());
    assert!(
        check(&report, "cpuset_isolation").passed,
        "{}",
        report.render_text()
    );
}

/// Records what is alive at each quiescent boundary.
struct Quiet {
    seen: Vec<(usize, usize, bool)>,
    last_pids: Vec<i32>,
}

impl ExecutorHooks for Quiet {
    fn at_boundary(&mut self, b: &mut Boundary<'_>) -> anyhow::Result<()> {
        let pids: Vec<i32> = b.live.iter().flat_map(|l| l.worker_pids.clone()).collect();
        let leftover = self.last_pids.iter().filter(|p| alive(**p)).count();
        let roots = !runq_roots_of(std::process::id()).is_empty();
        self.seen.push((b.index, leftover + pids.len(), roots));
        if let Some(prev) = b.previous {
            for run in &prev.collected {
                self.last_pids.extend(run.workers.iter().map(|w| w.tid));
            }
        }
        Ok(())
    }
}

#[test]
fn quiescent_boundaries_have_no_workers_and_no_cgroups() {
    let s = spin_scenario(
        "quiet",
        2,
        Some(CpusetSpec::Disjoint { index: 0, of: 2 }),
        &[150, 150, 150],
    );
    let o = RunOptions {
        boundary_mode: BoundaryMode::Quiescent,
        ..opts(5)
    };
    let mut hooks = Quiet {
        seen: Vec::new(),
        last_pids: Vec::new(),
    };
    let mut rng = rand::rngs::mock::StepRng::new(1, 1);
    let report = run_scenario_with(&s, &o, 5, &mut rng, &mut hooks).expect("run");
    // Boundary 0 is before anything ran; 1..=3 follow the steps.
    assert_eq!(hooks.seen.len(), 4);
    for (index, live, roots) in &hooks.seen[1..] {
        assert_eq!(*live, 0, "workers alive at boundary {index}");
        assert!(!roots, "cgroups exist at boundary {index}");
    }
    assert_eq!(report.cgroups.len(), 3, "one batch per step");
    assert!(report.checks.passed, "{}", report.render_text());
}

fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(RUNQ)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run runq");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_files_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown_op",
            "name = \"t\"\n[[cgroups]]\nname = \"cg0\"\n[[steps]]\nhold = { fraction = 1.0 }\n[[steps.ops]]\nop = \"teleport\"\ncgroup = \"cg0\"\n",
            &["steps[0].ops[0]", "teleport", "add_cgroup"],
        ),
        (
            "missing_field",
            "name = \"t\"\n[[cgroups]]\nname = \"cg0\"\n[[cgroups.works]]\nworkers = 2\n",
            &["cgroups[0].works[0]", "missing field `work`"],
        ),
        (
            "cpuset_outside",
            "name = \"t\"\n[[cgroups]]\nname = \"cg0\"\ncpuset = { exact = [0, 4096] }\n[[cgroups.works]]\nwork = \"cpu_spin\"\nworkers = 1\n",
            &["cgroups[0].cpuset", "CPU 4096 is outside"],
        ),
        (
            "zero_workers",
            "name = \"t\"\n[[cgroups]]\nname = \"cg0\"\n[[cgroups.works]]\nwork = \"cpu_spin\"\nworkers = 0\n",
            &["cgroups[0].works[0].workers", "zero workers"],
        ),
        (
            "unknown_cgroup",
            "name = \"t\"\n[[cgroups]]\nname = \"cg0\"\n[[steps]]\nhold = { fraction = 0.5 }\n[[steps]]\nhold = { fraction = 0.5 }\n[[steps.ops]]\nop = \"stop\"\ncgroup = \"cg9\"\n",
            &["steps[1].ops[0].cgroup", "unknown cgroup \"cg9\"", "[[cgroups]]"],
        ),
        (
            "bad_duration",
            "name = \"t\"\nduration = \"2 fortnights\"\n",
            &["duration", "500ms"],
        ),
    ];
    for (name, text, wanted) in cases {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, stderr) = run_cli(&["run", path.to_str().unwrap(), "--quiet"]);
        assert_eq!(code, 2, "{name}: {stderr}");
        for w in *wanted {
            assert!(stderr.contains(w), "{name}: {w:?} not in {stderr}");
        }
    }
    let (code, _, stderr) = run_cli(&["run", "no_such_scenario"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("runq list"), "{stderr}");
    let (code, _, stderr) = run_cli(&["run", "steady", "--workers", "0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("workers") && stderr.contains("use 1 or more"),
        "{stderr}"
    );
    let (code, _, stderr) = run_cli(&["run", "steady", "--duration", "soon"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--duration") && stderr.contains("soon"),
        "{stderr}"
    );
}

#[test]
fn cli_run_prints_checks_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let (code, stdout, stderr) = run_cli(&[
        "run",
        "cpuset_disjoint",
        "--duration",
        "600ms",
        "--seed",
        "42",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("PASS cpuset_isolation"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("iterations"), "{stdout}");
    let report = RunReport::read_json(&json).unwrap();
    assert_eq!(report.scenario, "cpuset_disjoint");
    assert_eq!(report.seed, 42);
    assert_eq!(report.cgroups.len(), 2);
    assert!(check(&report, "cpuset_isolation").passed, "{stdout}");
    // The exit code is the report's verdict, and the text says it.
    assert_eq!(code, report.exit_code(), "{stdout}");
    let verdict = if report.checks.passed {
        "result: PASS"
    } else {
        "result: FAIL"
    };
    assert!(stdout.contains(verdict), "{stdout}");
}

/// Waits until the `two_cgroups` run `pid` has its 4 workers in its
/// cgroups cg0 and cg1, and returns their pids.
fn wait_for_two_cgroup_workers(pid: u32) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut workers: Vec<i32> = Vec::new();
    while Instant::now() < deadline && workers.len() < 4 {
        workers.clear();
        for root in runq_roots_of(pid) {
            for cg in ["cg0", "cg1"] {
                if let Ok(text) = std::fs::read_to_string(root.join(cg).join("cgroup.procs")) {
                    workers.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            }
        }
        workers.sort_unstable();
        workers.dedup();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        workers.len() >= 4,
        "workers of run {pid} never showed up in its cgroups"
    );
    workers
}

#[test]
fn a_killed_run_leaves_nothing_after_the_next_run() {
    let mut child = Command::new(RUNQ)
        .args(["run", "two_cgroups", "--duration", "30s", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let workers = wait_for_two_cgroup_workers(pid);
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && workers.iter().any(|w| alive(*w)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survivors: Vec<i32> = workers.iter().copied().filter(|w| alive(*w)).collect();
    assert!(
        survivors.is_empty(),
        "workers outlived the killed run: {survivors:?}"
    );
    assert!(
        !runq_roots_of(pid).is_empty(),
        "the killed run's root should still be there"
    );

    // The next run removes the stale root whatever its own checks say;
    // bad input (2) or an environment failure (3) would mean it never ran.
    let (code, stdout, stderr) = run_cli(&["run", "steady", "--duration", "200ms", "--quiet"]);
    let verdict = if code == 0 {
        "result: PASS"
    } else {
        "result: FAIL"
    };
    assert!(
        (code == 0 || code == 1) && stdout.contains(verdict),
        "exit {code}\n{stdout}\n{stderr}"
    );
    assert!(
        runq_roots_of(pid).is_empty(),
        "the stale root of {pid} was not removed: {:?}",
        runq_roots_of(pid)
    );
}

#[test]
fn every_catalog_scenario_validates_on_this_host() {
    let topo = Topology::host().unwrap();
    let all = catalog::all();
    // The README states the catalog's size; they must agree exactly.
    assert_eq!(all.len(), readme_catalog_size(), "catalog vs README");
    let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len(), "duplicate scenario names");
    for family in catalog::FAMILIES {
        assert!(
            all.iter().any(|s| s.family == *family),
            "family {family} is empty"
        );
    }
    for s in &all {
        assert!(catalog::FAMILIES.contains(&s.family.as_str()), "{}", s.name);
        runq::scenario::validate(s, &topo).unwrap_or_else(|e| panic!("{}: {e:#}", s.name));
    }
    // `runq list`: one line per scenario, in catalog order, naming its
    // family and description.
    let (code, stdout, _) = run_cli(&["list"]);
    assert_eq!(code, 0);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), all.len(), "{stdout}");
    for (s, line) in all.iter().zip(&lines) {
        assert_eq!(line[0], s.name, "{stdout}");
        assert_eq!(line[1], s.family, "{stdout}");
        assert_eq!(line[2..].join(" "), s.description, "{stdout}");
    }
    // Dumped as TOML, each reads back and validates.
    let dir = tempfile::tempdir().unwrap();
    for s in all.iter().take(5) {
        let (code, text, _) = run_cli(&["list", "--toml", &s.name]);
        assert_eq!(code, 0);
        let path = dir.path().join(format!("{}.toml", s.name));
        std::fs::write(&path, text).unwrap();
        let back = runq::scenario::toml::from_toml_file(&path).unwrap();
        runq::scenario::validate(&back, &topo).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(s).unwrap(),
            "{} changed through `runq list --toml`",
            s.name
        );
    }
}

/// The scenario count the README states: "... (N scenarios; `runq list`)".
fn readme_catalog_size() -> usize {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let at = readme
        .find(" scenarios; `runq list`)")
        .expect("the README states the catalog size");
    let digits: String = readme[..at]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().expect("a number before \" scenarios\"")
}

#[test]
fn a_handful_of_catalog_scenarios_pass() {
    for name in [
        "cpuset_swap",
        "cgroup_add_remove",
        "affinity_churn",
        "spawn_stop",
        "move_tasks",
        "nested_cpusets",
        "thread_workers",
        "staged_snapshots",
    ] {
        let s = catalog::find(name).unwrap();
        let o = RunOptions {
            duration: Some(Duration::from_millis(700)),
            ..opts(7)
        };
        let report = run_scenario(&s, &o).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(report.checks.passed, "{name}:\n{}", report.render_text());
        if name == "staged_snapshots" {
            let captures = report.captures.as_ref().expect("captures");
            let tags: Vec<&str> = captures.captures.iter().map(|c| c.tag.as_str()).collect();
            assert!(
                tags.contains(&"light") && tags.contains(&"heavy"),
                "{tags:?}"
            );
            assert!(tags.iter().any(|t| t.starts_with("periodic_")), "{tags:?}");
        }
    }
    assert!(runq_roots_of(std::process::id()).is_empty());
}

#[test]
fn ctrl_c_stops_workers_and_removes_cgroups() {
    use std::os::unix::process::CommandExt;
    let child = Command::new(RUNQ)
        .args(["run", "two_cgroups", "--duration", "30s", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let workers = wait_for_two_cgroup_workers(pid);
    // What a terminal's Ctrl-C does: SIGINT to the whole process group.
    nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert!(runq_roots_of(pid).is_empty(), "cgroups left after Ctrl-C");
    let survivors: Vec<i32> = workers.iter().copied().filter(|w| alive(*w)).collect();
    assert!(
        survivors.is_empty(),
        "workers left after Ctrl-C: {survivors:?}"
    );
}

#[test]
fn sigterm_stops_workers_and_removes_cgroups() {
    let child = Command::new(RUNQ)
        .args(["run", "two_cgroups", "--duration", "30s", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let workers = wait_for_two_cgroup_workers(pid);
    // What a service manager does: SIGTERM to runq alone.
    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    assert!(runq_roots_of(pid).is_empty(), "cgroups left after SIGTERM");
    let survivors: Vec<i32> = workers.iter().copied().filter(|w| alive(*w)).collect();
    assert!(
        survivors.is_empty(),
        "workers left after SIGTERM: {survivors:?}"
    );
}

/// `spawn_stop` holds 0.3, 0.4 and 0.3 of its duration (2 s by default):
/// cg0 runs 2 spinners for the first two holds, the spawn adds 2 spinners
/// and 1 sleeper for the last two. `--workers 3` makes every work 3 workers
/// and `--duration 600ms` scales the holds to 180, 240 and 180 ms.
#[test]
fn workers_and_duration_flags_scale_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let (code, stdout, stderr) = run_cli(&[
        "run",
        "spawn_stop",
        "--duration",
        "600ms",
        "--workers",
        "3",
        "--quiet",
        "--json",
        json.to_str().unwrap(),
    ]);
    let report = RunReport::read_json(&json)
        .unwrap_or_else(|e| panic!("no report ({e:#}): exit {code}\n{stdout}\n{stderr}"));
    assert_eq!(code, report.exit_code(), "{stdout}");
    let counts: Vec<(&str, usize)> = report
        .cgroups
        .iter()
        .map(|c| (c.name.as_str(), c.workers.len()))
        .collect();
    assert_eq!(counts, [("cg0", 3), ("cg1@step1", 6)], "{stdout}");
    assert_eq!(report.stats.workers, 9);
    // Times in ms since the run's start. Each bound sits between the
    // scaled time (a hold never ends early) and the unscaled one.
    let window = |c: usize| {
        let setup = &report.cgroups[c].setups[0];
        (setup.started_ms.unwrap(), setup.stopped_ms.unwrap())
    };
    let (cg0_start, cg0_stop) = window(0);
    let (spawn_start, spawn_stop) = window(1);
    assert!(
        (180.0..600.0).contains(&(spawn_start - cg0_start)),
        "the spawn came {} ms after the start (180 scaled, 600 unscaled)",
        spawn_start - cg0_start
    );
    assert!(
        (420.0..1400.0).contains(&(cg0_stop - cg0_start)),
        "cg0 ran {} ms (420 scaled, 1400 unscaled)",
        cg0_stop - cg0_start
    );
    assert!(
        (420.0..1400.0).contains(&(spawn_stop - spawn_start)),
        "the spawn ran {} ms (420 scaled, 1400 unscaled)",
        spawn_stop - spawn_start
    );
    assert!(
        (600.0..2000.0).contains(&report.duration_ms),
        "the run took {} ms (600 scaled, 2000 unscaled)",
        report.duration_ms
    );
}
