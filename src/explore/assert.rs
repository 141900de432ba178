//! The timeline context and the assertion API.
//!
//! Each process runs at most one timeline at a time; its context (counting
//! RNG, seed, depth, recipe, coverage slot) lives in a thread-local and is
//! copied into every forked child. The free functions here are what a
//! program calls; outside an exploration or replay they only evaluate.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use rand::RngCore;

use super::adaptive::AdaptiveConfig;
use super::recipe::Recipe;
use super::rng::{fnv1a64, CountingRng};
use super::state::{AssertKind, Shared};

/// How a timeline splits (copied into every child).
#[derive(Clone, Debug)]
pub(crate) struct SplitConfig {
    pub max_depth: u32,
    pub per_split: u32,
    pub parallel: usize,
    pub adaptive: Option<AdaptiveConfig>,
    pub stop_at_first_bug: bool,
}

/// The exploration side of a timeline: shared state and split settings.
#[derive(Clone)]
pub(crate) struct Explorer {
    pub shared: Rc<Shared>,
    pub cfg: SplitConfig,
}

/// Local totals of one assertion (plain runs and replays).
#[derive(Clone, Debug, Default)]
pub(crate) struct LocalRecord {
    pub kind: Option<AssertKind>,
    pub passes: u64,
    pub failures: u64,
}

/// The timeline this process is running.
pub(crate) struct Timeline {
    pub rng: CountingRng,
    pub seed: u64,
    pub depth: u32,
    pub recipe: Recipe,
    pub ordinal: u64,
    pub slot: usize,
    pub explore: Option<Explorer>,
    pub local: BTreeMap<String, LocalRecord>,
    pub failed: Vec<String>,
    /// Discoveries are recorded but do not split (see [`no_split`]).
    pub no_split: bool,
}

impl Timeline {
    pub fn new(recipe: Recipe, explore: Option<Explorer>) -> Self {
        let rng =
            CountingRng::with_schedule(recipe.seed, recipe.forks.iter().map(|f| (f.calls, f.seed)));
        Self {
            rng,
            seed: recipe.seed,
            depth: 0,
            recipe,
            ordinal: 0,
            slot: 0,
            explore,
            local: BTreeMap::new(),
            failed: Vec::new(),
            no_split: false,
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Timeline>> = const { RefCell::new(None) };
}

/// Make `timeline` current; returns the one it replaces.
pub(crate) fn install(timeline: Option<Timeline>) -> Option<Timeline> {
    CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), timeline))
}

/// Run `f` on the current timeline, if any.
pub(crate) fn with_timeline<R>(f: impl FnOnce(&mut Timeline) -> R) -> Option<R> {
    CURRENT.with(|c| c.borrow_mut().as_mut().map(f))
}

/// True when the current timeline has failed an `always`.
pub(crate) fn current_failed() -> bool {
    with_timeline(|t| !t.failed.is_empty()).unwrap_or(false)
}

fn coverage_hash(name: &str, kind: AssertKind, cond: bool) -> u64 {
    fnv1a64(name.as_bytes()) ^ ((kind as u64) << 1 | cond as u64).wrapping_mul(0x9e37_79b9)
}

/// Log2 bucket of a numeric value, so new orders of magnitude are coverage.
fn value_bucket(value: i64) -> u64 {
    let magnitude = 64 - value.unsigned_abs().leading_zeros() as u64;
    magnitude << 1 | (value < 0) as u64
}

fn evaluate(name: &str, kind: AssertKind, cond: bool, value: Option<i64>) {
    with_timeline(|t| {
        if !cond && !kind.is_sometimes() && !t.failed.iter().any(|f| f == name) {
            t.failed.push(name.to_string());
        }
        match t.explore.clone() {
            Some(ex) => {
                ex.shared.cover(t.slot, coverage_hash(name, kind, cond));
                if let Some(v) = value {
                    let h = fnv1a64(name.as_bytes()).rotate_left(17) ^ value_bucket(v);
                    ex.shared.cover(t.slot, h);
                }
                if ex.shared.record(name, kind, cond, value) && !t.no_split {
                    super::split::split(t, &ex, name);
                }
            }
            None => {
                let rec = t.local.entry(name.to_string()).or_default();
                rec.kind = Some(kind);
                if cond {
                    rec.passes += 1;
                } else {
                    rec.failures += 1;
                }
            }
        }
    });
}

