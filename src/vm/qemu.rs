//! Running the guest under qemu-system-x86_64: accelerator choice, the
//! command line (machine, CPU model, topology, NUMA memory, serial ports),
//! the timeout, the console capture and the report channel.
//!
//! # Why this configuration
//!
//! * **Machine `q35`, `-nodefaults`**: a modern chipset with ACPI (the
//!   guest powers off through ACPI, and reads NUMA affinity from SRAT);
//!   no default NIC, so no iPXE option ROM is loaded.
//! * **Two 16550 serial ports**: ttyS0 is the kernel console
//!   (`console=ttyS0`), ttyS1 carries the framed report channel. The 8250
//!   driver is built into Debian's kernel, unlike virtio-console, so the
//!   initramfs needs no modules.
//! * **CPU model under TCG: `max,vendor=GenuineIntel`**. The guest kernel
//!   finds its last-level cache from CPUID leaf 4 on Intel CPUs, which qemu
//!   fills so that L3 is shared by the CPUs of one *die*; so `dies=` sets
//!   the LLC count. With qemu's default AMD vendor the kernel ignores dies
//!   and sees one LLC per socket.
//! * **CPU model under KVM: `host,host-cache-info=off,l3-cache=on`**, for
//!   the same reason (qemu synthesizes the cache leaves from the topology
//!   instead of copying the host's).
//! * **Accelerator**: KVM when `/dev/kvm` opens and is a hardware KVM.
//!   Some sandboxes expose `/dev/kvm` backed by `kvm_pvm`, a software
//!   hypervisor that only runs PVM-enabled guest kernels at speed; a stock
//!   distribution kernel there spends minutes in emulated early boot
//!   (`-cpu host` even aborts on MSR 0x10a, and `lock cmpxchg16b` in SLUB
//!   stops KVM with an emulation failure). runq then falls back to TCG with a
//!   loud warning; a Debian 6.1 kernel reaches init in a few seconds there.
//! * **Single-threaded TCG (`-accel tcg,thread=single`)**. qemu's default
//!   multi-threaded TCG races with the guest kernel's live code patching
//!   (int3-based text poking, heavy when sched_ext attaches and flips
//!   static keys). Measured on a 2-core host with Debian sid's 7.2 kernel,
//!   4 vCPUs and scx_bpfland attaching: the default died of `Oops: int3`
//!   (in `__schedule`, `update_sd_lb_stats`) in 2 of 6 boots,
//!   `thread=single` in 0 of 6, at the same wall time (15-16 s each); and
//!   1 of 8 plain `futex_ping_pong` VM runs on 7.2 panicked under the
//!   default. Multi-threaded TCG would need a benchmark showing it both
//!   faster and free of these panics over 20+ boots.
//! * **The kernel** ([`super::kernel`]): a cached kernel with PVH boots
//!   its uncompressed `vmlinux` through qemu's PVH entry, skipping the
//!   guest's self-decompression (seconds under TCG); its config goes into
//!   the initramfs as `/boot/config-<release>`.
//! * **`panic=-1 -no-reboot`**: a guest kernel panic ends qemu at once; the
//!   host sees qemu exit without an exit frame and reports the console tail.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::channel::{Decoder, Frame};
use super::guest::{Plan, PlanMode, PLAN_PATH};
use super::initramfs::{self, Archive};
use super::kernel;
use crate::error::RunqError;
use crate::topology::TopoSpec;

/// The qemu binary (override with `$RUNQ_QEMU`).
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// Smallest memory per NUMA node the Debian kernel boots with comfortably.
pub const MIN_NODE_MEMORY_MIB: u64 = 128;
/// Name prefix of the per-run temporary directory (see [`crate::scratch`]).
pub const RUN_DIR_PREFIX: &str = "runq-vm";
/// Lines of console shown in error messages.
const CONSOLE_TAIL_LINES: usize = 30;
/// How long qemu may take to power off after the guest reported its exit.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);
/// Kernel arguments every boot gets.
pub const BASE_KERNEL_ARGS: &[&str] = &[
    "console=ttyS0",
    "earlyprintk=serial",
    "panic=-1",
    "quiet",
    "rdinit=/init",
    "mitigations=off",
    "tsc=reliable",
    "no_timer_check",
    "cryptomgr.notests",
    "ipv6.disable=1",
];

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM if usable, else TCG with a warning.
    Auto,
    /// KVM, or fail.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// The accelerator actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel` argument (see the module docs for single-threaded TCG).
    fn qemu_accel_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=single",
        }
    }

    /// The default `-cpu` model for this accelerator (see module docs).
    pub fn default_cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host,host-cache-info=off,l3-cache=on",
            Accel::Tcg => "max,vendor=GenuineIntel",
        }
    }
}

