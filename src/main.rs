//! runq command line: parse, call the library, print.
//!
//! Each subcommand's arguments and printing live in `src/cli/<name>.rs`;
//! the work itself is done by the library.

use clap::{Parser, Subcommand};
use runq::error::{exit_code_for, EXIT_OK};

mod cli;

#[derive(Parser)]
#[command(
    name = "runq",
    version,
    about = "A test harness for Linux process schedulers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one group of workers for a while and print their telemetry.
    Workload(cli::workload::Args),
    /// Print the host CPU topology and its spec string.
    Topo(cli::topo::Args),
    /// List the canned scenarios.
    List(cli::list::Args),
    /// Run a scenario (catalog name or TOML file) on this kernel and check it.
    Run(cli::run::Args),
    /// Print a saved JSON run report, or compare two side by side.
    Report(cli::report::Args),
    /// Judge B's runs against A's, metric by metric (regressed, improved, unchanged).
    Compare(cli::compare::Args),
    /// Explore a randomized scenario by fork-based timeline splitting.
    Explore(cli::explore::ExploreArgs),
    /// Replay the timeline a recipe describes, without forking.
    Replay(cli::explore::ReplayArgs),
    /// Run a command under ptrace, follow its process tree, measure coverage.
    Trace(cli::trace::Args),
    /// Boot a kernel under KVM with a topology and run a runq command inside.
    Vm(cli::vm::VmArgs),
    /// Boot a kernel under KVM and open a busybox shell in the guest.
    Shell(cli::vm::ShellArgs),
    /// Fetch and list kernels to boot (sched_ext kernels from Debian).
    Kernel(cli::kernel::Args),
}

fn main() {
    if runq::vm::guest::is_guest_init() {
        runq::vm::guest::init_main();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNQ_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let cli = Cli::parse();
    let result = match cli.command {
        Command::Workload(a) => cli::workload::run(a),
        Command::Topo(a) => cli::topo::run(a),
        Command::List(a) => cli::list::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Report(a) => cli::report::run(a),
        Command::Compare(a) => cli::compare::run(a),
        Command::Explore(a) => cli::explore::run_explore(a),
        Command::Replay(a) => cli::explore::run_replay(a),
        Command::Trace(a) => cli::trace::run(a),
        Command::Vm(a) => cli::vm::run_vm(a),
        Command::Shell(a) => cli::vm::run_shell(a),
        Command::Kernel(a) => cli::kernel::run(a),
    };
    let code = match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("runq: error: {err:#}");
            exit_code_for(&err)
        }
    };
    std::process::exit(if code == EXIT_OK { EXIT_OK } else { code });
}
