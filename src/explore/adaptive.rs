//! Adaptive energy: per-mark budgets, batches, barren marks.
//!
//! A mark reserves `per_mark_energy` units from the global pool and forks
//! in batches of `batch`. After each batch it compares the explored map:
//! when a batch added no coverage and the mark has run at least its
//! minimum (`min_timelines`, or `warm_min_timelines` when the explored map
//! already held coverage from earlier root seeds), the mark is barren: it
//! stops and returns its unspent reservation to the pool. A productive mark
//! keeps drawing from the pool up to `cap_per_mark` timelines.

use std::sync::atomic::Ordering::SeqCst;

use serde::Serialize;

use super::assert::{Explorer, Timeline};
use super::split::{spawn_batch, Batch, Source};
use super::state::Stat;

/// Settings of adaptive mode.
#[derive(Clone, Debug, Serialize)]
pub struct AdaptiveConfig {
    /// Children forked per batch.
    pub batch: u64,
    /// Energy a mark reserves up front.
    pub per_mark_energy: u64,
    /// Timelines a mark runs before it may be declared barren.
    pub min_timelines: u64,
    /// The same minimum on a warm start.
    pub warm_min_timelines: u64,
    /// Most timelines one mark may run.
    pub cap_per_mark: u64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            batch: 4,
            per_mark_energy: 16,
            min_timelines: 8,
            warm_min_timelines: 4,
            cap_per_mark: 64,
        }
    }
}

impl AdaptiveConfig {
    /// Reject settings that cannot work (bad input).
    pub fn validate(&self) -> anyhow::Result<()> {
        use crate::error::RunqError;
        if self.batch == 0 || self.cap_per_mark == 0 {
            return Err(RunqError::bad_input(
                "adaptive: batch and cap_per_mark must be at least 1",
            ));
        }
        if self.min_timelines > self.cap_per_mark || self.warm_min_timelines > self.cap_per_mark {
            return Err(RunqError::bad_input(
                "adaptive: min_timelines and warm_min_timelines must not exceed cap_per_mark",
            ));
        }
        Ok(())
    }
}

/// Run one mark adaptively. Returns early in a forked child.
pub(crate) fn run_mark(
    t: &mut Timeline,
    ex: &Explorer,
    mark: &str,
    cfg: &AdaptiveConfig,
    next_index: &mut u32,
) {
    let shared = &ex.shared;
    let minimum = if shared.get(Stat::Warm) != 0 {
        cfg.warm_min_timelines
    } else {
        cfg.min_timelines
    };
    let mut reserve = shared.take_energy_up_to(cfg.per_mark_energy.min(cfg.cap_per_mark));
    let mut spawned = 0;
    while shared.get(Stat::Stop) == 0 && spawned < cfg.cap_per_mark {
        if reserve == 0 {
            reserve = shared.take_energy_up_to(cfg.batch.min(cfg.cap_per_mark - spawned));
            if reserve == 0 {
                break;
            }
        }
        let count = cfg.batch.min(reserve).min(cfg.cap_per_mark - spawned);
        let before = shared.explored_bits();
        let started = match spawn_batch(
            t,
            ex,
            mark,
            next_index,
            count,
            Source::Reserve(&mut reserve),
        ) {
            Batch::Child => return,
            Batch::Done(n) => n,
        };
        spawned += started;
        if started == 0 {
            break;
        }
        let gained = shared.explored_bits() - before;
        if gained == 0 && spawned >= minimum {
            shared.stat(Stat::BarrenMarks).fetch_add(1, SeqCst);
            shared.stat(Stat::EnergyReturned).fetch_add(reserve, SeqCst);
            break;
        }
    }
    shared.return_energy(reserve);
}
