//! Preparing a boot: the kernel to load (refused early when sched_ext is
//! required and its config has none), the cached base image plus the
//! per-run overlay (working directory, kernel config, includes,
//! executables, the guest's plan), the accelerator and the kernel command
//! line.
//!
//! Separate because a [`PreparedBoot`] can be run more than once
//! (benchmarks) and everything here happens before qemu starts.

use std::path::PathBuf;

use anyhow::Context;

use super::{choose_accel, which_qemu, Accel, GuestTask, VmConfig};
use crate::error::RunqError;
use crate::topology::TopoSpec;
use crate::vm::guest::{Plan, PlanMode, PLAN_PATH};
use crate::vm::initramfs::{self, Archive};
use crate::vm::kernel;

/// Name prefix of the per-run temporary directory (see [`crate::scratch`]).
pub const RUN_DIR_PREFIX: &str = "runq-vm";

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
