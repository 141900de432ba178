//! Workloads: the workers runq spawns (config, spawn/handle, worker bodies,
//! report) and the external programs run beside them ([`payload`]).
//!
//! `WorkloadHandle::spawn` validates a [`WorkloadConfig`], forks the
//! workers (or one host process per group whose threads are the workers),
//! parks them at a start rendezvous in shared memory, and `start()`
//! releases them. `stop_and_collect()` sets the stop word, wakes blocked
//! workers (futex wake, SIGUSR1 without SA_RESTART, repeated until each
//! worker is out of its body) and reads one JSON report per worker from its
//! pipe before a deadline; a worker that died, hung or wrote garbage gets a
//! sentinel report with its exit shape.
//!
//! | file | owns |
//! | --- | --- |
//! | `config.rs` | [`WorkloadConfig`], [`WorkType`] (with its [`Demand`]), affinity, memory policy, validation |
//! | `policy.rs` | [`SchedPolicy`] and its one text spelling (`fifo:50`) |
//! | `handle.rs` | [`WorkloadHandle`]: spawn parked, place, start, stop, collect; the spawn guard |
//! | `worker.rs` | the worker side: setup, the start rendezvous, the body, the report |
//! | `bodies.rs` | one loop per work type |
//! | `telemetry.rs` | per-worker measurements: CPU clock, CPU changes, gaps, latency reservoirs |
//! | `report.rs` | [`WorkerReport`], [`ExitShape`], sentinels |
//! | `shm.rs` | controller/worker shared memory: start and stop words, one slot per worker |
//! | [`ready`] | ready markers of workers and payloads |
//! | [`payload`] | external programs (stress-ng, hackbench, ...) run in runq's cgroups |

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
