//! [`VmConfig`] and [`GuestTask`]: everything one VM run asks for, with the
//! defaults of `runq vm`, and the checks that reject impossible values
//! before anything is built or started.
//!
//! Separate because it is plain data: the CLI and the test runner fill it,
//! and validating it needs no kernel, image or qemu.

use std::path::PathBuf;
use std::time::Duration;

use super::AccelChoice;
use crate::error::RunqError;
use crate::topology::TopoSpec;

/// Smallest memory per NUMA node the Debian kernel boots with comfortably.
pub const MIN_NODE_MEMORY_MIB: u64 = 128;

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
    /// another in this boot; their frames go to the caller's
    /// [`FrameSink`](super::FrameSink).
    Cases(Vec<String>),
}

impl GuestTask {
    /// The host paths of the output files the guest ships back, by index.
    pub(super) fn output_paths(&self) -> Vec<PathBuf> {
        match self {
            GuestTask::Command { outputs, .. } => outputs.iter().map(|(h, _)| h.clone()).collect(),
            GuestTask::Shell | GuestTask::Script(_) | GuestTask::Cases(_) => Vec::new(),
        }
    }
}

/// Everything about one VM run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub topology: TopoSpec,
    pub memory_mib: u64,
    /// `--kernel`: a path, a cached release or `sched_ext` (see
    /// [`kernel`](crate::vm::kernel)); `None` means `$RUNQ_KERNEL`, then
    /// /boot.
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

#[cfg(test)]
mod tests {
    use super::*;

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
