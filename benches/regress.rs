//! How many repetitions `steady` needs on this machine before `runq
//! compare` calls a 10% change in work units per second significant.
//!
//! Method: run `steady` M times (`RUNQ_BENCH_RUNS`, default 30) to measure
//! this machine's run-to-run spread of `work_units_per_sec`. Then, for
//! each candidate n, draw 2n distinct measured runs at random (seeded):
//! the first n are A, the other n scaled by 0.9 are B (a real 10% drop on
//! top of real noise, with no run used twice in a trial), and judge them
//! with compare's own verdict rule (`judge_values`: rank test at alpha
//! 0.01, bound 5%). The power at n is the share of 200 trials judged
//! `regressed`; the answer is the smallest n with power of at least 0.8
//! (and 0.95). The measured CV and the host noise during the runs are
//! printed beside it: the answer holds for that much noise.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use runq::regress::{judge_values, metrics_of, CompareOptions, Direction, Summary, Verdict};
use runq::scenario::{catalog, install_interrupt_handler, RunOptions};

const TRIALS: usize = 200;
const DROP: f64 = 0.9;

fn main() {
    let runs: usize = std::env::var("RUNQ_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    install_interrupt_handler().expect("signal handler");
    let scenario = catalog::find("steady").expect("steady is in the catalog");
    let opts = RunOptions {
        seed: Some(1),
        ..RunOptions::default()
    };
    let repeated = runq::regress::run_repeated(&scenario, &opts, runs, false, |i, r| {
        eprintln!(
            "run {}/{runs}: {}",
            i + 1,
            if r.checks.passed { "PASS" } else { "FAIL" }
        );
    })
    .expect("run steady");
    let values: Vec<f64> = repeated
        .runs
        .iter()
        .filter_map(|r| {
            metrics_of(r)
                .into_iter()
                .find(|m| m.name == "work_units_per_sec")
                .map(|m| m.value)
        })
        .collect();
    let foreign: Vec<f64> = repeated
        .runs
        .iter()
        .filter_map(|r| r.noise.as_ref().map(|n| n.foreign_share))
        .collect();
    let s = Summary::of(&values).expect("values");
    let f = Summary::of(&foreign).unwrap_or_else(|| Summary::of(&[0.0]).unwrap());
    println!(
        "steady x{runs}: work_units_per_sec median {:.0}, CV {:.1}%, min {:.0}, max {:.0}; foreign CPU share median {:.0}% (max {:.0}%)",
        s.median,
        s.cv.unwrap_or(0.0) * 100.0,
        s.min,
        s.max,
        f.median * 100.0,
        f.max * 100.0
    );
    let opts = CompareOptions::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut first = (None, None);
    println!("n per side  power (share of {TRIALS} trials judged regressed)");
    for n in 2..=values.len() / 2 {
        let mut hits = 0;
        for _ in 0..TRIALS {
            let mut pool = values.clone();
            pool.shuffle(&mut rng);
            let a = pool[..n].to_vec();
            let b = pool[n..2 * n].iter().map(|v| v * DROP).collect();
            let m = judge_values(
                "work_units_per_sec",
                "units/s",
                Direction::HigherIsBetter,
                a,
                b,
                &opts,
            );
            hits += usize::from(m.verdict == Verdict::Regressed);
        }
        let power = hits as f64 / TRIALS as f64;
        println!("{n:>10}  {power:.2}");
        if power >= 0.8 && first.0.is_none() {
            first.0 = Some(n);
        }
        if power >= 0.95 && first.1.is_none() {
            first.1 = Some(n);
        }
    }
    let say =
        |n: Option<usize>| n.map_or(format!("more than {}", values.len() / 2), |n| n.to_string());
    println!(
        "a 10% drop in work_units_per_sec is called regressed (alpha {}, bound {:.0}%) with power 0.8 at {} runs a side, 0.95 at {}",
        opts.alpha,
        opts.max_regression * 100.0,
        say(first.0),
        say(first.1)
    );
}