/// Why KVM cannot be used here, or `None` if it can.
pub fn kvm_unusable_reason() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Some(format!("cannot open /dev/kvm: {e}"));
    }
    let hardware = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| Path::new("/sys/module").join(m).exists());
    if Path::new("/sys/module/kvm_pvm").exists() && !hardware {
        return Some(
            "/dev/kvm is provided by kvm_pvm (software virtualization that runs only \
             PVM-enabled guest kernels at speed)"
                .to_string(),
        );
    }
    None
}

/// Picks the accelerator, warning loudly on a fallback to TCG.
pub fn choose_accel(choice: AccelChoice) -> anyhow::Result<Accel> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => match kvm_unusable_reason() {
            None => Ok(Accel::Kvm),
            Some(why) => Err(RunqError::environment(format!(
                "--accel kvm: {why}; use --accel tcg (slow) or enable KVM \
                 (load kvm_intel/kvm_amd, add yourself to the kvm group)"
            ))),
        },
        AccelChoice::Auto => match kvm_unusable_reason() {
            None => Ok(Accel::Kvm),
            Some(why) => {
                eprintln!(
                    "runq: WARNING: KVM is not usable ({why}); falling back to TCG software \
                     emulation, which is many times slower. Pass --accel tcg to silence this."
                );
                Ok(Accel::Tcg)
            }
        },
    }
}

/// What the guest runs.
#[derive(Debug, Clone)]
pub enum GuestTask {
    /// `runq <args>` with these output files shipped back: pairs of (host
    /// path, guest path); `args` already names the guest paths.
    Command {
        args: Vec<String>,
        outputs: Vec<(PathBuf, String)>,
    },
    /// An interactive shell on the console (the host's terminal).
    Shell,
    /// A shell script run non-interactively, output streamed back.
    Script(String),
}

/// Everything about one VM run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub topology: TopoSpec,
    pub memory_mib: u64,
    /// `--kernel`: a path, a cached release or `sched_ext` (see
    /// [`kernel`]); `None` means `$RUNQ_KERNEL`, then /boot.
    pub kernel: Option<String>,
    pub timeout: Duration,
    pub console: Option<PathBuf>,
    pub accel: AccelChoice,
    pub cpu_model: Option<String>,
    pub includes: Vec<PathBuf>,
    pub kernel_args: Vec<String>,
    pub task: GuestTask,
    /// The runq executable to put in the guest (default: this one).
    pub runq_exe: Option<PathBuf>,
}

impl VmConfig {
    /// A config with the defaults of `runq vm`.
    pub fn new(task: GuestTask) -> Self {
        VmConfig {
            topology: TopoSpec {
                nodes: 1,
                llcs_per_node: 1,
                cores_per_llc: 2,
                threads_per_core: 1,
            },
            memory_mib: 512,
            kernel: None,
            timeout: Duration::from_secs(120),
            console: None,
            accel: AccelChoice::Auto,
            cpu_model: None,
            includes: Vec::new(),
            kernel_args: Vec::new(),
            task,
            runq_exe: None,
        }
    }

