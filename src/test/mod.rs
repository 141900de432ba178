//! Tests as code: `#[runq::test]` cases, the harness that runs them, and
//! the guest side that runs a case's body inside a booted kernel.
//!
//! ```ignore
//! // tests/sched.rs, a `[[test]]` target with `harness = false`
//! use runq::prelude::*;
//!
//! #[runq::test(gauntlet = "small", scheduler = "scx_bpfland",
//!              profiles = { default = [], lowlat = ["--lowlatency"] })]
//! fn spread(ctx: &mut runq::test::Context) -> anyhow::Result<RunReport> {
//!     ctx.run(&my_scenario())
//! }
//!
//! fn main() { runq::test::main() }
//! ```
//!
//! Each function becomes one test per (topology, profile), named
//! `spread::1n2l2c1t::lowlat`, listed by `--list` and run by `cargo test`
//! or `cargo nextest run` (`--partition count:K/N` shards, `-E` filters).
//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`TestDef`] (what the attribute registers), [`main`] |
//! | `case.rs` | one case: its name, topology, profile, VM settings |
//! | `context.rs` | [`Context`], what a body runs scenarios through |
//! | `outcome.rs` | what a body returns, the case result sent back, the verdict |
//! | `child.rs` | running one body in this process (in the guest, or a host child) |
//! | `vm_runner.rs` | booting a VM for one case or a group of cases |
//! | `shared.rs` | shared boots: one boot for the cases of one group |
//! | `host.rs` | `host = true` cases: what the host can provide, the child run |
//! | `budget.rs` | `RUNQ_BUDGET`: the deterministic subset and its estimate |
//! | `failure.rs` | how a failed case is told: checks, ejection, console, rerun |
//! | `harness.rs` | the libtest command line, trials, skips |
//! | `matrix.rs` | the table of how every case ended, test by (topology, profile) |
//!
//! Environment: `RUNQ_KERNEL` (overrides `kernel = ...`), `RUNQ_BUDGET`
//! (e.g. `10m`), `RUNQ_SHARED_BOOT=1` (one boot per group of cases),
//! `RUNQ_BOOT_ESTIMATE` (seconds per boot for the budget), `CI`.

mod budget;
mod case;
mod child;
mod context;
mod failure;
mod harness;
mod host;
mod matrix;
mod outcome;
mod shared;
mod vm_runner;

pub use budget::{select, Budget, BudgetPlan};
pub use case::{expand_all, Case};
pub use context::Context;
pub use harness::main;
pub use outcome::{CaseResult, IntoOutcome, Outcome, CASE_RESULT_SCHEMA};

/// The named gauntlets `gauntlet = "..."` accepts (the same table as the
/// attribute's; a test keeps them equal).
pub const PRESETS: &[(&str, &[&str])] = &[
    ("small", &["1n1l2c1t", "1n2l2c1t", "1n1l2c2t", "2n1l2c1t"]),
    ("medium", &["1n2l4c1t", "1n2l2c2t", "2n2l2c1t", "2n1l2c2t"]),
    ("smt", &["1n1l2c2t", "1n2l2c2t", "2n1l2c2t"]),
    ("numa", &["2n1l2c1t", "2n2l2c1t", "4n1l2c1t"]),
];

/// What one `#[runq::test]` registers: the function and its attributes,
/// already checked at compile time.
#[derive(Debug)]
pub struct TestDef {
    pub name: &'static str,
    /// `module_path!()` where the function is defined.
    pub module: &'static str,
    pub file: &'static str,
    pub line: u32,
    pub topologies: &'static [&'static str],
    pub scheduler: Option<&'static str>,
    /// (profile name, scheduler arguments).
    pub profiles: &'static [(&'static str, &'static [&'static str])],
    pub kernel: Option<&'static str>,
    pub duration: Option<&'static str>,
    pub memory: Option<&'static str>,
    pub timeout: Option<&'static str>,
    pub host: bool,
    pub expect_fail: Option<&'static str>,
    pub body: fn(&mut Context) -> Outcome,
}

inventory::collect!(TestDef);

/// Every test registered in this binary.
pub fn registered() -> Vec<&'static TestDef> {
    inventory::iter::<TestDef>.into_iter().collect()
}

/// Used by the attribute's expansion; not a stable interface.
#[doc(hidden)]
pub mod __private {
    pub use inventory;

    /// Turns what a body returned into an [`super::Outcome`].
    pub fn outcome<T: super::IntoOutcome>(value: T) -> super::Outcome {
        value.into_outcome()
    }
}
