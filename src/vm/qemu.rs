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
use super::console;
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
                // Once per process: a test harness boots many guests.
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "runq: WARNING: KVM is not usable ({why}); falling back to TCG software \
                         emulation, which is many times slower. Pass --accel tcg to silence this."
                    )
                });
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
    /// Test cases of the test binary given as `runq_exe`, run one after
    /// another in this boot; their frames go to the caller's [`FrameSink`].
    Cases(Vec<String>),
}

impl GuestTask {
    /// The host paths of the output files the guest ships back, by index.
    fn output_paths(&self) -> Vec<PathBuf> {
        match self {
            GuestTask::Command { outputs, .. } => outputs.iter().map(|(h, _)| h.clone()).collect(),
            GuestTask::Shell | GuestTask::Script(_) | GuestTask::Cases(_) => Vec::new(),
        }
    }
}

/// Receives the frames a guest sends about its command: output, files,
/// test cases. (Readiness, notes and the exit code are handled by the
/// supervisor itself.)
pub trait FrameSink {
    fn frame(&mut self, frame: Frame) -> anyhow::Result<()>;
}

/// The sink of `runq vm`: output goes to this process's stdout and stderr,
/// files to the host paths of [`GuestTask::Command`]'s outputs.
struct StdioSink {
    outputs: Vec<PathBuf>,
}