    /// Rejects impossible values before anything is built or started.
    pub fn validate(&self) -> anyhow::Result<()> {
        let cpus = self.topology.total_cpus();
        if cpus > 255 {
            return Err(RunqError::bad_input(format!(
                "--topology {}: {cpus} CPUs; the q35 machine boots at most 255, use a smaller spec",
                self.topology
            )));
        }
        let per_node = self.memory_mib / self.topology.nodes as u64;
        if per_node < MIN_NODE_MEMORY_MIB {
            return Err(RunqError::bad_input(format!(
                "--memory {}M: {} NUMA node(s) get {per_node} MiB each; give at least \
                 {MIN_NODE_MEMORY_MIB} MiB per node (e.g. --memory {}M)",
                self.memory_mib,
                self.topology.nodes,
                MIN_NODE_MEMORY_MIB * self.topology.nodes as u64
            )));
        }
        if self.timeout.is_zero() {
            return Err(RunqError::bad_input(
                "--timeout must be more than 0s, e.g. 60s",
            ));
        }
        for include in &self.includes {
            if !include.is_file() {
                return Err(RunqError::bad_input(format!(
                    "--include {}: not a readable file; name an existing file",
                    include.display()
                )));
            }
        }
        if let GuestTask::Command { outputs, .. } = &self.task {
            for (host, _) in outputs {
                let parent = host.parent().filter(|p| !p.as_os_str().is_empty());
                if let Some(parent) = parent {
                    if !parent.is_dir() {
                        return Err(RunqError::bad_input(format!(
                            "output file {}: directory {} does not exist; create it first",
                            host.display(),
                            parent.display()
                        )));
                    }
                }
            }
        }
        if let Some(console) = &self.console {
            let parent = console.parent().filter(|p| !p.as_os_str().is_empty());
            if parent.is_some_and(|p| !p.is_dir()) {
                return Err(RunqError::bad_input(format!(
                    "--console {}: its directory does not exist; create it first",
                    console.display()
                )));
            }
        }
        for arg in &self.kernel_args {
            if arg.is_empty() || arg.chars().any(char::is_whitespace) {
                return Err(RunqError::bad_input(format!(
                    "--kernel-arg {arg:?}: give one argument without spaces per --kernel-arg"
                )));
            }
        }
        Ok(())
    }
}

/// `-smp` and `-numa` arguments for a topology: one socket per NUMA node,
/// one die per LLC, then cores and threads; each node gets an equal share
/// of memory from its own RAM backend.
pub fn topology_args(spec: &TopoSpec, memory_mib: u64) -> Vec<String> {
    let cpus = spec.total_cpus();
    let mut args = vec![
        "-smp".to_string(),
        format!(
            "cpus={cpus},sockets={},dies={},cores={},threads={}",
            spec.nodes, spec.llcs_per_node, spec.cores_per_llc, spec.threads_per_core
        ),
    ];
    let per_node = memory_mib / spec.nodes as u64;
    args.push("-m".into());
    args.push(format!("{}M", per_node * spec.nodes as u64));
    let cpus_per_node = cpus / spec.nodes;
    for node in 0..spec.nodes {
        let first = node * cpus_per_node;
        let last = first + cpus_per_node - 1;
        args.push("-object".into());
        args.push(format!(
            "memory-backend-ram,id=ram-node{node},size={per_node}M"
        ));
        args.push("-numa".into());
        args.push(format!(
            "node,nodeid={node},cpus={first}-{last},memdev=ram-node{node}"
        ));
    }
    args
}

impl PreparedBoot {
    /// The full qemu argument list (without the binary), with the console
    /// and report channel given as qemu `-serial` backends.
    pub fn qemu_args(&self, console: &str, channel: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-machine",
            "q35",
            "-accel",
            self.accel.qemu_accel_arg(),
            "-cpu",
            &self.cpu_model,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(topology_args(&self.topology, self.memory_mib));
        args.extend([
            "-kernel".to_string(),
            self.kernel.to_string_lossy().into_owned(),
            "-initrd".to_string(),
            self.initrd.to_string_lossy().into_owned(),
            "-append".to_string(),
            self.append.clone(),
            "-serial".to_string(),
            console.to_string(),
            "-serial".to_string(),
            channel.to_string(),
        ]);
        args
    }
}

