//! `runq report`: print a saved JSON run report, or compare two.

use std::path::PathBuf;

use runq::error::{RunqError, EXIT_OK};
use runq::report::{compare, escape_control, RunReport};

#[derive(clap::Args)]
pub struct Args {
    /// One report (`runq run --json FILE`) to print as text, or two to
    /// compare side by side (B against A).
    #[arg(value_name = "REPORT.json", num_args = 1..=2, required = true)]
    reports: Vec<PathBuf>,
}

/// One report: printed, exit code as its run's (0 passed, 1 failed). Two:
/// compared, exit 0.
pub fn run(args: Args) -> anyhow::Result<i32> {
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
