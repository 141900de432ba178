//! One file per subcommand: its arguments and how its results are printed.

pub mod compare;
pub mod explore;
pub mod kernel;
pub mod list;
pub mod report;
pub mod run;
pub mod topo;
pub mod trace;
pub mod vm;
pub mod workload;