/// How a run ended (when the guest reported an exit code).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VmOutcome {
    /// The guest command's exit code.
    pub exit_code: i32,
    pub accel: Accel,
    /// From starting qemu to the guest's init reporting in.
    pub boot_to_init: Option<Duration>,
    /// The guest's own uptime when init started.
    pub guest_uptime_at_init: Option<Duration>,
    /// From starting qemu to qemu exiting.
    pub total: Duration,
    /// Whether the cached base image had to be built.
    pub image_built: bool,
}

/// A prepared boot: kernel, image and the temporary directory holding the
/// per-run files (removed on drop).
pub struct PreparedBoot {
    pub topology: TopoSpec,
    pub memory_mib: u64,
    /// What qemu loads with `-kernel`.
    pub kernel: PathBuf,
    /// Which kernel that is, for messages.
    pub kernel_description: String,
    pub initrd: PathBuf,
    pub accel: Accel,
    pub cpu_model: String,
    pub append: String,
    pub image_built: bool,
    pub dir: tempfile::TempDir,
}

/// Finds the kernel, builds (or reuses) the base image, writes the per-run
/// image and chooses the accelerator.
pub fn prepare(config: &VmConfig) -> anyhow::Result<PreparedBoot> {
    // Directories of runs that were killed before they could remove them.
    crate::scratch::reap(&std::env::temp_dir(), RUN_DIR_PREFIX);
    config.validate()?;
    let kernel = kernel::resolve(config.kernel.as_deref())?;
    which_qemu()?;
    let accel = choose_accel(config.accel)?;
    let runq = match &config.runq_exe {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding the runq executable")?,
    };
    let busybox = initramfs::find_busybox()?;
    let base = initramfs::base_image(&runq, &busybox)?;

    let cwd = std::env::current_dir().context("reading the working directory")?;
    let cwd_text = cwd
        .to_str()
        .ok_or_else(|| RunqError::bad_input("the working directory is not UTF-8; cd elsewhere"))?
        .to_string();
    let mut overlay = Archive::new();
    overlay.dir(&cwd_text);
    if let (Some(release), Some(config)) = (&kernel.release, &kernel.config) {
        // libbpf reads the running kernel's config from here.
        overlay.copy_host_file(&format!("/boot/config-{release}"), config)?;
    }
    for include in &config.includes {
        let absolute = cwd.join(include);
        let guest = absolute
            .to_str()
            .ok_or_else(|| RunqError::bad_input("--include path is not UTF-8; rename it"))?;
        overlay.copy_host_file(guest, &absolute)?;
    }
    let (mode, outputs) = match &config.task {
        GuestTask::Command { args, outputs } => (
            PlanMode::Command { args: args.clone() },
            outputs.iter().map(|(_, guest)| guest.clone()).collect(),
        ),
        GuestTask::Shell => (PlanMode::Shell, Vec::new()),
        GuestTask::Script(script) => (
            PlanMode::Script {
                script: script.clone(),
            },
            Vec::new(),
        ),
    };
    let env = ["RUNQ_LOG", "RUST_BACKTRACE"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let plan = Plan {
        mode,
        cwd: cwd_text,
        env,
        outputs,
    };
    overlay.file(PLAN_PATH, 0o644, serde_json::to_vec_pretty(&plan)?);

    let dir = crate::scratch::dir_in(&std::env::temp_dir(), RUN_DIR_PREFIX)?;
    let initrd = dir.path().join("initrd.img");
    initramfs::write_boot_image(&base, &overlay, &initrd)?;

    let mut append: Vec<String> = BASE_KERNEL_ARGS
        .iter()
        // An interactive shell should not start with the early boot log.
        .filter(|a| !(matches!(config.task, GuestTask::Shell) && a.starts_with("earlyprintk")))
        .map(|s| s.to_string())
        .collect();
    append.extend(config.kernel_args.iter().cloned());
    Ok(PreparedBoot {
        topology: config.topology,
        memory_mib: config.memory_mib,
        kernel: kernel.image,
        kernel_description: kernel.description,
        initrd,
        accel,
        cpu_model: config
            .cpu_model
            .clone()
            .unwrap_or_else(|| accel.default_cpu_model().to_string()),
        append: append.join(" "),
        image_built: base.built,
        dir,
    })
}

fn which_qemu() -> anyhow::Result<PathBuf> {
    let name = std::env::var_os("RUNQ_QEMU").unwrap_or_else(|| QEMU_BINARY.into());
    let name = PathBuf::from(name);
    if name.components().count() > 1 {
        return if name.is_file() {
            Ok(name)
        } else {
            Err(RunqError::environment(format!(
                "RUNQ_QEMU={} does not exist",
                name.display()
            )))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            RunqError::environment(format!(
                "{} not found on PATH; install it with `apt-get install qemu-system-x86`",
                name.display()
            ))
        })
}

/// Starts `command` so that it dies with this process (PR_SET_PDEATHSIG)
/// and with the signal mask reset (the caller blocks signals it reads from
/// a signalfd).
pub fn spawn_tied_to_parent(command: &mut Command) -> std::io::Result<Child> {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid, sigprocmask).
    unsafe {
        command.pre_exec(move || {
            crate::process::tie_to_parent(parent)?;
            nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            )?;
            Ok(())
        });
    }
    command.spawn()
}

