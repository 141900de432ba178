//! `runq vm` and `runq shell`: boot a kernel under qemu with a topology and
//! run a runq command line (or a shell) inside.

use std::path::PathBuf;

use clap::CommandFactory;
use runq::error::RunqError;
use runq::topology::TopoSpec;
use runq::vm::{self, AccelChoice, GuestTask, VmConfig};

/// Long options of guest subcommands that name files the command writes;
/// runq points them into the guest's tmpfs and copies the files back.
const OUTPUT_FLAGS: &[&str] = &["json", "lcov", "output", "report"];
/// Where shipped output files live in the guest.
const GUEST_OUTPUT_DIR: &str = "/tmp/runq-out";

/// Options shared by `runq vm` and `runq shell`.
#[derive(clap::Args, Debug)]
pub struct MachineArgs {
    /// Guest topology: <nodes>n<llcs per node>l<cores per llc>c<threads per core>t
    /// (letters in either case; whitespace around it is ignored).
    #[arg(long, value_name = "SPEC", default_value = "1n1l2c1t")]
    topology: String,
    /// Guest memory, split evenly over the NUMA nodes (e.g. 512M, 1G).
    #[arg(long, value_name = "SIZE", default_value = "512M")]
    memory: String,
    /// Kernel to boot: a path, a cached release (`runq kernel list`) or `sched_ext`
    /// (the newest cached kernel with sched_ext). Default: $RUNQ_KERNEL, then the
    /// newest /boot/vmlinuz-*.
    #[arg(long, value_name = "PATH|RELEASE|sched_ext")]
    kernel: Option<String>,
    /// Copy FILE into the guest at the same absolute path (repeatable).
    #[arg(long, value_name = "FILE")]
    include: Vec<PathBuf>,
    /// Copy a host program into the guest at /usr/local/bin/<name> (on its
    /// PATH) with its shared libraries (repeatable); a bare name is found
    /// like --scheduler's (PATH, ~/.cargo/bin, runq's scheduler cache).
    #[arg(long, value_name = "PROGRAM")]
    executable: Vec<String>,
    /// Accelerator: auto uses KVM when usable, else TCG with a warning.
    #[arg(long, value_enum, default_value = "auto")]
    accel: AccelArg,
    /// qemu -cpu model (default: chosen per accelerator so LLCs follow --topology).
    #[arg(long, value_name = "MODEL")]
    cpu: Option<String>,
    /// Extra kernel command-line argument (repeatable), e.g. loglevel=7.
    #[arg(long = "kernel-arg", value_name = "ARG")]
    kernel_arg: Vec<String>,
}

/// `--accel` values, mapped to [`AccelChoice`].
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum AccelArg {
    /// KVM if usable, else TCG with a warning.
    Auto,
    /// KVM, or fail.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl From<AccelArg> for AccelChoice {
    fn from(arg: AccelArg) -> Self {
        match arg {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Kvm => AccelChoice::Kvm,
            AccelArg::Tcg => AccelChoice::Tcg,
        }
    }
}

impl MachineArgs {
    fn config(&self, task: GuestTask) -> anyhow::Result<VmConfig> {
        let topology: TopoSpec = self
            .topology
            .parse()
            .map_err(|e| RunqError::bad_input(format!("--topology: {e:#}")))?;
        let mut config = VmConfig::new(task);
        config.topology = topology;
        config.memory_mib = vm::parse_memory_mib(&self.memory)?;
        config.kernel = self.kernel.clone();
        config.includes = self.include.clone();
        for program in &self.executable {
            let path = runq::scheduler::spec::find_program("--executable", program)?;
            config.executables.push(path);
        }
        config.accel = self.accel.into();
        config.cpu_model = self.cpu.clone();
        config.kernel_args = self.kernel_arg.clone();
        Ok(config)
    }
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: runq vm --topology 1n2l2c1t -- run steady --duration 2s --json out.json\n\
Exit codes: the guest command's own code; 2 bad input (nothing was started); \
3 no kernel/qemu, a guest kernel panic, a timeout or a guest that died early \
(the message shows the guest kernel's panic report or the console's last lines, and where the whole console was kept)."
)]
pub struct VmArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// Give up (and kill qemu) after this long, boot included.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    timeout: String,
    /// Also keep the guest kernel console in FILE.
    #[arg(long, value_name = "FILE")]
    console: Option<PathBuf>,
    /// Print boot and run times on stderr when done.
    #[arg(long)]
    timings: bool,
    /// The runq command line to run in the guest (after `--`).
    #[arg(last = true, required = true, value_name = "RUNQ ARGS")]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// Give up (and kill qemu) after this long.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    timeout: String,
}

