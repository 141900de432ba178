//! [`RunOptions`]: how to run a scenario (seed, duration and worker
//! overrides, progress bar, boundary mode, sample interval, scheduler).
//!
//! Separate because the options are the executor's input from callers
//! (the CLI, tests, exploration), and applying them to a scenario is plain
//! data work that needs nothing of a live run.

use std::time::Duration;

use super::hooks::BoundaryMode;
use crate::scenario::dsl::{Op, Scenario};
use crate::scheduler::SchedulerSpec;

/// Default interval between samples of the iteration counters.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_millis(15);

/// How to run a scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Seed of the run's RNG (random affinity subsets, worker seeds). `None`
    /// picks one from the clock; the report records it.
    pub seed: Option<u64>,
    /// Replaces the scenario's duration.
    pub duration: Option<Duration>,
    /// Replaces the worker count of every work.
    pub workers: Option<usize>,
    /// Draw a progress bar on stderr when it is a terminal.
    pub progress: bool,
    pub boundary_mode: BoundaryMode,
    pub sample_interval: Duration,
    /// Replaces the scenario's scheduler under test.
    pub scheduler: Option<SchedulerSpec>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            seed: None,
            duration: None,
            workers: None,
            progress: false,
            boundary_mode: BoundaryMode::Live,
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            scheduler: None,
        }
    }
}

impl RunOptions {
    /// The scenario with `duration` and `workers` applied.
    pub fn apply(&self, scenario: &Scenario) -> Scenario {
        let mut s = scenario.clone();
        if let Some(d) = self.duration {
            s.duration = d;
        }
        if let Some(spec) = &self.scheduler {
            s.scheduler = Some(spec.clone());
        }
        if let Some(n) = self.workers {
            for def in &mut s.cgroups {
                for work in &mut def.works {
                    work.workers = n;
                }
            }
            for step in &mut s.steps {
                for op in &mut step.ops {
                    if let Op::Spawn { works, .. } = op {
                        for work in works {
                            work.workers = n;
                        }
                    }
                }
            }
        }
        s
    }

    /// The seed to use: the given one, or one from the clock.
    pub fn resolved_seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
                ^ u64::from(std::process::id())
        })
    }
}
