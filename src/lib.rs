//! runq: a test harness for Linux process schedulers.
//!
//! Data flows one way: scenario -> (cgroup, workload) -> reports -> check ->
//! report. `explore` wraps the scenario executor from outside; `trace` and
//! `vm` wrap whole processes. See DESIGN.md for the process model.

pub mod cache;
pub mod cgroup;
pub mod check;
pub mod error;
pub mod explore;
pub mod output;
pub mod report;
pub mod scenario;
pub mod scratch;
pub mod snapshot;
pub mod topology;
pub mod trace;
pub mod vm;
pub mod workload;

/// The names most callers need.
pub mod prelude {
    pub use crate::error::{exit_code_for, RunqError};
}