/// Run `f` with splitting off: assertions are recorded, discoveries do not
/// fork (for the end of a program, where children would have nothing left
/// to do).
pub fn no_split<R>(f: impl FnOnce() -> R) -> R {
    let before = with_timeline(|t| std::mem::replace(&mut t.no_split, true));
    let out = f();
    if let Some(before) = before {
        with_timeline(|t| t.no_split = before);
    }
    out
}

/// Declare a `sometimes` before it can be reached, so an exploration that
/// never reaches it reports it as never fired.
pub fn declare_sometimes(name: &str) {
    with_timeline(|t| {
        if let Some(ex) = &t.explore {
            ex.shared.declare(name, AssertKind::Sometimes);
        } else {
            t.local.entry(name.to_string()).or_default().kind = Some(AssertKind::Sometimes);
        }
    });
}

/// `cond` must hold at least once over the exploration. Its first success
/// is a discovery: the timeline splits there. Returns `cond`.
pub fn sometimes(name: &str, cond: bool) -> bool {
    evaluate(name, AssertKind::Sometimes, cond, None);
    cond
}

/// `cond` must hold every time. A failure marks the timeline as having
/// found a bug (its process exits 42 when the program returns). Returns
/// `cond`.
pub fn always(name: &str, cond: bool) -> bool {
    evaluate(name, AssertKind::Always, cond, None);
    cond
}

/// `value > threshold` at least once; records the largest value, and a new
/// largest value is a discovery too. Returns `value > threshold`.
pub fn sometimes_greater(name: &str, value: i64, threshold: i64) -> bool {
    let cond = value > threshold;
    evaluate(name, AssertKind::SometimesGreater, cond, Some(value));
    cond
}

/// `value < threshold` at least once; records the smallest value, and a new
/// smallest value is a discovery too. Returns `value < threshold`.
pub fn sometimes_less(name: &str, value: i64, threshold: i64) -> bool {
    let cond = value < threshold;
    evaluate(name, AssertKind::SometimesLess, cond, Some(value));
    cond
}

/// `value > threshold` every time; records the smallest value seen.
pub fn always_greater(name: &str, value: i64, threshold: i64) -> bool {
    let cond = value > threshold;
    evaluate(name, AssertKind::AlwaysGreater, cond, Some(value));
    cond
}

/// `value < threshold` every time; records the largest value seen.
pub fn always_less(name: &str, value: i64, threshold: i64) -> bool {
    let cond = value < threshold;
    evaluate(name, AssertKind::AlwaysLess, cond, Some(value));
    cond
}

/// Mark a coverage point (`name`, `value`) as reached; new points guide
/// adaptive exploration.
pub fn cover(name: &str, value: u64) {
    with_timeline(|t| {
        if let Some(ex) = &t.explore {
            ex.shared.cover(
                t.slot,
                fnv1a64(name.as_bytes()) ^ value.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
        }
    });
}

/// The current timeline's RNG as a [`RngCore`]. Every draw counts; outside
/// an exploration or replay it draws from its own generator seeded 0.
pub fn rng() -> TimelineRng {
    TimelineRng {
        fallback: CountingRng::new(0),
    }
}

/// True inside a forked exploration timeline (false in replays and plain
/// runs).
pub fn in_exploration() -> bool {
    with_timeline(|t| t.explore.is_some()).unwrap_or(false)
}

/// Draws made so far by the current timeline.
pub fn rng_calls() -> u64 {
    with_timeline(|t| t.rng.calls()).unwrap_or(0)
}

/// Handle on the current timeline's counting RNG.
pub struct TimelineRng {
    fallback: CountingRng,
}

impl TimelineRng {
    fn draw(&mut self) -> u64 {
        match with_timeline(|t| t.rng.draw()) {
            Some(v) => v,
            None => self.fallback.draw(),
        }
    }
}

impl RngCore for TimelineRng {
    fn next_u32(&mut self) -> u32 {
        (self.draw() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.draw()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
