//! Regressions: repeated runs, the metrics they are compared by, the
//! statistics behind a verdict, and the comparison of two sets of runs.
//!
//! | file | owns |
//! | --- | --- |
//! | `metrics.rs` | the fixed metric set of a run (per run, per cgroup, scheduler counters, host context), each with a unit and a [`Direction`] |
//! | `stats.rs` | quantiles, [`Summary`], the Mann-Whitney U test, the seeded bootstrap interval |
//! | `repeat.rs` | [`RepeatReport`]: N runs of a scenario, check pass counts, metric summaries; [`run_repeated`] |
//! | `load.rs` | reading a run's or a repeated run's document, every problem named (exit 2) |
//! | `compare.rs` | [`compare`]: per-metric verdicts, context warnings, the exit code |

mod compare;
mod load;
mod metrics;
mod repeat;
mod stats;

pub use compare::{
    compare, judge_values, runs_needed, CompareOptions, Comparison, MetricComparison, Side,
    Verdict, COMPARISON_SCHEMA_VERSION,
};
pub use load::{parse_document, read_document, Document};
pub use metrics::{metrics_of, scheduler_counters, Direction, MetricValue};
pub use repeat::{
    figure, metric_series, run_repeated, CheckTally, MetricSeries, RepeatReport, REPEAT_KIND,
    REPEAT_SCHEMA_VERSION,
};
pub use stats::{
    bootstrap_change, mann_whitney, median, min_p_value, quantile, Change, RankTest, Summary,
    BOOTSTRAP_RESAMPLES, EXACT_MAX_N,
};