/// Keeps SIGINT, SIGTERM and SIGHUP pending from the start: while the
/// image is built nothing needs stopping, and the qemu supervisor reads
/// them from its signalfd as soon as it runs, stops qemu, removes the run's
/// files and exits 3. Unblocked, such a signal during the build would end
/// runq by its default action with temporary files still in place.
fn hold_interrupts() -> anyhow::Result<()> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)?;
    Ok(())
}

pub fn run_vm(args: VmArgs) -> anyhow::Result<i32> {
    hold_interrupts()?;
    let (mut guest_args, outputs) = guest_command(&args.command)?;
    let scheduler = guest_scheduler(&mut guest_args)?;
    let mut config = args.machine.config(GuestTask::Command {
        args: guest_args,
        outputs,
    })?;
    config.timeout = vm::parse_duration(&args.timeout, "--timeout")?;
    config.require_sched_ext = scheduler.is_some();
    config.executables.extend(scheduler);
    if let Some(console) = &args.console {
        if console.to_string_lossy().contains(',') {
            return Err(RunqError::bad_input(
                "--console: qemu cannot take a path with ','; choose another file name",
            ));
        }
    }
    config.console = args.console.clone();
    let outcome = vm::run(&config)?;
    if args.timings {
        let ms = |d: Option<std::time::Duration>| {
            d.map_or("-".to_string(), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1000.0)
            })
        };
        eprintln!(
            "runq vm: accel {:?}, boot to init {} (guest uptime {}), total {}, image {}",
            outcome.accel,
            ms(outcome.boot_to_init),
            ms(outcome.guest_uptime_at_init),
            ms(Some(outcome.total)),
            if outcome.image_built {
                "built"
            } else {
                "cached"
            }
        );
    }
    Ok(outcome.exit_code)
}

pub fn run_shell(args: ShellArgs) -> anyhow::Result<i32> {
    hold_interrupts()?;
    use std::io::{IsTerminal, Read};
    let timeout = vm::parse_duration(&args.timeout, "--timeout")?;
    let interactive = std::io::stdin().is_terminal();
    let task = if interactive {
        GuestTask::Shell
    } else {
        // A script on stdin: run it whole, so no input races the shell's
        // start (a terminal's pending input is flushed when ash sets it up).
        let mut script = String::new();
        std::io::stdin().read_to_string(&mut script).map_err(|e| {
            RunqError::bad_input(format!(
                "reading the script from stdin: {e}; pass UTF-8 text"
            ))
        })?;
        GuestTask::Script(script)
    };
    let mut config = args.machine.config(task)?;
    config.timeout = timeout;
    if interactive {
        eprintln!("runq shell: booting; `exit` powers the guest off (Ctrl-A x quits qemu)");
    }
    let outcome = vm::run(&config)?;
    Ok(outcome.exit_code)
}

/// The scheduler under test a guest `runq run` names (its `--scheduler`,
/// else the scenario's `[scheduler]`), found on the host so it can be put
/// in the guest. A path is rewritten to the guest's copy in
/// /usr/local/bin; a name is found there through the guest's PATH.
fn guest_scheduler(guest_args: &mut Vec<String>) -> anyhow::Result<Option<PathBuf>> {
    let argv = std::iter::once("runq".to_string()).chain(guest_args.iter().cloned());
    let Ok(matches) = crate::Cli::command().try_get_matches_from(argv) else {
        return Ok(None);
    };
    let Some(("run", run)) = matches.subcommand() else {
        return Ok(None);
    };
    let flag = run.get_one::<String>("scheduler").cloned();
    let binary = match &flag {
        Some(binary) => binary.clone(),
        None => {
            let scenario = run
                .get_one::<String>("scenario")
                .cloned()
                .unwrap_or_default();
            match runq::scenario::load(&scenario)
                .ok()
                .and_then(|s| s.scheduler)
            {
                Some(spec) => spec.binary,
                None => return Ok(None),
            }
        }
    };
    let host = runq::scheduler::find_binary(&binary)?;
    if binary.contains('/') {
        let guest = runq::vm::initramfs::guest_executable_path(&host)?;
        match flag {
            Some(_) => rewrite_flag_value(guest_args, "--scheduler", &guest),
            None => guest_args.extend(["--scheduler".to_string(), guest]),
        }
    }
    Ok(Some(host))
}