/// Boots the VM, streams the guest command's output to this process's
/// stdout and stderr, writes the shipped output files, and returns how
/// the run ended. Errors (timeout, panic, early death) carry the console
/// tail and map to exit code 3.
pub fn run(config: &VmConfig) -> anyhow::Result<VmOutcome> {
    let boot = prepare(config)?;
    run_prepared(config, &boot)
}

/// Like [`run`] for an already prepared boot.
pub fn run_prepared(config: &VmConfig, boot: &PreparedBoot) -> anyhow::Result<VmOutcome> {
    let shell = matches!(config.task, GuestTask::Shell);
    let console_path = config
        .console
        .clone()
        .unwrap_or_else(|| boot.dir.path().join("console.log"));
    let channel_path = boot.dir.path().join("channel.fifo");
    nix::unistd::mkfifo(
        &channel_path,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .context("creating the channel fifo")?;
    // Open the read end first (non-blocking), so qemu's open for writing
    // does not block and nothing it writes is lost.
    let mut channel = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(&channel_path)
        .context("opening the channel fifo")?;
    // Hold a write end too: a fifo without writers reads as end-of-file
    // before qemu has opened it. The end is seen as qemu's exit instead.
    let _channel_keepalive = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags_nonblock()
        .open(&channel_path)
        .context("opening the channel fifo for writing")?;

    let console_arg = if shell {
        "mon:stdio".to_string()
    } else {
        format!("file:{}", console_path.display())
    };
    let args = boot.qemu_args(&console_arg, &format!("file:{}", channel_path.display()));
    let qemu_stderr_path = boot.dir.path().join("qemu.stderr");
    let qemu_stderr = std::fs::File::create(&qemu_stderr_path)?;
    let mut command = Command::new(which_qemu()?);
    command.args(&args).stderr(qemu_stderr);
    if shell {
        command.stdin(Stdio::inherit()).stdout(Stdio::inherit());
    } else {
        command.stdin(Stdio::null()).stdout(Stdio::null());
    }
    tracing::info!(?args, "starting qemu");

    // Read SIGINT/SIGTERM/SIGHUP from a signalfd, so an interrupted run
    // still kills qemu and removes its files.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    let mut old_mask = SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&signals),
        Some(&mut old_mask),
    )?;
    let result = (|| {
        let signal_fd =
            SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let started = Instant::now();
        let mut child = spawn_tied_to_parent(&mut command).with_context(|| {
            format!("starting {QEMU_BINARY}; install it with `apt-get install qemu-system-x86`")
        })?;
        let mut guard = QemuGuard {
            child: Some(&mut child),
        };
        let watch = supervise(&mut guard, &mut channel, &signal_fd, started, config, shell);
        guard.kill();
        watch.map(|w| (w, started.elapsed()))
    })();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&old_mask),
        None,
    )?;
    let (watch, total) = result?;

    let console_tail = || tail_lines(&console_path, CONSOLE_TAIL_LINES);
    let qemu_stderr_text = || {
        std::fs::read_to_string(&qemu_stderr_path)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    match watch.end {
        End::Interrupted(signal) => Err(RunqError::environment(format!(
            "interrupted by {signal:?}; qemu was stopped"
        ))),
        End::TimedOut => Err(RunqError::environment(format!(
            "the guest did not finish within --timeout {}s ({}); qemu was killed.{}",
            config.timeout.as_secs_f64(),
            if watch.boot_to_init.is_some() {
                "init was running: the command hung or is slower than the timeout"
            } else {
                "init never started: boot hung or is slow"
            },
            format_tail(&console_tail(), shell)
        ))),
        End::Exited { status, exit_code } => match exit_code {
            Some(code) => Ok(VmOutcome {
                exit_code: code,
                accel: boot.accel,
                boot_to_init: watch.boot_to_init,
                guest_uptime_at_init: watch.guest_uptime_at_init,
                total,
                image_built: boot.image_built,
            }),
            None => {
                let tail = console_tail();
                let what = if tail.contains("Kernel panic") {
                    "the guest kernel panicked".to_string()
                } else if !status.success() {
                    format!("qemu failed ({status})")
                } else if watch.boot_to_init.is_none() {
                    "the guest stopped before init started".to_string()
                } else {
                    "the guest stopped before reporting an exit code".to_string()
                };
                let stderr = qemu_stderr_text();
                let stderr = if stderr.is_empty() {
                    String::new()
                } else {
                    format!("\nqemu said: {stderr}")
                };
                let notes = if watch.notes.is_empty() {
                    String::new()
                } else {
                    format!("\n{}", watch.notes.join("\n"))
                };
                Err(RunqError::environment(format!(
                    "{what}{notes}{stderr}{}",
                    format_tail(&tail, shell)
                )))
            }
        },
    }
}

