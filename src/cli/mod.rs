//! One file per subcommand: its arguments and how its results are printed.
//! The work itself is the library's; value enums that map clap arguments
//! onto library types live here, not in the library.
//!
//! | file | subcommand |
//! | --- | --- |
//! | `run.rs` | `runq run SCENARIO\|FILE.toml`: run a scenario (once or repeated, optionally with a scheduler under test) and check it |
//! | `list.rs` | `runq list`: the canned scenarios, by family |
//! | `workload.rs` | `runq workload`: one group of workers for a while, their telemetry |
//! | `explore.rs` | `runq explore` and `runq replay` |
//! | `trace.rs` | `runq trace`: a command under ptrace; tree, timeline, coverage, lcov |
//! | `vm.rs` | `runq vm` and `runq shell`: boot a kernel with a topology, run a runq command line inside |
//! | `topo.rs` | `runq topo`: the CPU topology and its spec string |
//! | `report.rs` | `runq report`: print a saved run, compare two, or write the HTML page |
//! | `compare.rs` | `runq compare A.json B.json`: B against A, per metric |
//! | `kernel.rs` | `runq kernel fetch\|list`: kernels runq can boot |

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
