//! The spawn pipeline: config, spawn/handle, worker bodies, report.
//!
//! `WorkloadHandle::spawn` validates a [`WorkloadConfig`], forks the
//! workers (or one host process per group whose threads are the workers),
//! parks them at a start rendezvous in shared memory, and `start()`
//! releases them. `stop_and_collect()` sets the stop word, wakes blocked
//! workers (futex wake, SIGUSR1 without SA_RESTART, repeated until each
//! worker is out of its body) and reads one JSON report per worker from its
//! pipe before a deadline; a worker that died, hung or wrote garbage gets a
//! sentinel report with its exit shape.

mod bodies;
mod config;
mod handle;
pub mod payload;
mod policy;
pub mod ready;
mod report;
mod shm;
mod telemetry;
mod worker;

pub use bodies::{spin, WorkerContext, SPIN_CHUNK};
pub use config::{
    allowed_cpus, online_nodes, AffinityIntent, CloneMode, CustomWork, Demand, MemPolicy, Phase,
    WorkGroup, WorkType, WorkloadConfig, CLI_FORMS,
};
pub use handle::WorkloadHandle;
pub use policy::SchedPolicy;
pub use report::{
    ExitShape, Gap, Migration, WorkerReport, ITERATION_COST_CAP, MIGRATION_EVENTS_CAP,
    WAKE_LATENCY_CAP,
};
pub use telemetry::Reservoir;