fn format_tail(tail: &str, shell: bool) -> String {
    if shell {
        String::new()
    } else if tail.trim().is_empty() {
        "\n(the console is empty)".to_string()
    } else {
        format!("\n--- last lines of the guest console ---\n{tail}")
    }
}

trait NonBlockOpen {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlockOpen for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

/// Kills and reaps qemu on every path out of [`run_prepared`].
struct QemuGuard<'a> {
    child: Option<&'a mut Child>,
}

impl QemuGuard<'_> {
    fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => {
                let status = child.try_wait()?;
                if status.is_some() {
                    self.child = None;
                }
                Ok(status)
            }
            None => Ok(None),
        }
    }

    fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for QemuGuard<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

enum End {
    Exited {
        status: std::process::ExitStatus,
        exit_code: Option<i32>,
    },
    TimedOut,
    Interrupted(Signal),
}

struct Watch {
    end: End,
    boot_to_init: Option<Duration>,
    guest_uptime_at_init: Option<Duration>,
    notes: Vec<String>,
}

fn supervise(
    guard: &mut QemuGuard<'_>,
    channel: &mut std::fs::File,
    signal_fd: &SignalFd,
    started: Instant,
    config: &VmConfig,
    shell: bool,
) -> anyhow::Result<Watch> {
    let deadline = started + config.timeout;
    let mut decoder = Decoder::new();
    let mut watch = Watch {
        end: End::TimedOut,
        boot_to_init: None,
        guest_uptime_at_init: None,
        notes: Vec::new(),
    };
    let mut exit_code: Option<i32> = None;
    let mut exit_seen_at: Option<Instant> = None;
    let mut channel_open = true;
    let mut buffer = vec![0u8; 64 * 1024];
    let outputs: Vec<PathBuf> = match &config.task {
        GuestTask::Command { outputs, .. } => outputs.iter().map(|(h, _)| h.clone()).collect(),
        GuestTask::Shell | GuestTask::Script(_) => Vec::new(),
    };
    let _ = shell;
    loop {
        let now = Instant::now();
        if now >= deadline && exit_code.is_none() {
            watch.end = End::TimedOut;
            return Ok(watch);
        }
        if exit_seen_at.is_some_and(|t| t.elapsed() > POWER_OFF_GRACE) {
            // The guest reported; it just did not power off in time.
            tracing::warn!("guest did not power off after reporting; stopping qemu");
            guard.kill();
            watch.end = End::Exited {
                status: std::process::ExitStatus::default(),
                exit_code,
            };
            return Ok(watch);
        }
        let wait_ms = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(50))
            .as_millis() as u16;
        let mut fds = vec![PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        if channel_open {
            fds.push(PollFd::new(channel.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(wait_ms.max(1))) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for the guest"),
        }
        drop(fds);
        if let Ok(Some(info)) = signal_fd.read_signal() {
            let signal = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM);
            guard.kill();
            watch.end = End::Interrupted(signal);
            return Ok(watch);
        }
        if channel_open {
            channel_open = drain_channel(channel, &mut buffer, &mut decoder)?;
            while let Some(frame) = decoder.next_frame().context("reading the report channel")? {
                match frame {
                    Frame::Ready { uptime_ms } => {
                        watch.boot_to_init = Some(started.elapsed());
                        watch.guest_uptime_at_init = Some(Duration::from_millis(uptime_ms));
                    }
                    Frame::Stdout(data) => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&data)?;
                        out.flush()?;
                    }
                    Frame::Stderr(data) => {
                        let mut err = std::io::stderr().lock();
                        err.write_all(&data)?;
                        err.flush()?;
                    }
                    Frame::File { index, data } => {
                        let Some(host) = outputs.get(index) else {
                            watch
                                .notes
                                .push(format!("guest sent unknown file #{index}"));
                            continue;
                        };
                        crate::output::write_output("output", host, &data)?;
                    }
                    Frame::Note(text) => {
                        eprintln!("runq: guest: {text}");
                        watch.notes.push(text);
                    }
                    Frame::Exit { code } => {
                        exit_code = Some(code);
                        exit_seen_at = Some(Instant::now());
                    }
                }
            }
        }
        if let Some(status) = guard.try_wait()? {
            // Collect whatever qemu wrote before it exited.
            if channel_open {
                drain_channel(channel, &mut buffer, &mut decoder)?;
                while let Ok(Some(frame)) = decoder.next_frame() {
                    if let Frame::Exit { code } = frame {
                        exit_code = Some(code);
                    }
                }
            }
            watch.end = End::Exited { status, exit_code };
            return Ok(watch);
        }
    }
}

