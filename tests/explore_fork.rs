//! Exploration tests that fork timelines. Forking needs a single-threaded
//! process, so this file has its own `main` (`harness = false`) and runs
//! every case on the main thread.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use rand::RngCore;
use runq::explore::{
    self, cover, maze, shm::SharedWords, sometimes, AdaptiveConfig, ExploreConfig, Parallelism,
    StopReason,
};

/// Count of "/dev/zero (deleted)" mappings: shared anonymous memory.
fn shared_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("/dev/zero") || l.contains("SYSV"))
        .count()
}

fn assert_no_children() {
    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        Err(nix::errno::Errno::ECHILD) => {}
        other => panic!("a child process is left: {other:?}"),
    }
}

/// A program with `marks` distinct discoveries along each timeline; every
/// timeline end is counted in `ends`.
fn chain_program(ends: &AtomicU64, marks: u64) -> impl FnMut() + '_ {
    move || {
        let mut rng = explore::rng();
        for m in 0..marks {
            let v = rng.next_u64() % 4;
            sometimes(&format!("mark {m}"), v == 0);
        }
        ends.fetch_add(1, SeqCst);
    }
}

fn energy_accounting_is_exact() {
    let counters = SharedWords::new(1).unwrap();
    let ends = &counters.words()[0];
    for (energy, parallelism, adaptive) in [
        (1, Parallelism::Sequential, None),
        (7, Parallelism::Sequential, None),
        (60, Parallelism::Sequential, None),
        (60, Parallelism::Cores(2), None),
        (45, Parallelism::Sequential, Some(AdaptiveConfig::default())),
        (45, Parallelism::Cores(3), Some(AdaptiveConfig::default())),
    ] {
        ends.store(0, SeqCst);
        let config = ExploreConfig {
            energy,
            seeds: 10_000,
            timelines_per_split: 5,
            parallelism,
            adaptive: adaptive.clone(),
            stop_at_first_bug: false,
            stop_when_all_fired: false,
            ..Default::default()
        };
        let report = explore::explore(&config, &mut chain_program(ends, 12)).unwrap();
        let label = format!(
            "energy {energy} {parallelism:?} adaptive {}",
            adaptive.is_some()
        );
        assert_eq!(report.timelines, ends.load(SeqCst), "{label}");
        assert_eq!(report.timelines, energy - report.energy_left, "{label}");
        assert!(report.timelines <= energy, "{label}");
        assert_eq!(report.stop_reason, StopReason::EnergySpent, "{label}");
        assert_eq!(report.energy_left, 0, "{label}");
        assert!(report.fork_points > 0 || energy == 1, "{label}");
        assert_no_children();
    }
}

fn adaptive_mode_stops_barren_marks() {
    // Each root discovers a new mark (named after its first draw); its
    // children add no coverage, so the mark is barren after its minimum.
    let barren = |_: ()| {
        let v = explore::rng().next_u64() % 1_000_000;
        sometimes(&format!("mark {v}"), true);
    };
    let adaptive = AdaptiveConfig {
        batch: 2,
        per_mark_energy: 16,
        min_timelines: 6,
        warm_min_timelines: 2,
        cap_per_mark: 40,
    };
    let config = ExploreConfig {
        energy: 1000,
        seeds: 2,
        adaptive: Some(adaptive.clone()),
        stop_when_all_fired: false,
        ..Default::default()
    };
    let report = explore::explore(&config, &mut || barren(())).unwrap();
    // Cold root: 6 children; warm root: 2 children.
    assert_eq!(report.roots, 2);
    assert_eq!(report.timelines, 2 + 6 + 2, "{report:#?}");
    assert_eq!(report.barren_marks, 2);
    assert_eq!(report.energy_returned, (16 - 6) + (16 - 2));
    assert_eq!(report.energy_left, 1000 - report.timelines);

    // A productive mark (every child covers something new) runs to its cap,
    // drawing beyond its reservation from the pool.
    let productive = || {
        let mut rng = explore::rng();
        sometimes("start", true);
        cover("fresh", rng.next_u64());
    };
    let config = ExploreConfig { seeds: 1, ..config };
    let report = explore::explore(&config, &mut { productive }).unwrap();
    assert_eq!(report.timelines, 1 + 40, "{report:#?}");
    assert_eq!(report.barren_marks, 0);

    // Without adaptive mode the same barren program spends the full split.
    let fixed = ExploreConfig {
        adaptive: None,
        timelines_per_split: 16,
        seeds: 1,
        energy: 1000,
        ..Default::default()
    };
    let report = explore::explore(&fixed, &mut || barren(())).unwrap();
    assert_eq!(report.timelines, 1 + 16);
    assert_no_children();
}

