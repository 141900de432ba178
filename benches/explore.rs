//! Exploration benchmark, all measured in this run on this machine.
//!
//! 1. Maze: timelines needed to reach the maze's bug by fork-based
//!    exploration and by plain independent seeds, side by side for several
//!    root seeds, with medians and their ratio (target: at least 10x fewer).
//! 2. Fork + reap cost per timeline: a program that splits into many
//!    children doing nothing, against the same number of in-process runs of
//!    that program (the reference), sequentially and with a window of
//!    `max` children (target: under 1 ms per timeline).
//!
//! Run: `cargo bench --bench explore`.

use std::time::Instant;

use runq::explore::{self, maze, sometimes, ExploreConfig, Parallelism};

/// Root seeds far apart, so the independent-seed sequences do not overlap.
const ROOT_SEEDS: [u64; 9] = [
    1 << 40,
    2 << 40,
    3 << 40,
    4 << 40,
    5 << 40,
    6 << 40,
    7 << 40,
    8 << 40,
    9 << 40,
];

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn maze_comparison() -> f64 {
    println!(
        "maze: {} gates, {} doors, {} picks per gate",
        maze::MAZE_GATES,
        maze::MAZE_DOORS,
        maze::MAZE_TRIES
    );
    println!(
        "{:>14} {:>12} {:>12} {:>8}",
        "root seed", "exploration", "independent", "ratio"
    );
    let (mut explored, mut independent) = (Vec::new(), Vec::new());
    for seed in ROOT_SEEDS {
        let config = ExploreConfig {
            root_seed: seed,
            energy: 100_000,
            seeds: 100_000,
            ..Default::default()
        };
        let report = explore::explore(&config, &mut || maze::walk(&mut Vec::new()))
            .expect("maze exploration");
        let found = report
            .first_bug
            .as_ref()
            .map(|b| b.ordinal)
            .expect("exploration must find the maze bug within its energy");
        let plain = maze::independent_timelines_to_bug(seed, 10_000_000)
            .expect("independent seeds must find the maze bug within 10M walks");
        println!(
            "{seed:>14} {found:>12} {plain:>12} {:>7.1}x",
            plain as f64 / found as f64
        );
        explored.push(found as f64);
        independent.push(plain as f64);
    }
    let (e, i) = (median(&mut explored), median(&mut independent));
    let ratio = i / e;
    println!(
        "median: exploration {e:.0} timelines, independent seeds {i:.0}: {ratio:.1}x fewer \
         (target >= 10x: {})",
        if ratio >= 10.0 { "met" } else { "MISSED" }
    );
    ratio
}

fn fork_cost(parallelism: Parallelism, children: u32) -> f64 {
    let trivial = || {
        sometimes("split", true);
    };
    // Reference: the same program run in-process, once per timeline.
    let start = Instant::now();
    for seed in 0..u64::from(children) + 1 {
        explore::run_plain(seed, &mut { trivial });
    }
    let reference = start.elapsed().as_secs_f64() / f64::from(children + 1);

    let config = ExploreConfig {
        seeds: 1,
        energy: u64::from(children) + 1,
        timelines_per_split: children,
        parallelism,
        ..Default::default()
    };
    let start = Instant::now();
    let report = explore::explore(&config, &mut { trivial }).expect("fork benchmark");
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(report.timelines, u64::from(children) + 1);
    let per_timeline = elapsed / report.timelines as f64;
    println!(
        "fork+reap {:<12} {} timelines: {:.1} us per timeline (in-process run: {:.2} us; \
         ratio {:.0}x; target < 1000 us: {})",
        format!("{parallelism:?}"),
        report.timelines,
        per_timeline * 1e6,
        reference * 1e6,
        per_timeline / reference.max(1e-9),
        if per_timeline < 1e-3 { "met" } else { "MISSED" }
    );
    per_timeline
}

fn main() {
    let ratio = maze_comparison();
    println!();
    let mut seq: Vec<f64> = (0..5)
        .map(|_| fork_cost(Parallelism::Sequential, 2000))
        .collect();
    let mut par: Vec<f64> = (0..5)
        .map(|_| fork_cost(Parallelism::MaxCores, 2000))
        .collect();
    println!(
        "median fork+reap per timeline: sequential {:.1} us, window max {:.1} us",
        median(&mut seq) * 1e6,
        median(&mut par) * 1e6
    );
    println!("summary: maze ratio {ratio:.1}x");
}
