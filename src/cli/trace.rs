//! `runq trace`: run a command under ptrace, print its process tree, and
//! optionally write a JSON timeline, line coverage and an lcov file.

use std::path::{Path, PathBuf};

use anyhow::Result;
use runq::error::RunqError;
use runq::output::{check_output_path, write_output};
use runq::trace::{self, InterruptAction, SourceFilter, TraceConfig, TraceReport};

#[derive(clap::Args)]
#[command(after_help = "\
The process tree and the coverage summary are printed on stderr when the \
traced tree is gone.

Exit code: the root's exit code, or 128+N when a signal N killed it (or \
interrupted runq). runq's own failures: 2 for bad input (nothing was run), \
3 when tracing is impossible here.

Example: runq trace --coverage --lcov cov.info --json trace.json -- ./prog arg")]
pub struct Args {
    /// Keep following processes after they exec another program, and cover
    /// that program too (default: runq detaches from them at the exec).
    #[arg(long)]
    follow_exec: bool,
    /// Write the process tree and the event timeline as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Measure line coverage with int3 breakpoints (needs DWARF line info:
    /// build with -g / a debug profile).
    #[arg(long)]
    coverage: bool,
    /// Write the coverage as an lcov tracefile to FILE (needs --coverage).
    #[arg(long, value_name = "FILE")]
    lcov: Option<PathBuf>,
    /// Count only source files under DIR (repeatable; needs --coverage).
    /// Default: every source file that exists here, except system headers,
    /// the Rust toolchain and cargo registry crates.
    #[arg(long = "source-dir", value_name = "DIR")]
    source_dirs: Vec<PathBuf>,
    /// What SIGINT, SIGTERM or SIGHUP to runq does to the traced tree.
    #[arg(long, value_enum, default_value = "kill")]
    on_interrupt: InterruptArg,
    /// The command to run, after `--`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

/// `--on-interrupt` values, mapped to [`InterruptAction`].
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum InterruptArg {
    /// SIGKILL every traced process and reap it.
    Kill,
    /// Remove all breakpoints and let the processes run on untraced.
    Detach,
}

impl From<InterruptArg> for InterruptAction {
    fn from(arg: InterruptArg) -> Self {
        match arg {
            InterruptArg::Kill => InterruptAction::Kill,
            InterruptArg::Detach => InterruptAction::Detach,
        }
    }
}

pub fn run(args: Args) -> Result<i32> {
    let config = validate(&args)?;
    let outcome = trace::trace(&config)?;

    let exit_code = match (outcome.interrupted_by, outcome.root_status) {
        (Some(sig), _) => 128 + sig as i32,
        (None, Some(status)) => status.shell_code(),
        (None, None) => 0,
    };
    eprint!("{}", trace::process_tree(&outcome.processes));
    if let Some(sig) = outcome.interrupted_by {
        let what = match config.on_interrupt {
            InterruptAction::Kill => "killed the traced processes",
            InterruptAction::Detach => "detached from the traced processes",
        };
        eprintln!("runq: interrupted by {}: {what}", sig.as_str());
    }
    if let Some(coverage) = &outcome.coverage {
        eprint!("{}", coverage.summary().to_text());
        if let Some(path) = &args.lcov {
            write_output("--lcov", path, coverage.to_lcov("runq").as_bytes())?;
        }
    }
    if let Some(path) = &args.json {
        let report = TraceReport::new(&config.argv, &outcome, exit_code);
        let text = serde_json::to_string_pretty(&report)?;
        write_output("--json", path, (text + "\n").as_bytes())?;
    }
    Ok(exit_code)
}

/// Rejects bad input before anything is spawned.
fn validate(args: &Args) -> Result<TraceConfig> {
    if args.lcov.is_some() && !args.coverage {
        return Err(RunqError::bad_input(
            "--lcov needs --coverage: add --coverage to measure line coverage",
        ));
    }
    if !args.source_dirs.is_empty() && !args.coverage {
        return Err(RunqError::bad_input(
            "--source-dir needs --coverage: add --coverage or drop --source-dir",
        ));
    }
    for (flag, path) in [("--json", &args.json), ("--lcov", &args.lcov)] {
        if let Some(path) = path {
            check_output_path(flag, path)?;
        }
    }
    let mut include = Vec::new();
    for dir in &args.source_dirs {
        let canonical = dir
            .canonicalize()
            .ok()
            .filter(|d| d.is_dir())
            .ok_or_else(|| {
                RunqError::bad_input(format!(
                    "--source-dir {}: no such directory; pass an existing source directory",
                    dir.display()
                ))
            })?;
        include.push(canonical);
    }
    let program = resolve_program(&args.command[0])?;
    let filter = SourceFilter { include };
    let mut program_lines = None;
    if args.coverage && !args.follow_exec {
        let lines = match trace::lines::read_image_lines(&program, &filter) {
            Ok(lines) => lines,
            Err(err) => {
                return Err(RunqError::bad_input(format!(
                    "--coverage: cannot read line information of {}: {err:#}; \
                     pass --follow-exec to cover the programs it runs",
                    program.display()
                )))
            }
        };
        match lines {
            None => {
                return Err(RunqError::bad_input(format!(
                    "--coverage: {} has no DWARF line table; build it with -g \
                     (or a Rust debug profile), or pass --follow-exec to cover \
                     the programs it runs",
                    program.display()
                )))
            }
            Some(lines) if lines.sites.is_empty() => {
                return Err(RunqError::bad_input(format!(
                    "--coverage: no line of {} is in a source file runq counts; \
                     check --source-dir (sources must exist on this machine)",
                    program.display()
                )))
            }
            Some(lines) => program_lines = Some(lines),
        }
    }
    Ok(TraceConfig {
        program,
        argv: args.command.clone(),
        follow_exec: args.follow_exec,
        coverage: args.coverage.then_some(filter),
        program_lines,
        on_interrupt: args.on_interrupt.into(),
        contain: true,
    })
}

/// The executable `name` refers to: a path if it has a slash, else the first
/// executable match in PATH.
fn resolve_program(name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.is_empty() {
        return Err(RunqError::bad_input(
            "CMD is empty: give the command to trace after --",
        ));
    }
    if name.contains('/') {
        let path = PathBuf::from(name);
        if is_executable(&path) {
            return Ok(path);
        }
        return Err(RunqError::bad_input(format!(
            "command {name}: not an executable file; check the path"
        )));
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            RunqError::bad_input(format!(
                "command {name}: not found in PATH; give its path or install it"
            ))
        })
}