fn parallel_window_never_exceeds_p() {
    const CHILDREN: u64 = 12;
    // running, max_running, started, timed_out: in shared memory, so every
    // forked child sees the same words.
    let counters = SharedWords::new(4).unwrap();
    let [running, max_running, started, timed_out] = counters.words() else {
        unreachable!("four words were asked for")
    };
    for p in [1usize, 2, 3] {
        for word in [running, max_running, started, timed_out] {
            word.store(0, SeqCst);
        }
        let mut program = || {
            sometimes("split here", true);
            // Only the forked children overlap here; the root waits for them.
            if is_child() {
                let now = running.fetch_add(1, SeqCst) + 1;
                max_running.fetch_max(now, SeqCst);
                started.fetch_add(1, SeqCst);
                // A barrier: stay until p children run at once (or every
                // child has started, so no more can come). With a window of
                // p this always completes; a window that is too small
                // leaves a child waiting until the deadline (and the ones
                // after it give up at once).
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while running.load(SeqCst) < p as u64
                    && started.load(SeqCst) < CHILDREN
                    && timed_out.load(SeqCst) == 0
                {
                    if std::time::Instant::now() > deadline {
                        timed_out.fetch_add(1, SeqCst);
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                running.fetch_sub(1, SeqCst);
            }
        };
        let config = ExploreConfig {
            seeds: 1,
            timelines_per_split: CHILDREN as u32,
            parallelism: Parallelism::Cores(p),
            ..Default::default()
        };
        let report = explore::explore(&config, &mut program).unwrap();
        assert_eq!(report.timelines, 1 + CHILDREN);
        assert_eq!(started.load(SeqCst), CHILDREN, "p={p}");
        assert_eq!(
            timed_out.load(SeqCst),
            0,
            "p={p}: the window never held p children"
        );
        assert_eq!(report.window, p);
        assert_eq!(report.max_live_children, p as u64, "p={p}");
        assert_eq!(max_running.load(SeqCst), p as u64, "p={p}");
        assert_no_children();
    }
}

/// True in a forked child timeline: neither the test process nor the root
/// timeline (whose parent is the test process).
fn is_child() -> bool {
    let test = *TEST_PID.get().unwrap();
    std::process::id() != test && nix::unistd::getppid().as_raw() as u32 != test
}

static TEST_PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

fn crash_is_counted_with_a_replayable_recipe() {
    let program = || {
        let mut rng = explore::rng();
        sometimes("door", true);
        if rng.next_u64().is_multiple_of(3) {
            std::process::abort();
        }
    };
    let config = ExploreConfig {
        seeds: 1,
        timelines_per_split: 8,
        stop_at_first_bug: false,
        ..Default::default()
    };
    let report = explore::explore(&config, &mut { program }).unwrap();
    assert!(report.crashes >= 1, "{report:#?}");
    assert_eq!(report.bugs, 0);
    let crash = report.first_crash.clone().unwrap();
    assert_eq!(crash.signal, Some(libc::SIGABRT));
    assert_eq!(crash.recipe.forks.len(), 1);
    // Replaying the recipe (in a child, since it aborts) crashes the same way.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            explore::replay(&crash.recipe, &mut { program });
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = waitpid(child, None).unwrap();
            assert!(
                matches!(
                    status,
                    WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGABRT, _)
                ),
                "{status:?}"
            );
        }
    }
    assert_no_children();
}

fn maze_exploration_is_deterministic_and_replays() {
    let config = ExploreConfig {
        root_seed: 500,
        ..Default::default()
    };
    let a = explore::explore(&config, &mut || maze::walk(&mut Vec::new())).unwrap();
    let b = explore::explore(&config, &mut || maze::walk(&mut Vec::new())).unwrap();
    let (bug_a, bug_b) = (a.first_bug.unwrap(), b.first_bug.unwrap());
    assert_eq!(bug_a.recipe, bug_b.recipe);
    assert_eq!(bug_a.ordinal, bug_b.ordinal);
    assert_eq!(a.timelines, b.timelines);
    assert_eq!(bug_a.exit_code, Some(explore::BUG_EXIT));
    let mut path = Vec::new();
    let replay = explore::replay(&bug_a.recipe, &mut || maze::walk(&mut path));
    assert!(replay.found_bug());
    assert_eq!(replay.forks_unreached, 0);
    assert_eq!(replay.fired.len() as u64, maze::MAZE_GATES);
    assert_no_children();
}

