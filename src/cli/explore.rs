//! `runq explore`: not built yet.

#[derive(clap::Args)]
pub struct ExploreArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run_explore(_args: ExploreArgs) -> anyhow::Result<i32> {
    Err(runq::error::RunqError::environment(
        "this subcommand is not available in this build yet",
    ))
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run_replay(_args: ReplayArgs) -> anyhow::Result<i32> {
    Err(runq::error::RunqError::environment(
        "this subcommand is not available in this build yet",
    ))
}

