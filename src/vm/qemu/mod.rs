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

//!
//! | file | owns |
//! | --- | --- |
//! | `mod.rs` | [`run`], [`run_prepared`], [`run_prepared_with`]: one run from start to outcome; [`FrameSink`] and the sink of `runq vm` |
//! | `accel.rs` | [`Accel`], [`AccelChoice`]: whether KVM is usable, the fallback to TCG |
//! | `config.rs` | [`VmConfig`], [`GuestTask`]: what a run asks for, and its validation |
//! | `boot.rs` | [`prepare`] and [`PreparedBoot`]: kernel, initramfs overlay, guest plan, kernel command line |
//! | `command.rs` | the qemu command line ([`topology_args`], [`PreparedBoot::qemu_args`]), finding and spawning qemu |
//! | `files.rs` | the per-run files: console, report channel fifo, qemu's stderr |
//! | `supervise.rs` | watching a running qemu: signals, timeout, report channel frames, its exit |
//! | `outcome.rs` | [`VmOutcome`], and the error a failed run reports (console excerpt, kept console) |

mod accel;
mod boot;
mod command;
mod config;
mod files;
mod outcome;
mod supervise;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use super::channel::{Decoder, Frame};
use command::qemu_command;
use files::RunFiles;
use outcome::outcome;
use supervise::{with_signals_read, QemuGuard, Supervisor, Watch};

pub use accel::{choose_accel, kvm_unusable_reason, Accel, AccelChoice};
pub use boot::{prepare, PreparedBoot, BASE_KERNEL_ARGS, RUN_DIR_PREFIX};
pub use command::{spawn_tied_to_parent, topology_args, which_qemu, QEMU_BINARY};
pub use config::{GuestTask, VmConfig, MIN_NODE_MEMORY_MIB};
pub use outcome::VmOutcome;

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
