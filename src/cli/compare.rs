//! `runq compare A.json B.json`: per-metric verdicts of B against A (see
//! `runq::regress::compare`).

use std::path::PathBuf;

use runq::error::RunqError;
use runq::regress::{compare, read_document, CompareOptions};

#[derive(clap::Args)]
#[command(
    after_help = "Exit codes: 0 no metric regressed beyond the bound with significance, \
1 at least one did, 2 bad input (a file that is not a runq report, a bad flag value)."
)]
pub struct Args {
    /// The baseline: a run's report (`runq run --json`) or a repeated
    /// run's (`runq run --repeat N --json`).
    #[arg(value_name = "A.json")]
    a: PathBuf,
    /// The candidate, judged against A.
    #[arg(value_name = "B.json")]
    b: PathBuf,
    /// Largest change the worse way that is not a regression, e.g. 5% or 0.05.
    #[arg(long, value_name = "PCT", default_value = "5%", value_parser = parse_fraction)]
    max_regression: f64,
    /// Significance level of the rank test (the interval is at 1 - alpha).
    #[arg(long, value_name = "P", default_value_t = 0.01, value_parser = parse_alpha)]
    alpha: f64,
    /// Seed of the bootstrap resampling (same seed, same intervals).
    #[arg(long, value_name = "S", default_value_t = CompareOptions::default().seed)]
    seed: u64,
    /// Also write the comparison as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (text, 1.0),
    };
    let v: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage; use e.g. 5% or 0.05"))?;
    let v = v * scale;
    if !(v.is_finite() && (0.0..10.0).contains(&v)) {
        return Err(format!(
            "{text:?} is out of range; use 0% to 1000%, e.g. 5%"
        ));
    }
    Ok(v)
}

fn parse_alpha(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number; use e.g. 0.01"))?;
    if !(v > 0.0 && v < 1.0) {
        return Err(format!(
            "{text:?} must lie strictly between 0 and 1, e.g. 0.01"
        ));
    }
    Ok(v)
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    if let Some(path) = &args.json {
        runq::output::check_output_path("--json", path)?;
    }
    let a = read_document(&args.a)?;
    let b = read_document(&args.b)?;
    let opts = CompareOptions {
        alpha: args.alpha,
        max_regression: args.max_regression,
        seed: args.seed,
    };
    let label = |p: &PathBuf| p.display().to_string();
    let result = compare(&a, &label(&args.a), &b, &label(&args.b), &opts);
    print!("{}", result.render_text());
    if let Some(path) = &args.json {
        runq::output::write_output("--json", path, result.to_json().as_bytes())?;
    }
    if result.metrics.is_empty() {
        return Err(RunqError::bad_input(
            "the reports have no metric in common (no worker reported in either)",
        ));
    }
    Ok(result.exit_code)
}
