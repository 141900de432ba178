//! `runq vm`: not built yet.

#[derive(clap::Args)]
pub struct VmArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run_vm(_args: VmArgs) -> anyhow::Result<i32> {
    Err(runq::error::RunqError::environment(
        "this subcommand is not available in this build yet",
    ))
}

#[derive(clap::Args)]
pub struct ShellArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run_shell(_args: ShellArgs) -> anyhow::Result<i32> {
    Err(runq::error::RunqError::environment(
        "this subcommand is not available in this build yet",
    ))
}

