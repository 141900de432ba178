//! The qemu command line and process: the `-smp`/`-numa` topology, the
//! full argument list of a prepared boot, finding the qemu binary, and
//! spawning it tied to this process.
//!
//! Separate because the arguments carry the configuration choices the
//! module docs explain, and are checked by tests without booting.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::SigSet;

use super::files::RunFiles;
use super::PreparedBoot;
use crate::error::RunqError;
use crate::topology::TopoSpec;

/// The qemu binary (override with `$RUNQ_QEMU`).
pub const QEMU_BINARY: &str = "qemu-system-x86_64";

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

/// The qemu command for `boot`: console to a file (or the terminal for a
/// shell), report channel into the fifo, stderr to a file.
pub(super) fn qemu_command(
    boot: &PreparedBoot,
    files: &RunFiles,
    shell: bool,
) -> anyhow::Result<Command> {
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
}
