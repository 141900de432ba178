//! `runq report`: print a saved JSON run report, compare two side by side,
//! or write them as one HTML page (`--html`).

use std::path::PathBuf;

use runq::error::{RunqError, EXIT_OK};
use runq::regress::{compare as judge, read_document, CompareOptions};
use runq::report::{compare, escape_control, RunReport};

#[derive(clap::Args)]
pub struct Args {
    /// One report (`runq run --json FILE`) to print as text, or two to
    /// compare side by side (B against A). With --html, each may also be a
    /// repeated run's document (`runq run --repeat N --json FILE`).
    #[arg(value_name = "REPORT.json", num_args = 1..=2, required = true)]
    reports: Vec<PathBuf>,
    /// Write one self-contained HTML page with charts (and, for two
    /// reports, the verdicts of `runq compare`) to OUT.html.
    #[arg(long, value_name = "OUT.html")]
    html: Option<PathBuf>,
}

/// One report: printed, exit code as its run's (0 passed, 1 failed). Two:
/// compared, exit 0. With --html: the page is written, exit 0.
pub fn run(args: Args) -> anyhow::Result<i32> {
    if let Some(out) = &args.html {
        return write_html(out, &args.reports);
    }
    let reports = args
        .reports
        .iter()
        .map(|p| RunReport::read_json(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match reports.as_slice() {
        [one] => {
            // Every string of the report came from a file: no escape
            // sequence reaches the terminal.
            print!("{}", escape_control(&one.render_text()));
            Ok(one.exit_code())
        }
        [a, b] => {
            print!("{}", escape_control(&compare(a, b)));
            Ok(EXIT_OK)
        }
        _ => Err(RunqError::bad_input(
            "give one report to print or two to compare",
        )),
    }
}

fn write_html(out: &std::path::Path, paths: &[PathBuf]) -> anyhow::Result<i32> {
    runq::output::check_output_path("--html", out)?;
    let inputs = paths
        .iter()
        .map(|p| Ok((p.display().to_string(), read_document(p)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let comparison = match inputs.as_slice() {
        [(la, a), (lb, b)] => Some(judge(a, la, b, lb, &CompareOptions::default())),
        _ => None,
    };
    let page = runq::html::render_page(&inputs, comparison.as_ref())?;
    runq::output::write_output("--html", out, page.as_bytes())?;
    println!("wrote {}", out.display());
    Ok(EXIT_OK)
}
