//! `runq run SCENARIO|FILE.toml`: run a scenario on this kernel and check it.

use std::path::PathBuf;
use std::time::Duration;

use runq::error::RunqError;
use runq::scenario::{self, RunOptions};
use runq::scheduler::SchedulerSpec;

#[derive(clap::Args)]
#[command(after_help = "Exit codes: 0 every check passed, 1 a check failed, \
2 bad input (nothing was spawned), 3 environment problem (e.g. no cgroup controller), \
or with --strict-host a failure while other processes kept the run's CPUs busy.")]
pub struct Args {
    /// A catalog name (see `runq list`) or a scenario file (.toml).
    #[arg(value_name = "SCENARIO|FILE.toml")]
    scenario: String,
    /// Replace the scenario's duration (e.g. 500ms, 5s, 1m).
    #[arg(long, value_parser = parse_duration_arg)]
    duration: Option<Duration>,
    /// Replace the worker count of every work in the scenario.
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Seed of the run's random choices (printed in the report).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    quiet: bool,
    /// A failure while other processes kept the run's CPUs busy (the
    /// failure line says "host busy") exits 3, inconclusive, instead of 1.
    #[arg(long)]
    strict_host: bool,
    /// Run the scenario N times (fresh cgroups and workers, seeds S, S+1,
    /// ...); --json then writes one document with every run and per-metric
    /// summaries, for `runq compare`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    repeat: Option<u32>,
    #[command(flatten)]
    scheduler: SchedulerArgs,
}

/// The scheduler under test, on the command line.
#[derive(clap::Args, Debug, Default)]
pub struct SchedulerArgs {
    /// Run the scenario under this sched_ext scheduler (a name found on
    /// PATH, in ~/.cargo/bin or in runq's scheduler cache, or a path);
    /// replaces the scenario's [scheduler] binary.
    #[arg(long, value_name = "BINARY")]
    pub scheduler: Option<String>,
    /// An argument for the scheduler (repeatable); replaces the scenario's
    /// [scheduler] args.
    #[arg(long = "scheduler-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub scheduler_arg: Vec<String>,
}

impl SchedulerArgs {
    /// The scenario's scheduler with the flags applied (bad input when
    /// arguments are given for no scheduler).
    pub fn apply(
        &self,
        from_scenario: Option<&SchedulerSpec>,
    ) -> anyhow::Result<Option<SchedulerSpec>> {
        let mut spec =
            match (&self.scheduler, from_scenario) {
                (Some(binary), Some(base)) => SchedulerSpec {
                    binary: binary.clone(),
                    ..base.clone()
                },
                (Some(binary), None) => SchedulerSpec::new(binary.clone()),
                (None, Some(base)) => base.clone(),
                (None, None) if self.scheduler_arg.is_empty() => return Ok(None),
                (None, None) => return Err(RunqError::bad_input(
                    "--scheduler-arg: the scenario has no [scheduler]; name one with --scheduler",
                )),
            };
        if !self.scheduler_arg.is_empty() {
            spec.args = self.scheduler_arg.clone();
        }
        Ok(Some(spec))
    }
}

/// `--duration`: more than 0, at most a scenario's longest duration.
fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    let d = runq::duration::parse(text).map_err(|e| e.to_string())?;
    runq::duration::check_range(
        "the duration",
        text,
        d,
        Duration::from_nanos(1),
        scenario::MAX_SCENARIO_DURATION,
    )
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let scenario = scenario::load(&args.scenario)?;
    if let Some(path) = &args.json {
        runq::report::validate_report_path(path)?;
    }
    let opts = RunOptions {
        seed: args.seed,
        duration: args.duration,
        workers: args.workers,
        progress: !args.quiet,
        scheduler: args.scheduler.apply(scenario.scheduler.as_ref())?,
        ..RunOptions::default()
    };
    scenario::install_interrupt_handler()?;
    if let Some(n) = args.repeat {
        return run_repeated(&scenario, &opts, n as usize, &args);
    }
    let report = scenario::run_scenario(&scenario, &opts)?;
    print!("{}", report.render_text());
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    Ok(report.exit_code_strict(args.strict_host))
}

/// One line per finished run: its verdict and the checks that failed.
fn run_line(i: usize, n: usize, report: &runq::report::RunReport) -> String {
    let failed: Vec<&str> = report.checks.failed().map(|c| c.name.as_str()).collect();
    let verdict = if failed.is_empty() {
        "PASS".to_string()
    } else {
        format!("FAIL {}", failed.join(", "))
    };
    let busy = match report.checks.failed().find_map(|c| c.host_busy.as_ref()) {
        Some(why) => format!(" (host busy: {why})"),
        None => String::new(),
    };
    format!("run {}/{n} seed {}: {verdict}{busy}", i + 1, report.seed)
}

fn run_repeated(
    scenario: &scenario::Scenario,
    opts: &RunOptions,
    n: usize,
    args: &Args,
) -> anyhow::Result<i32> {
    let repeated = runq::regress::run_repeated(scenario, opts, n, !args.quiet, |i, report| {
        println!("{}", run_line(i, n, report));
    })?;
    print!("\n{}", repeated.render_text());
    if let Some(path) = &args.json {
        runq::output::write_output("--json", path, repeated.to_json().as_bytes())?;
    }
    Ok(repeated.exit_code(args.strict_host))
}