/// Replaces the value of `--flag VALUE` / `--flag=VALUE` (before any `--`).
fn rewrite_flag_value(args: &mut [String], flag: &str, value: &str) {
    let with_eq = format!("{flag}=");
    let mut i = 0;
    while i < args.len() && args[i] != "--" {
        if args[i] == flag && i + 1 < args.len() {
            args[i + 1] = value.to_string();
            i += 1;
        } else if args[i].starts_with(&with_eq) {
            args[i] = format!("{with_eq}{value}");
        }
        i += 1;
    }
}

/// Rewritten guest arguments and the (host path, guest path) output pairs.
type GuestCommand = (Vec<String>, Vec<(PathBuf, String)>);

/// Checks the guest command line against runq's own parser (bad input is
/// caught before booting) and points its output files into the guest:
/// returns the rewritten arguments and (host path, guest path) pairs.
fn guest_command(args: &[String]) -> anyhow::Result<GuestCommand> {
    let Some((name, output_longs)) = guest_subcommand(args)? else {
        return Ok((args.to_vec(), Vec::new()));
    };
    let (rewritten, outputs) = rewrite_outputs(args, &name, &output_longs);
    for (host, _) in &outputs {
        runq::output::check_output_path("output", host)?;
    }
    Ok((rewritten, outputs))
}

/// Parses the guest command as runq would: its subcommand's name and the
/// output flags that subcommand takes, `None` when there is nothing to
/// rewrite (help, version, no subcommand).
fn guest_subcommand(args: &[String]) -> anyhow::Result<Option<(String, Vec<String>)>> {
    let root = crate::Cli::command();
    let argv = std::iter::once("runq".to_string()).chain(args.iter().cloned());
    let matches = match root.clone().try_get_matches_from(argv) {
        Ok(matches) => matches,
        Err(err)
            if matches!(
                err.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            return Ok(None);
        }
        Err(err) => {
            return Err(RunqError::bad_input(format!(
                "the guest command `runq {}` is invalid: {}",
                args.join(" "),
                err.to_string().trim()
            )))
        }
    };
    let Some((name, _)) = matches.subcommand() else {
        return Ok(None);
    };
    if name == "vm" || name == "shell" {
        return Err(RunqError::bad_input(format!(
            "the guest command `runq {name}` would start a VM inside the VM; \
             give the command to run there instead (e.g. -- run steady)"
        )));
    }
    let Some(sub) = root.find_subcommand(name) else {
        return Ok(None);
    };
    let output_longs: Vec<String> = sub
        .get_arguments()
        .filter(|a| a.get_action().takes_values())
        .filter_map(|a| a.get_long())
        .filter(|long| OUTPUT_FLAGS.contains(long))
        .map(str::to_string)
        .collect();
    Ok(Some((name.to_string(), output_longs)))
}

/// Replaces the value of each output flag after subcommand `name` with a
/// path in the guest's output folder; arguments after `--` are left alone.
fn rewrite_outputs(args: &[String], name: &str, output_longs: &[String]) -> GuestCommand {
    let mut rewritten = Vec::with_capacity(args.len());
    let mut outputs: Vec<(PathBuf, String)> = Vec::new();
    let mut guest_path_for = |host: &str| {
        let file_name = std::path::Path::new(host)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let guest = format!("{GUEST_OUTPUT_DIR}/{}-{file_name}", outputs.len());
        outputs.push((PathBuf::from(host), guest.clone()));
        guest
    };
    let mut iter = args.iter();
    let mut seen_subcommand = false;
    while let Some(arg) = iter.next() {
        if !seen_subcommand {
            seen_subcommand = arg == name;
            rewritten.push(arg.clone());
            continue;
        }
        if arg == "--" {
            // Everything after belongs to a program the subcommand runs.
            rewritten.push(arg.clone());
            rewritten.extend(iter.by_ref().cloned());
            break;
        }
        let Some(flag) = arg.strip_prefix("--") else {
            rewritten.push(arg.clone());
            continue;
        };
        match flag.split_once('=') {
            Some((long, value)) if output_longs.iter().any(|l| l == long) => {
                rewritten.push(format!("--{long}={}", guest_path_for(value)));
            }
            None if output_longs.iter().any(|l| l == flag) => {
                rewritten.push(arg.clone());
                if let Some(value) = iter.next() {
                    rewritten.push(guest_path_for(value));
                }
            }
            _ => rewritten.push(arg.clone()),
        }
    }
    (rewritten, outputs)
}
