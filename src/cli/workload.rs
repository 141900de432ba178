//! `runq workload`: run one group of workers for a while and print their
//! telemetry.

use std::path::PathBuf;
use std::time::Duration;

use runq::error::{RunqError, EXIT_CHECK_FAILED, EXIT_OK};
use runq::workload::{
    AffinityIntent, CloneMode, SchedPolicy, WorkType, WorkerReport, WorkloadConfig, WorkloadHandle,
    CLI_FORMS,
};

#[derive(clap::Args)]
#[command(after_help = work_forms_help())]
pub struct Args {
    /// Work type and parameters: TYPE[:k=v,...], e.g. futex_ping_pong:spin_iters=100.
    #[arg(long, default_value = "cpu_spin", value_name = "TYPE[:k=v,...]")]
    work: String,
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// How long the workers run: 500ms, 2s, 1.5s, 1m.
    #[arg(long, default_value = "2s")]
    duration: String,
    /// Worker processes (fork) or threads of one host process (thread).
    #[arg(long = "clone", default_value = "fork", value_name = "fork|thread")]
    clone_mode: String,
    /// Pin every worker to these CPUs, e.g. 0,1 or 0-3.
    #[arg(long)]
    cpus: Option<String>,
    /// Scheduling policy: normal, batch, idle, fifo:PRIO, rr:PRIO.
    #[arg(long, default_value = "normal")]
    policy: String,
    /// Nice value of every worker (-20..=19).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    nice: i32,
    /// Seed for latency sampling and random choices.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the setup and the reports as JSON: {"config": {...}, "workers": [...]}.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn work_forms_help() -> String {
    format!("Work types (defaults shown):\n  {}", CLI_FORMS.join("\n  "))
}

/// Reads `--duration` (grammar in `runq::duration`): more than 0, at most
/// a day.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let d = runq::duration::parse(text)
        .map_err(|e| RunqError::bad_input(format!("--duration: {e}")))?;
    runq::duration::check_range(
        "--duration",
        text,
        d,
        Duration::from_nanos(1),
        runq::scenario::MAX_SCENARIO_DURATION,
    )
    .map_err(RunqError::bad_input)
}

fn parse_policy(text: &str) -> anyhow::Result<SchedPolicy> {
    text.parse()
        .map_err(|e| RunqError::bad_input(format!("--policy {e}")))
}

/// Build the config from the arguments; every problem is bad input.
fn config_from(args: &Args) -> anyhow::Result<WorkloadConfig> {
    let work = WorkType::parse_cli(&args.work)?;
    let clone_mode = match args.clone_mode.as_str() {
        "fork" => CloneMode::Fork,
        "thread" => CloneMode::Thread,
        other => {
            return Err(RunqError::bad_input(format!(
                "--clone `{other}`: use fork or thread"
            )))
        }
    };
    let affinity = match &args.cpus {
        None => AffinityIntent::Inherit,
        Some(list) => AffinityIntent::Exact(runq::topology::parse_cpu_list(list).map_err(|e| {
            RunqError::bad_input(format!("--cpus `{list}`: {e}; write e.g. 0,1 or 0-3"))
        })?),
    };
    let config = WorkloadConfig {
        work,
        workers: args.workers,
        clone_mode,
        affinity,
        policy: parse_policy(&args.policy)?,
        nice: args.nice,
        seed: args.seed,
        ..WorkloadConfig::default()
    };
    config.validate()?;
    Ok(config)
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let config = config_from(&args)?;
    let duration = parse_duration(&args.duration)?;
    if let Some(path) = &args.json {
        runq::output::check_output_path("--json", path)?;
    }
    runq::scenario::install_interrupt_handler()?;
    let mut handle = WorkloadHandle::spawn(&config)?;
    handle.start()?;
    if let Some(signal) = hold_unless_interrupted(duration) {
        // Stop and reap every worker before saying so.
        drop(handle.stop_and_collect());
        return Err(RunqError::environment(format!(
            "interrupted by {signal}: the workers were stopped"
        )));
    }
    let reports = handle.stop_and_collect();
    print!("{}", render_table(&reports));
    if let Some(path) = &args.json {
        let value = serde_json::json!({ "config": config, "workers": reports });
        let text = serde_json::to_string_pretty(&value)? + "\n";
        runq::output::write_output("--json", path, text.as_bytes())?;
    }
    let failed = reports.iter().filter(|r| !r.completed).count();
    if failed > 0 {
        eprintln!("runq: {failed} worker(s) did not complete (see the exit column)");
        return Ok(EXIT_CHECK_FAILED);
    }
    Ok(EXIT_OK)
}

/// How often the hold looks for SIGINT/SIGTERM.
const INTERRUPT_POLL: Duration = Duration::from_millis(20);

/// Let the workers run for `duration`; the interrupt that cut it short, if
/// one arrived.
fn hold_unless_interrupted(duration: Duration) -> Option<nix::sys::signal::Signal> {
    let end = std::time::Instant::now() + duration;
    loop {
        if let Some(signal) = runq::scenario::interrupt_signal() {
            return Some(signal);
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(left.min(INTERRUPT_POLL));
    }
}

fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

fn us(v: Option<u64>) -> String {
    v.map_or("-".into(), |n| format!("{:.1}", n as f64 / 1e3))
}

/// Per-worker table plus totals.
pub fn render_table(reports: &[WorkerReport]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>3} {:>8} {:>3} {:<17} {:>11} {:>10} {:>9} {:>9} {:>6} {:<9} {:>8} {:>9} {:>9} exit",
        "#",
        "tid",
        "grp",
        "work",
        "units",
        "units/s",
        "cpu_ms",
        "off_ms",
        "migr",
        "cpus",
        "gap_ms",
        "wake_p50",
        "wake_p99",
    );
    let mut all_lat: Vec<u64> = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let mut lat = r.wake_latency_ns.clone();
        lat.sort_unstable();
        all_lat.extend(&lat);
        let cpus: Vec<usize> = r.cpus_used.iter().copied().collect();
        let exit = if r.completed {
            "ok".to_string()
        } else {
            format!("{:?}", r.exit)
        };
        let _ = writeln!(
            out,
            "{:>3} {:>8} {:>3} {:<17} {:>11} {:>10.0} {:>9.1} {:>9.1} {:>6} {:<9} {:>8} {:>9} {:>9} {}",
            i,
            r.tid,
            r.group,
            r.work_type,
            r.work_units,
            r.rate(),
            r.cpu_time_ns as f64 / 1e6,
            r.off_cpu_ns as f64 / 1e6,
            r.migrations,
            runq::topology::format_cpu_list(&cpus),
            r.longest_gap.as_ref().map_or("-".into(), |g| format!("{:.2}", g.ms)),
            us(percentile(&lat, 0.5)),
            us(percentile(&lat, 0.99)),
            exit
        );
    }
    all_lat.sort_unstable();
    let units: u64 = reports.iter().map(|r| r.work_units).sum();
    let cpu: u64 = reports.iter().map(|r| r.cpu_time_ns).sum();
    let migr: u64 = reports.iter().map(|r| r.migrations).sum();
    let wakes: u64 = reports.iter().map(|r| r.wake_latency_count).sum();
    let done = reports.iter().filter(|r| r.completed).count();
    let _ = writeln!(
        out,
        "total: {} workers ({} completed), {} units, {:.1} ms cpu, {} migrations, {} wakes (p50 {} us, p99 {} us)",
        reports.len(),
        done,
        units,
        cpu as f64 / 1e6,
        migr,
        wakes,
        us(percentile(&all_lat, 0.5)),
        us(percentile(&all_lat, 0.99)),
    );
    out
}