/// Reads everything available; false once the writer closed the fifo.
fn drain_channel(
    channel: &mut std::fs::File,
    buffer: &mut [u8],
    decoder: &mut Decoder,
) -> anyhow::Result<bool> {
    loop {
        match channel.read(buffer) {
            Ok(0) => return Ok(false),
            Ok(n) => decoder.push(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the report channel"),
        }
    }
}

/// The last `count` lines of a file (lossy UTF-8, carriage returns removed).
pub fn tail_lines(path: &Path, count: usize) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&data).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_maps_nodes_to_sockets_and_llcs_to_dies() {
        let spec: TopoSpec = "2n2l2c1t".parse().unwrap();
        let args = topology_args(&spec, 512).join(" ");
        assert!(
            args.contains("-smp cpus=8,sockets=2,dies=2,cores=2,threads=1"),
            "{args}"
        );
        assert!(args.contains("-m 512M"), "{args}");
        assert!(
            args.contains("node,nodeid=0,cpus=0-3,memdev=ram-node0"),
            "{args}"
        );
        assert!(
            args.contains("node,nodeid=1,cpus=4-7,memdev=ram-node1"),
            "{args}"
        );
        assert!(
            args.contains("memory-backend-ram,id=ram-node1,size=256M"),
            "{args}"
        );
    }

    #[test]
    fn too_little_memory_per_node_is_bad_input() {
        let mut config = VmConfig::new(GuestTask::Shell);
        config.topology = "4n1l1c1t".parse().unwrap();
        config.memory_mib = 256;
        let err = config.validate().unwrap_err();
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::EXIT_BAD_INPUT
        );
        assert!(format!("{err}").contains("--memory 512M"), "{err}");
    }
}
