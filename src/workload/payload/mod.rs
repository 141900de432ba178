//! Payloads: external programs (stress-ng, hackbench, cyclictest, or any
//! binary) run as workloads in runq's cgroups.
//!
//! A [`PayloadSpec`] names the binary, its arguments, the exit code it must
//! end with, the metrics to pull from its output (one regex capture group
//! per metric, applied line by line to stdout and stderr together) and the
//! bounds those metrics must respect.
//!
//! [`PayloadHandle::spawn`] starts the program on
//! [`crate::process::Launch`]: held before exec until its pid is in every
//! given cgroup, so the program and everything it forks or clones later is
//! born inside them; in its own process group; dying with the controller;
//! with a private /dev/shm so shared memory it leaves behind cannot leak.
//! While it runs, the owner calls [`PayloadHandle::tick`] from its event
//! loop (or [`PayloadHandle::wait`]): that drains the output, feeds the
//! metric extractors, and samples the process tree, checking that every
//! process of the tree is a member of every cgroup. With `trace = true` the
//! program runs under runq's ptrace engine instead, which records every
//! fork, vfork, clone and exec, so even processes that live for
//! microseconds appear in the tree; the tracing process itself joins the
//! cgroups (so its child is born there) and is not part of the tree.
//!
//! Ending: [`PayloadHandle::wait`] lets the program finish (SIGTERM, then
//! SIGKILL, at its timeout: the exit is then `TimedOut`);
//! [`PayloadHandle::stop_and_collect`] stops it now (SIGTERM to the group,
//! SIGKILL after [`STOP_GRACE`]); dropping the handle stops it the same
//! way. Whatever remains of the tree is killed and reaped. The handle
//! reports facts ([`PayloadReport`]); pass/fail is the payload check's
//! ([`crate::check::judge_payload`]).
//!
//! | file | owns |
//! | --- | --- |
//! | `spec.rs` | [`PayloadSpec`], metrics and bounds, the TOML form, fixtures, validation |
//! | `binary.rs` | PATH lookup and the Debian package hint for a missing program |
//! | `metrics.rs` | pattern compilation, line splitting, streaming aggregation |
//! | `launch.rs` | starting on `process::Launch`: hold, cgroup placement, release, ready-marker environment, the trace-mode child |
//! | `tree.rs` | the sampled process tree, escapes from the cgroups, killing stragglers |
//! | `handle.rs` | [`PayloadHandle`]: the event loop, graceful stop, teardown, the facts |
//! | `report.rs` | [`PayloadReport`] |

mod binary;
mod handle;
mod launch;
mod metrics;
mod report;
mod spec;
mod tree;

pub use binary::{debian_package_for, resolve_binary};
pub use handle::{cgroup_procs_files, PayloadHandle, DEFAULT_READY_TIMEOUT, STOP_GRACE};
pub use launch::TAIL_BYTES;
pub use metrics::MAX_LINE_BYTES;
pub use report::PayloadReport;
pub use spec::{
    payloads_from_toml, Aggregate, MetricBound, MetricSpec, PayloadSpec, DEFAULT_TIMEOUT, FIXTURES,
    MAX_TIMEOUT,
};
pub use tree::TREE_SAMPLE_INTERVAL;
