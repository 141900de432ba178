//! The machine a run ran on: what it is (context) and how busy it was
//! with other work while the run held (noise).
//!
//! | file | owns |
//! | --- | --- |
//! | `context.rs` | [`HostContext`]: kernel, command line, CPU model, SMT, cpufreq, memory, scheduler, runq version; the differences that move numbers |
//! | `noise.rs` | [`HostNoise`] and its sampler: CPU time taken on the run's CPUs by processes outside the run, workers' run delays, load averages, the host-busy verdict |

mod context;
mod noise;

pub use context::{ContextDifference, CpuFreq, HostContext, SchedulerIdentity};
pub use noise::{HostNoise, NoiseSample, NoiseSampler, BUSY_FOREIGN_SHARE, BUSY_PEAK_SHARE};
