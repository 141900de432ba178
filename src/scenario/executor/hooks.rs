//! What a step-boundary hook sees and returns: [`BoundaryMode`],
//! [`Boundary`], [`LiveCgroupView`], [`StepResult`], and the
//! [`ExecutorHooks`] trait with its no-op [`NoHooks`].
//!
//! Separate because these are the executor's public interface to code that
//! drives it from outside (exploration, tests); the module docs of the
//! executor say what is live at a boundary in each mode.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rand::RngCore;

use crate::check::CgroupRun;
use crate::scenario::dsl::Step;

/// What is live at a step boundary (see the executor's module docs, "Step boundaries").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BoundaryMode {
    #[default]
    Live,
    Quiescent,
}

/// Live workers of one cgroup at a boundary.
#[derive(Clone, Debug)]
pub struct LiveCgroupView {
    pub cgroup: String,
    pub worker_pids: Vec<i32>,
    pub process_pids: Vec<i32>,
    /// Every hierarchy directory backing the cgroup.
    pub paths: Vec<PathBuf>,
}

/// What one finished step did.
#[derive(Clone, Debug, Default)]
pub struct StepResult {
    pub index: usize,
    pub elapsed_ms: f64,
    /// Iterations each live cgroup's workers made during the step's hold
    /// (summed over its workers).
    pub iterations: BTreeMap<String, u64>,
    /// Batches stopped during or at the end of this step, with reports.
    pub collected: Vec<CgroupRun>,
}

/// A step boundary, as hooks see it.
pub struct Boundary<'a> {
    /// The step about to run (`steps.len()` after the last one).
    pub index: usize,
    pub mode: BoundaryMode,
    /// The run's RNG: draw choices from it so explored runs replay.
    pub rng: &'a mut dyn RngCore,
    /// The plan. Hooks may rewrite `steps[index..]` or push steps; the plan
    /// is validated again before it continues (bad input stops the run).
    pub steps: &'a mut Vec<Step>,
    /// The step that just finished (`None` before the first).
    pub previous: Option<&'a StepResult>,
    /// Live workers (empty in `Quiescent` mode).
    pub live: Vec<LiveCgroupView>,
}

/// Callbacks at step boundaries (exploration, tests).
pub trait ExecutorHooks {
    fn at_boundary(&mut self, boundary: &mut Boundary<'_>) -> anyhow::Result<()> {
        let _ = boundary;
        Ok(())
    }
}

/// Hooks that do nothing.
pub struct NoHooks;
impl ExecutorHooks for NoHooks {}
