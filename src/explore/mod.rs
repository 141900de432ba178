//! Exploration: fork-based timeline splitting with coverage, energy and
//! replayable recipes.
//!
//! A program draws every choice from [`rng()`] (a counting RNG) and states
//! its properties with [`sometimes`], [`always`] and the numeric variants.
//! [`explore`] runs it from several root seeds, each in a forked root
//! timeline. The first time a `sometimes` holds (or a numeric assertion
//! sees a new best value), the timeline splits: it forks children, each
//! reseeded with FNV-1a of (parent seed, assertion name, child index), and
//! each continues from that point. Counters, coverage bitmaps, the explored
//! map, the assertion table and the first bug's recipe live in anonymous
//! shared memory ([`shm`]), so all timelines see them. A child that fails an
//! `always` exits 42 and counts as a bug; one killed by a signal (or
//! panicking) counts as a crash; each keeps its [`Recipe`], which
//! [`replay`] reruns in-process without forking.
//!
//! Rules: exploration forks, so it refuses to run when the process has more
//! than one thread; programs must be deterministic given their draws and
//! must not leave live threads or children at a split point.
//!
//! | file | owns |
//! | --- | --- |
//! | `driver.rs` | [`explore`] over root seeds, [`replay`], [`ExploreReport`] |
//! | `split.rs` | the split loop: fork child timelines at a discovery, wait, merge |
//! | `adaptive.rs` | adaptive energy: per-mark budgets, batches, barren marks |
//! | `fork.rs` | the fork every timeline goes through (single-threaded check, death signal) |
//! | `assert.rs` | the timeline context and [`sometimes`], [`always`] and the numeric assertions |
//! | `recipe.rs` | [`Recipe`]: the path from a root seed to one timeline, and its text form |
//! | `rng.rs` | the counting RNG and FNV-1a seed mixing |
//! | `shm.rs` | anonymous shared memory that survives `fork` |
//! | `state.rs` | the layout of that memory: counters, recorded recipes, assertions, bitmaps |
//! | `scenarios.rs` | randomized scenarios on real cgroups and workers, checked at step boundaries |
//! | `maze.rs` | the built-in maze: a bug behind a chain of rare choices |

mod adaptive;
mod assert;
mod driver;
pub mod fork;
pub mod maze;
mod recipe;
pub mod rng;
pub mod scenarios;
pub mod shm;
mod split;
pub mod state;

pub use adaptive::AdaptiveConfig;
pub use assert::{
    always, always_greater, always_less, cover, declare_sometimes, in_exploration, no_split, rng,
    rng_calls, sometimes, sometimes_greater, sometimes_less, TimelineRng,
};
pub use driver::{
    explore, replay, run_plain, ExploreConfig, ExploreReport, Parallelism, ReplayReport, StopReason,
};
pub use recipe::{ForkStep, Recipe};
pub use split::BUG_EXIT;
pub use state::{AssertKind, AssertionSummary, RecordedTimeline};
