//! The scheduler under test: a real sched_ext scheduler that a run starts
//! before its cgroups and workers, proves attached, watches while the
//! scenario runs (its exit, the kernel's `state`, the kernel log), stops
//! after the workers are collected, and reports.
//!
//! | file | owns |
//! | --- | --- |
//! | `spec.rs` | [`SchedulerSpec`]: the TOML `[scheduler]` table, the CLI flags' target, binary lookup (PATH, `~/.cargo/bin`, `<cache>/schedulers/bin`) |
//! | `sysfs.rs` | `/sys/kernel/sched_ext`: state, `enable_seq`, `switch_all`, `nr_rejected`, `root/ops`, `root/events`; `ext.enabled` of a task |
//! | `kmsg.rs` | `/dev/kmsg` read without blocking; the kernel's enabled/disabled lines and their detail lines |
//! | `lifecycle.rs` | [`SchedulerRun`]: preflight, launch and attach wait, ticks from the hold loop, worker observations, event counters, stop |
//! | `report.rs` | [`SchedulerReport`]: the `scheduler` section of the JSON report |
//!
//! The verdicts (`scheduler_attached`, `workers_on_scheduler`,
//! `scheduler_events`) are made in `crate::check::scheduler`.

pub mod kmsg;
pub mod lifecycle;
pub mod report;
pub mod spec;
pub mod sysfs;

pub use lifecycle::{describe_exit, preflight, Preflight, SchedulerRun};
pub use report::{Ejection, EventsRecord, SchedulerReport, WorkerOnExt};
pub use spec::{find_binary, SchedulerSpec, DEFAULT_ATTACH_TIMEOUT, DEFAULT_STOP_TIMEOUT};
pub use sysfs::{EventCounters, SchedExtSysfs, ScxState};

/// The tag of the capture taken when the kernel ejects the scheduler.
pub const EXIT_CAPTURE_TAG: &str = "scheduler_exit";
