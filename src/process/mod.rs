//! Child processes: how runq forks, what it reads about processes from
//! /proc, and the supervised external program ([`Launch`]) that payloads
//! and schedulers under test run as. Every `fork` of runq is made in this
//! module, and the child-side rules live here once:
//!
//! - a child asks for SIGKILL when its parent dies, then re-checks the
//!   parent (a parent that died in between would never send it);
//! - between fork and exec a child of a multi-threaded process makes only
//!   async-signal-safe calls; the controller forks while single-threaded;
//! - a child leaves with `_exit` ([`exit_now`]), never by unwinding into
//!   the parent's code.
//!
//! | file | owns |
//! | --- | --- |
//! | `fork.rs` | `fork` with the death signal ([`fork_tied`], checked and unchecked), [`tie_to_parent`] for `pre_exec`, [`exit_now`] |
//! | `proc.rs` | /proc through the `procfs` crate: state, comm, start time, tgid, children, descendants, liveness (zombies are dead), pid lists of cgroup files |
//! | `launch.rs` | [`Launch`] / [`Supervised`]: an external program in its own process group, optionally held before exec, output drained without threads into a bounded tail, graceful stop then SIGKILL of the group |

pub mod fork;
pub mod launch;
pub mod proc;

pub use fork::{
    ensure_single_threaded, exit_now, fork_exiting, fork_tied, fork_tied_checked, fork_untied,
    tie_to_parent, Forked,
};
pub use launch::{Exit, Launch, LaunchError, Supervised, DEFAULT_TAIL_BYTES};
pub use proc::{children_of, descendants, is_alive, read_pid_list, stat, tgid_of, Stat};
