//! `runq list`: not built yet.

#[derive(clap::Args)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(_args: Args) -> anyhow::Result<i32> {
    Err(runq::error::RunqError::environment(
        "this subcommand is not available in this build yet",
    ))
}

