//! Cgroup latency: runq's create + move + remove cycle (every hierarchy in
//! use, cpuset initialisation, evacuation before rmdir) against the bare
//! kernel cost of one `mkdir` + `rmdir` in a single hierarchy, measured in
//! the same run with interleaved rounds. Also the full manager lifetime
//! (detect, stale scan, run root, teardown).
//!
//! Run: `cargo bench --bench cgroup` (root; real cgroups).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runq::cgroup::CgroupManager;

const ROUNDS: usize = 10;
const PER_ROUND: usize = 50;

struct Samples(Vec<Duration>);

impl Samples {
    fn median_us(&self) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted[sorted.len() / 2].as_secs_f64() * 1e6
    }

    fn p90_us(&self) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort();
        sorted[sorted.len() * 9 / 10].as_secs_f64() * 1e6
    }
}

fn main() -> anyhow::Result<()> {
    let mut manager = CgroupManager::detect()?;
    // The reference directory sits next to the run root in its first hierarchy.
    let parent: PathBuf = manager.root_parents()[0].clone();
    let reference_dir = parent.join(format!("{}-bench-ref", manager.root_name()));
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()?;
    let pid = sleeper.id() as i32;

    let mut bare = Samples(Vec::new());
    let mut cycle = Samples(Vec::new());
    let mut lifetime = Samples(Vec::new());
    let result = (|| -> anyhow::Result<()> {
        for _ in 0..ROUNDS {
            for _ in 0..PER_ROUND {
                let start = Instant::now();
                fs::create_dir(&reference_dir)?;
                fs::remove_dir(&reference_dir)?;
                bare.0.push(start.elapsed());
            }
            for _ in 0..PER_ROUND {
                let start = Instant::now();
                manager.create("bench")?;
                manager.move_procs("bench", &[pid])?;
                manager.remove("bench")?;
                cycle.0.push(start.elapsed());
            }
            for _ in 0..PER_ROUND / 10 {
                let start = Instant::now();
                let mut other = CgroupManager::detect()?;
                other.teardown()?;
                lifetime.0.push(start.elapsed());
            }
        }
        Ok(())
    })();
    let _ = fs::remove_dir(&reference_dir);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    manager.teardown()?;
    result?;

    println!(
        "cgroup {} ({} hierarchies), {} samples each",
        manager.version(),
        manager.root_parents().len(),
        ROUNDS * PER_ROUND
    );
    println!(
        "bare mkdir+rmdir (1 hierarchy):      median {:8.1} us  p90 {:8.1} us",
        bare.median_us(),
        bare.p90_us()
    );
    println!(
        "runq create+move+remove:             median {:8.1} us  p90 {:8.1} us  ratio {:.2}x",
        cycle.median_us(),
        cycle.p90_us(),
        cycle.median_us() / bare.median_us()
    );
    println!(
        "manager detect+teardown:             median {:8.1} us  p90 {:8.1} us  ratio {:.2}x",
        lifetime.median_us(),
        lifetime.p90_us(),
        lifetime.median_us() / bare.median_us()
    );
    Ok(())
}