impl FrameSink for StdioSink {
    fn frame(&mut self, frame: Frame) -> anyhow::Result<()> {
        match frame {
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
            Frame::File { index, data } => match self.outputs.get(index) {
                Some(host) => crate::output::write_output("output", host, &data)?,
                None => tracing::warn!("guest sent unknown file #{index}"),
            },
            other => tracing::warn!("unexpected frame from the guest: {other:?}"),
        }
        Ok(())
    }
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
    /// Host executables put in the guest at `/usr/local/bin/<name>` (on its
    /// PATH) with the shared libraries they need, e.g. a scheduler under
    /// test.
    pub executables: Vec<PathBuf>,
    /// The guest command runs a sched_ext scheduler: a kernel whose config
    /// says it has no sched_ext is refused before booting.
    pub require_sched_ext: bool,
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
            executables: Vec::new(),
            require_sched_ext: false,
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
        for exe in &self.executables {
            if !exe.is_file() {
                return Err(RunqError::bad_input(format!(
                    "executable {} for the guest is not a file; name an existing program",
                    exe.display()
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

/// Bad input when the kernel's config says it has no sched_ext (a kernel
/// without a known config is left to the guest to judge).
fn refuse_without_sched_ext(kernel: &kernel::BootKernel) -> anyhow::Result<()> {
    let Some(path) = &kernel.config else {
        return Ok(());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the kernel config {}", path.display()))?;
    if crate::kernel::store::Capabilities::from_config(&text).sched_ext {
        return Ok(());
    }
    Err(RunqError::bad_input(format!(
        "--scheduler needs a kernel with sched_ext, and {} has none (CONFIG_SCHED_CLASS_EXT is \
         not set in {}); fetch one with `runq kernel fetch` and boot it with --kernel sched_ext",
        kernel.description,
        path.display()
    )))
}

/// Finds the kernel, builds (or reuses) the base image, writes the per-run
/// image and chooses the accelerator.
pub fn prepare(config: &VmConfig) -> anyhow::Result<PreparedBoot> {
    // Directories of runs that were killed before they could remove them.
    crate::scratch::reap(&std::env::temp_dir(), RUN_DIR_PREFIX);
    config.validate()?;
    let kernel = kernel::resolve(config.kernel.as_deref())?;
    if config.require_sched_ext {
        refuse_without_sched_ext(&kernel)?;
    }
    which_qemu()?;
    let accel = choose_accel(config.accel)?;
    let runq = match &config.runq_exe {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding the runq executable")?,
    };
    let busybox = initramfs::find_busybox()?;
    let base = initramfs::base_image(&runq, &busybox)?;

    let mut overlay = run_overlay(config, &kernel)?;
    if !config.executables.is_empty() {
        let present = initramfs::base_libraries(&runq, &busybox)?;
        initramfs::add_executables(&mut overlay, &config.executables, &present)?;
    }

    let dir = crate::scratch::dir_in(&std::env::temp_dir(), RUN_DIR_PREFIX)?;
    let initrd = dir.path().join("initrd.img");
    initramfs::write_boot_image(&base, &overlay, &initrd)?;

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
        append: kernel_command_line(config),
        image_built: base.built,
        dir,
    })
}

/// The per-run part of the initramfs: the working directory, the kernel's
/// config, the `--include` files and the plan for the guest's init.
fn run_overlay(config: &VmConfig, kernel: &kernel::BootKernel) -> anyhow::Result<Archive> {
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
    let plan = guest_plan(&config.task, cwd_text);
    overlay.file(PLAN_PATH, 0o644, serde_json::to_vec_pretty(&plan)?);
    Ok(overlay)
}

/// What the guest's init is told to do.
fn guest_plan(task: &GuestTask, cwd: String) -> Plan {
    let (mode, outputs) = match task {
        GuestTask::Command { args, outputs } => (
            PlanMode::Command { args: args.clone() },
            outputs.iter().map(|(_, guest)| guest.clone()).collect(),
        ),
        GuestTask::Shell => (PlanMode::Shell, Vec::new()),
        GuestTask::Cases(cases) => (
            PlanMode::Cases {
                cases: cases.clone(),
            },
            Vec::new(),
        ),
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
    Plan {
        mode,
        cwd,
        env,
        outputs,
    }
}

/// The guest kernel's command line: [`BASE_KERNEL_ARGS`] and `--kernel-arg`s.
fn kernel_command_line(config: &VmConfig) -> String {
    let mut append: Vec<String> = BASE_KERNEL_ARGS
        .iter()
        // An interactive shell should not start with the early boot log.
        .filter(|a| !(matches!(config.task, GuestTask::Shell) && a.starts_with("earlyprintk")))
        .map(|s| s.to_string())
        .collect();
    append.extend(config.kernel_args.iter().cloned());
    append.join(" ")
}

pub fn which_qemu() -> anyhow::Result<PathBuf> {
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
            crate::process::fork::tie_to_parent(parent)?;
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
/// the run ended. Errors (timeout, panic, early death) carry the guest
/// kernel's report or the console's last lines and map to exit code 3.
pub fn run(config: &VmConfig) -> anyhow::Result<VmOutcome> {
    let boot = prepare(config)?;
    run_prepared(config, &boot)
}

/// Like [`run`] for an already prepared boot.
pub fn run_prepared(config: &VmConfig, boot: &PreparedBoot) -> anyhow::Result<VmOutcome> {
    let mut sink = StdioSink {
        outputs: config.task.output_paths(),
    };
    run_prepared_with(config, boot, &mut sink)
}

/// Like [`run_prepared`], with the guest's output, files and test-case
/// frames delivered to `sink`.
pub fn run_prepared_with(
    config: &VmConfig,
    boot: &PreparedBoot,
    sink: &mut dyn FrameSink,
) -> anyhow::Result<VmOutcome> {
    let shell = matches!(config.task, GuestTask::Shell);
    let mut files = RunFiles::create(config, boot)?;
    let mut command = qemu_command(boot, &files, shell)?;
    let (watch, total) = with_signals_read(|signal_fd| {
        let started = Instant::now();
        let mut child = spawn_tied_to_parent(&mut command).with_context(|| {
            format!("starting {QEMU_BINARY}; install it with `apt-get install qemu-system-x86`")
        })?;
        let mut supervisor = Supervisor {
            guard: QemuGuard {
                child: Some(&mut child),
            },
            channel: &mut files.channel,
            signal_fd,
            started,
            deadline: started + config.timeout,
            sink,
            decoder: Decoder::new(),
            buffer: vec![0u8; 64 * 1024],
            watch: Watch::default(),
        };
        let watch = supervisor.run();
        supervisor.guard.kill();
        watch.map(|w| (w, started.elapsed()))
    })?;
    outcome(watch, total, config, boot, &files, shell)
}

/// The per-run files: console, report channel fifo, qemu's stderr.
struct RunFiles {
    console: PathBuf,
    /// Whether the console is the user's `--console` file.
    console_given: bool,
    channel_path: PathBuf,
    channel: std::fs::File,
    /// A write end held open: a fifo without writers reads as end-of-file
    /// before qemu has opened it. Its end is seen as qemu's exit instead.
    _channel_keepalive: std::fs::File,
    qemu_stderr: PathBuf,
}

impl RunFiles {
    fn create(config: &VmConfig, boot: &PreparedBoot) -> anyhow::Result<RunFiles> {
        let channel_path = boot.dir.path().join("channel.fifo");
        // A prepared boot may run more than once (benchmarks): a fresh fifo
        // each time, so nothing of an earlier run is read.
        let _ = std::fs::remove_file(&channel_path);
        nix::unistd::mkfifo(
            &channel_path,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .context("creating the channel fifo")?;
        // Open the read end first (non-blocking), so qemu's open for
        // writing does not block and nothing it writes is lost.
        let channel = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags_nonblock()
            .open(&channel_path)
            .context("opening the channel fifo")?;
        let keepalive = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags_nonblock()
            .open(&channel_path)
            .context("opening the channel fifo for writing")?;
        Ok(RunFiles {
            console: config
                .console
                .clone()
                .unwrap_or_else(|| boot.dir.path().join("console.log")),
            console_given: config.console.is_some(),
            channel_path,
            channel,
            _channel_keepalive: keepalive,
            qemu_stderr: boot.dir.path().join("qemu.stderr"),
        })
    }

    fn qemu_stderr_text(&self) -> String {
        std::fs::read_to_string(&self.qemu_stderr)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Where the whole console can be read after the run: the user's
    /// `--console` file, else a copy kept in the cache (the run directory
    /// is removed). `None` if it could not be kept.
    fn keep_console(&self) -> Option<PathBuf> {
        if self.console_given {
            return Some(self.console.clone());
        }
        let dir = crate::cache::consoles_dir().ok()?;
        match console::keep(&self.console, &dir) {
            Ok(kept) => Some(kept),
            Err(err) => {
                tracing::warn!("cannot keep the guest console in {}: {err}", dir.display());
                None
            }
        }
    }
}

/// The qemu command for `boot`: console to a file (or the terminal for a
/// shell), report channel into the fifo, stderr to a file.
fn qemu_command(boot: &PreparedBoot, files: &RunFiles, shell: bool) -> anyhow::Result<Command> {
    let console_arg = if shell {
        "mon:stdio".to_string()
    } else {
        format!("file:{}", files.console.display())
    };
    let args = boot.qemu_args(
        &console_arg,
        &format!("file:{}", files.channel_path.display()),
    );
    let mut command = Command::new(which_qemu()?);
    command
        .args(&args)
        .stderr(std::fs::File::create(&files.qemu_stderr)?);
    if shell {
        command.stdin(Stdio::inherit()).stdout(Stdio::inherit());
    } else {
        command.stdin(Stdio::null()).stdout(Stdio::null());
    }
    tracing::info!(?args, "starting qemu");
    Ok(command)
}

/// Runs `body` with SIGINT, SIGTERM and SIGHUP blocked and readable from a
/// signalfd, so an interrupted run still kills qemu and removes its files;
/// the signal mask is restored on every path.
fn with_signals_read<T>(body: impl FnOnce(&SignalFd) -> anyhow::Result<T>) -> anyhow::Result<T> {
    use nix::sys::signal::{pthread_sigmask, SigmaskHow};
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    let mut old_mask = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), Some(&mut old_mask))?;
    let result = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(anyhow::Error::from)
        .and_then(|fd| body(&fd));
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None)?;
    result
}

/// Turns how the run ended into the outcome or the error the user sees.
fn outcome(
    watch: Watch,
    total: Duration,
    config: &VmConfig,
    boot: &PreparedBoot,
    files: &RunFiles,
    shell: bool,
) -> anyhow::Result<VmOutcome> {
    let failure = match watch.end {
        End::Interrupted(signal) => {
            return Err(RunqError::environment(format!(
                "interrupted by {signal:?}; qemu was stopped"
            )))
        }
        End::Exited {
            exit_code: Some(code),
            ..
        } => {
            return Ok(VmOutcome {
                exit_code: code,
                accel: boot.accel,
                boot_to_init: watch.boot_to_init,
                guest_uptime_at_init: watch.guest_uptime_at_init,
                total,
                image_built: boot.image_built,
            })
        }
        End::TimedOut => format!(
            "the guest did not finish within --timeout {}s ({}); qemu was killed",
            config.timeout.as_secs_f64(),
            if watch.boot_to_init.is_some() {
                "init was running: the command hung or is slower than the timeout"
            } else {
                "init never started: boot hung or is slow"
            }
        ),
        End::Exited { status, .. } => {
            let console_text = console::read(&files.console);
            let what = if console::panicked(&console_text) {
                "the guest kernel panicked".to_string()
            } else if !status.success() {
                format!("qemu failed ({status})")
            } else if watch.boot_to_init.is_none() {
                "the guest stopped before init started".to_string()
            } else {
                "the guest stopped before reporting an exit code".to_string()
            };
            let mut text = what;
            for note in &watch.notes {
                text.push_str(&format!("\n{note}"));
            }
            let stderr = files.qemu_stderr_text();
            if !stderr.is_empty() {
                text.push_str(&format!("\nqemu said: {stderr}"));
            }
            text
        }
    };
    Err(RunqError::environment(failure_message(
        failure,
        &boot.kernel_description,
        files,
        shell,
    )))
}

/// A failure's message: what happened, the kernel, the guest kernel's
/// report (or the console's last lines) and where the whole console is.
fn failure_message(what: String, kernel: &str, files: &RunFiles, shell: bool) -> String {
    if shell {
        return format!("{what} (kernel {kernel})");
    }
    let console_text = console::read(&files.console);
    let kept = match files.keep_console() {
        Some(path) => format!("\nthe whole guest console: {}", path.display()),
        None => String::new(),
    };
    format!(
        "{what} (kernel {kernel})\n{}{kept}",
        console::excerpt(&console_text)
    )
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

#[derive(Default)]
enum End {
    Exited {
        status: std::process::ExitStatus,
        exit_code: Option<i32>,
    },
    #[default]
    TimedOut,
    Interrupted(Signal),
}

/// What the supervisor saw of the run.
#[derive(Default)]
struct Watch {
    end: End,
    boot_to_init: Option<Duration>,
    guest_uptime_at_init: Option<Duration>,
    notes: Vec<String>,
    /// The exit code the guest reported, and when.
    exit_code: Option<i32>,
    exit_seen_at: Option<Instant>,
}

/// Watches a running qemu: signals, the timeout, the report channel's
/// frames, qemu's exit.
struct Supervisor<'a> {
    guard: QemuGuard<'a>,
    channel: &'a mut std::fs::File,
    signal_fd: &'a SignalFd,
    started: Instant,
    deadline: Instant,
    sink: &'a mut dyn FrameSink,
    decoder: Decoder,
    buffer: Vec<u8>,
    watch: Watch,
}

impl Supervisor<'_> {
    /// Loops until qemu exits, the timeout passes or a signal arrives.
    fn run(&mut self) -> anyhow::Result<Watch> {
        let mut channel_open = true;
        loop {
            if let Some(end) = self.deadline_passed() {
                self.watch.end = end;
                return Ok(std::mem::take(&mut self.watch));
            }
            self.wait_for_input(channel_open)?;
            if let Ok(Some(info)) = self.signal_fd.read_signal() {
                let signal = Signal::try_from(info.ssi_signo as i32).unwrap_or(Signal::SIGTERM);
                self.guard.kill();
                self.watch.end = End::Interrupted(signal);
                return Ok(std::mem::take(&mut self.watch));
            }
            if channel_open {
                channel_open = drain_channel(self.channel, &mut self.buffer, &mut self.decoder)?;
                while let Some(frame) = self
                    .decoder
                    .next_frame()
                    .context("reading the report channel")?
                {
                    self.handle(frame)?;
                }
            }
            if let Some(status) = self.guard.try_wait()? {
                if channel_open {
                    self.collect_last_frames()?;
                }
                self.watch.end = End::Exited {
                    status,
                    exit_code: self.watch.exit_code,
                };
                return Ok(std::mem::take(&mut self.watch));
            }
        }
    }

    /// The timeout (before the guest reported), or the power-off grace
    /// after it reported.
    fn deadline_passed(&mut self) -> Option<End> {
        if Instant::now() >= self.deadline && self.watch.exit_code.is_none() {
            return Some(End::TimedOut);
        }
        if self
            .watch
            .exit_seen_at
            .is_some_and(|t| t.elapsed() > POWER_OFF_GRACE)
        {
            // The guest reported; it just did not power off in time.
            tracing::warn!("guest did not power off after reporting; stopping qemu");
            self.guard.kill();
            return Some(End::Exited {
                status: std::process::ExitStatus::default(),
                exit_code: self.watch.exit_code,
            });
        }
        None
    }

    /// Waits up to 50 ms for a signal or channel data (qemu's exit is
    /// polled with `try_wait`).
    fn wait_for_input(&self, channel_open: bool) -> anyhow::Result<()> {
        let wait_ms = self
            .deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50))
            .as_millis() as u16;
        let mut fds = vec![PollFd::new(self.signal_fd.as_fd(), PollFlags::POLLIN)];
        if channel_open {
            fds.push(PollFd::new(self.channel.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(wait_ms.max(1))) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(e).context("waiting for the guest"),
        }
    }

    fn handle(&mut self, frame: Frame) -> anyhow::Result<()> {
        match frame {
            Frame::Ready { uptime_ms } => {
                self.watch.boot_to_init = Some(self.started.elapsed());
                self.watch.guest_uptime_at_init = Some(Duration::from_millis(uptime_ms));
            }
            Frame::Note(text) => {
                eprintln!("runq: guest: {text}");
                self.watch.notes.push(text);
            }
            Frame::Exit { code } => {
                self.watch.exit_code = Some(code);
                self.watch.exit_seen_at = Some(Instant::now());
            }
            other => self.sink.frame(other)?,
        }
        Ok(())
    }

    /// After qemu exited: the exit frame it may have written last.
    fn collect_last_frames(&mut self) -> anyhow::Result<()> {
        drain_channel(self.channel, &mut self.buffer, &mut self.decoder)?;
        while let Ok(Some(frame)) = self.decoder.next_frame() {
            match frame {
                Frame::Exit { code } => self.watch.exit_code = Some(code),
                Frame::Ready { .. } | Frame::Note(_) => {}
                other => self.sink.frame(other)?,
            }
        }
        Ok(())
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
