//! Tracing: ptrace event source, state machine, breakpoints, DWARF lines, lcov.
//!
//! [`trace`] launches a command under ptrace (seized, with fork, vfork,
//! clone, exec and exit events), follows every process and thread it
//! creates, forwards the signals they should get, and ends once every traced
//! task is gone. With coverage on, each executable's DWARF line table gives
//! the addresses that begin source lines; an int3 goes on each, and the first
//! hit of each (in any process or thread) records the line and removes the
//! breakpoint, so a line costs one stop per address space at most.
//!
//! x86-64 only (int3 and the register layout).
//!
//! | file | owns |
//! | --- | --- |
//! | `tracer/` | the ptrace event loop and the state machine of traced tasks (its `mod.rs` has a table of its files) |
//! | `sys.rs` | the few system calls nix does not wrap, the traced command's launch; every `unsafe` of the tracer |
//! | `contain.rs` | keeping the traced tree killable as a whole, detached members included |
//! | `breakpoints.rs` | int3 breakpoints per address space |
//! | `lines.rs` | DWARF line tables and functions of an executable |
//! | `coverage.rs` | line and function coverage, lcov |
//! | `model.rs` | what a trace records: processes and the event timeline |
//! | `render.rs` | the process tree as text, the JSON report |

pub mod breakpoints;
pub mod contain;
pub mod coverage;
pub mod lines;
pub mod model;
pub mod render;
mod sys;
pub mod tracer;

pub use coverage::{Coverage, CoverageSummary};
pub use lines::SourceFilter;
pub use model::{Crash, Event, EventKind, ExecRecord, ExitStatus, Origin, ProcessRecord};
pub use render::{process_tree, TraceReport};
pub use tracer::{trace, InterruptAction, TraceConfig, TraceOutcome};
