//! runq: a test harness for Linux process schedulers.
//!
//! Data flows one way: scenario -> (scheduler, cgroup, workload) -> reports
//! -> check -> report -> (regress, html). `explore` wraps the scenario
//! executor from outside; `trace` and `vm` wrap whole processes; `test`
//! runs scenarios as `cargo test` cases. `docs/ARCHITECTURE.md` in the
//! repository maps the modules and their files and states the process model
//! (single-threaded before fork, death signals, cgroup roots, exit codes).

pub mod cache;
pub mod cgroup;
pub mod check;
pub mod duration;
pub mod error;
pub mod explore;
pub mod host;
pub mod html;
pub mod kernel;
pub mod output;
pub mod process;
pub mod regress;
pub mod report;
pub mod scenario;
pub mod scheduler;
pub mod scratch;
pub mod snapshot;
pub mod test;
pub mod topology;
pub mod trace;
pub mod vm;
pub mod workload;

/// `#[runq::test(...)]`: see the [`test`](mod@test) module.
pub use runq_macros::test;

pub mod prelude {
    //! What a test or a tool that runs scenarios needs, in one import:
    //! `use runq::prelude::*;`.
    //!
    //! In:
    //! - building a scenario: [`Scenario`], [`CgroupDef`], [`WorkSpec`],
    //!   [`Step`], [`Op`], [`HoldSpec`], [`CpusetSpec`], and the workload
    //!   vocabulary they take ([`WorkType`], [`SchedPolicy`], [`AffinityIntent`],
    //!   [`MemPolicy`]), plus [`Duration`] for holds and run lengths;
    //! - running it: [`run_scenario`], [`RunOptions`], [`Topology`], and
    //!   [`SchedulerSpec`] for a sched_ext scheduler under test;
    //! - judging it: [`Thresholds`], [`RunReport`], [`AssertResult`],
    //!   [`CheckOutcome`];
    //! - failing well: [`RunqError`], [`exit_code_for`].
    //!
    //! Left out, to keep a glob import from shadowing a caller's own names:
    //! the executor's hooks and boundaries (exploration drives them, see
    //! [`crate::explore`]), the check inputs and [`crate::check::evaluate`]
    //! (a run builds them), cgroup backends, payload specs (written in TOML
    //! first), tracing, VMs and snapshots. Import those from their modules.

    pub use std::time::Duration;

    pub use crate::check::{AssertResult, CheckOutcome, Thresholds};
    pub use crate::error::{exit_code_for, RunqError};
    pub use crate::report::RunReport;
    pub use crate::scenario::{
        run_scenario, CgroupDef, CpusetSpec, HoldSpec, Op, RunOptions, Scenario, Step, WorkSpec,
    };
    pub use crate::scheduler::SchedulerSpec;
    pub use crate::topology::Topology;
    pub use crate::workload::{AffinityIntent, MemPolicy, SchedPolicy, WorkType};
}