/// Timelines to the maze's bug, exploration against independent seeds:
/// the median over several root seeds must be at least ten times smaller.
fn maze_exploration_needs_ten_times_fewer_timelines() {
    let (mut explored, mut independent) = (Vec::new(), Vec::new());
    for k in 1..=5u64 {
        let seed = k << 40;
        let config = ExploreConfig {
            root_seed: seed,
            ..Default::default()
        };
        let report = explore::explore(&config, &mut || maze::walk(&mut Vec::new())).unwrap();
        explored.push(report.first_bug.expect("exploration finds the bug").ordinal);
        independent.push(maze::independent_timelines_to_bug(seed, 5_000_000).unwrap());
    }
    explored.sort();
    independent.sort();
    let (e, i) = (explored[2], independent[2]);
    assert!(i >= 10 * e, "median exploration {e}, independent {i}");
    assert_no_children();
}

/// The libtest arguments this harness understands: name filters (a case
/// runs when its name contains one, or equals one with `--exact`),
/// `--skip FILTER` (repeatable), `--list`; other flags such as
/// `--test-threads=1`, `--nocapture` or `--quiet` change nothing here.
#[derive(Default)]
struct Selection {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    list: bool,
}

impl Selection {
    fn parse(args: &[String]) -> Selection {
        // Flags whose value is the next argument.
        const VALUED: &[&str] = &[
            "--test-threads",
            "--color",
            "--format",
            "--logfile",
            "-Z",
            "--report-time",
            "--shuffle-seed",
        ];
        let mut selection = Selection::default();
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            match arg.as_str() {
                "--skip" => selection
                    .skips
                    .push(iter.next().expect("--skip needs a filter").clone()),
                "--exact" => selection.exact = true,
                "--list" => selection.list = true,
                "--ignored" | "--include-ignored" => {}
                flag if VALUED.contains(&flag) => {
                    iter.next();
                }
                flag if flag.starts_with('-') => {}
                filter => selection.filters.push(filter.to_string()),
            }
        }
        selection
    }

    fn matches(&self, pattern: &str, name: &str) -> bool {
        if self.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    }

    fn selects(&self, name: &str) -> bool {
        (self.filters.is_empty() || self.filters.iter().any(|f| self.matches(f, name)))
            && !self.skips.iter().any(|s| self.matches(s, name))
    }
}

fn main() {
    TEST_PID.set(std::process::id()).unwrap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let selection = Selection::parse(&args);
    let maps_before = shared_mappings();
    let cases: &[(&str, fn())] = &[
        ("energy_accounting_is_exact", energy_accounting_is_exact),
        (
            "adaptive_mode_stops_barren_marks",
            adaptive_mode_stops_barren_marks,
        ),
        (
            "parallel_window_never_exceeds_p",
            parallel_window_never_exceeds_p,
        ),
        (
            "crash_is_counted_with_a_replayable_recipe",
            crash_is_counted_with_a_replayable_recipe,
        ),
        (
            "maze_exploration_needs_ten_times_fewer_timelines",
            maze_exploration_needs_ten_times_fewer_timelines,
        ),
        (
            "maze_exploration_is_deterministic_and_replays",
            maze_exploration_is_deterministic_and_replays,
        ),
    ];
    // A filter that names no case is a mistake (a typo, or a flag this
    // harness does not know taking its value for a filter): say so and
    // fail instead of reporting "0 passed" as success. (A `--skip` that
    // names nothing skips nothing and is harmless.)
    let unmatched: Vec<&String> = (selection.filters.iter())
        .filter(|f| !cases.iter().any(|(name, _)| selection.matches(f, name)))
        .collect();
    if !unmatched.is_empty() {
        let names: Vec<&str> = cases.iter().map(|(name, _)| *name).collect();
        eprintln!(
            "error: no case of explore_fork matches {unmatched:?}; its cases: {}",
            names.join(", ")
        );
        std::process::exit(101);
    }
    let selected: Vec<&(&str, fn())> = cases.iter().filter(|(n, _)| selection.selects(n)).collect();
    if selection.list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        return;
    }
    println!("\nrunning {} tests", selected.len());
    for (name, case) in &selected {
        print!("test {name} ... ");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        case();
        println!("ok");
    }
    assert_no_children();
    assert_eq!(shared_mappings(), maps_before, "a shared mapping is left");
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
        selected.len(),
        cases.len() - selected.len()
    );
}
