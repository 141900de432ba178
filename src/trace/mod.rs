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
