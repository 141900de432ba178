//! A step's hold: the single-threaded loop that samples the workers'
//! iteration counters, ticks payloads, watches the scheduler and host
//! noise, takes periodic captures, re-applies a loop hold's ops and moves
//! the progress bar, until the step's time is up.
//!
//! Separate because it is the only part of a run that waits, and its
//! timing (wake at the next sample, loop or capture) is its own concern.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::batch::Batch;
use super::{check_interrupted, Executor, StepResult};
use crate::scenario::dsl::{HoldSpec, Scenario, Step};

impl Executor<'_> {
    pub(super) fn start_progress(&mut self, steps: &[Step], scenario: &Scenario) {
        if !self.opts.progress || !std::io::stderr().is_terminal() {
            return;
        }
        let total_ms: u128 = steps
            .iter()
            .map(|s| s.hold.length(scenario.duration).as_millis())
            .sum();
        let pb = indicatif::ProgressBar::new(total_ms as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ms {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_prefix(scenario.name.clone());
        self.progress = Some(pb);
    }

    /// The hold: sample, capture, loop ops, progress, until the step ends.
    pub(super) fn hold(&mut self, step: &Step, result: &mut StepResult) -> anyhow::Result<()> {
        let start = Instant::now();
        let end = start + step.hold.length(self.total);
        let interval = self.opts.sample_interval.max(Duration::from_millis(1));
        let mut next_sample = start;
        let loop_every = match &step.hold {
            HoldSpec::Loop { every, .. } => Some(*every),
            _ => None,
        };
        let mut next_loop = loop_every.map(|every| start + every);
        self.noise.begin(&self.run_cpus(), &self.worker_tids());
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            check_interrupted()?;
            self.tick_payloads();
            self.noise.tick(&self.worker_tids(), false);
            self.watch_scheduler();
            if now >= next_sample {
                for batch in &mut self.batches {
                    batch.sample();
                }
                while next_sample <= now {
                    next_sample += interval;
                }
            }
            if let Some(periodic) = &mut self.periodic {
                if let Some(tag) = periodic.due(now, &mut self.bridge) {
                    if let Some(scheduler) = &mut self.scheduler {
                        scheduler.capture(&tag, self.step_index + 1);
                    }
                    let targets = self.capture_targets();
                    self.bridge
                        .capture_scheduler(&tag, self.step_index + 1, &targets);
                }
            }
            if let (Some(due), Some(every)) = (next_loop, loop_every) {
                if now >= due {
                    for op in &step.ops {
                        self.apply(op, result)?;
                    }
                    next_loop = Some(due.max(now) + every);
                }
            }
            if let Some(pb) = &self.progress {
                pb.set_position(self.held_ms + start.elapsed().as_millis() as u64);
                pb.set_message(format!("step {}", self.step_index + 1));
            }
            let mut wake = next_sample.min(end);
            if let Some(due) = next_loop {
                wake = wake.min(due);
            }
            if let Some(periodic) = &self.periodic {
                wake = wake.min(Instant::now() + periodic.time_until_due(Instant::now()));
            }
            let now = Instant::now();
            if wake > now {
                std::thread::sleep(wake - now);
            }
        }
        self.noise.end(&self.worker_tids());
        self.held_ms += start.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Every live worker's pid or tid (noise sampling).
    fn worker_tids(&self) -> Vec<i32> {
        self.batches.iter().flat_map(Batch::worker_pids).collect()
    }

    /// The CPUs the live workers may use: every CPU unless each batch is
    /// bound to a cpuset.
    fn run_cpus(&self) -> Vec<usize> {
        let mut cpus = BTreeSet::new();
        for batch in &self.batches {
            match &batch.cpus_bound {
                Some(bound) => cpus.extend(bound.iter().copied()),
                None => return self.topology.cpu_ids(),
            }
        }
        if cpus.is_empty() {
            return self.topology.cpu_ids();
        }
        cpus.into_iter().collect()
    }
}
