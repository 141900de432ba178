//! Starting a payload on [`crate::process::Launch`]: the program (or, with
//! `trace = true`, a forked tracing process running it under runq's ptrace
//! engine) is held before exec, placed into every cgroup by its pid, then
//! released, so it and everything it starts are born inside them. It runs
//! in its own process group, dies with runq, gets the ready-marker
//! environment, and has a private /dev/shm: POSIX shared memory it leaves
//! behind (cyclictest's `/dev/shm/cyclictest<pid>` when it is killed)
//! vanishes with its last process instead of leaking into the host's.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use serde::{Deserialize, Serialize};

use super::spec::PayloadSpec;
use crate::error::RunqError;
use crate::process::{Launch, LaunchError, Supervised};
use crate::workload::ready;
use crate::workload::ExitShape;

/// Bytes of output kept for the report's `stdout_tail`.
pub const TAIL_BYTES: usize = 4096;

/// A started payload: the supervised child and, in trace mode, the channel
/// on which the tracing process sends the tree when it ends.
pub(super) struct Started {
    pub process: Supervised,
    pub trace_channel: Option<OwnedFd>,
}

/// The tree a tracing process reports.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct TracedTree {
    pub processes: Vec<(i32, String)>,
    pub root_exit: Option<ExitShape>,
    pub error: Option<String>,
}

/// Starts `spec` (resolved to `program`) inside every cgroup of
/// `cgroup_procs`; returns once it runs, or the reason it could not.
pub(super) fn start(
    spec: &PayloadSpec,
    program: &Path,
    cgroup_procs: &[PathBuf],
) -> Result<Started> {
    let ready_dir = ready::ready_dir();
    let (launch, trace_channel) = if spec.trace {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("trace pipe")?;
        let flags = OFlag::from_bits_truncate(fcntl(read.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(
            read.as_raw_fd(),
            FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
        )?;
        let (program, traced, dir) = (program.to_path_buf(), spec.clone(), ready_dir.clone());
        let body = move || run_tracer(&program, &traced, write, &dir);
        (Launch::function(&spec.binary, body), Some(read))
    } else {
        let launch = Launch::new(program)
            .argv0(&spec.binary)
            .args(&spec.args)
            .env(ready::READY_DIR_ENV, &ready_dir)
            // RUNQ_READY_FILE=<dir>/runq-ready-<pid> (as marker_path_in names it).
            .env_own_pid(ready::READY_FILE_ENV, ready_dir.join(ready::MARKER_PREFIX));
        (launch, None)
    };
    let mut process = launch
        .hold(true)
        .private_shm(true)
        .tail_bytes(TAIL_BYTES)
        .capture(true)
        .spawn()
        .map_err(|e| launch_error(spec, e))?;
    let pid = process.pid().as_raw();
    if !spec.trace {
        let _ = ready::clear_marker(pid);
    }
    place(spec, pid, cgroup_procs)?;
    process.release().map_err(|e| launch_error(spec, e))?;
    Ok(Started {
        process,
        trace_channel,
    })
}

/// Writes the held child's pid into every `cgroup.procs` file.
fn place(spec: &PayloadSpec, pid: i32, cgroup_procs: &[PathBuf]) -> Result<()> {
    for procs in cgroup_procs {
        std::fs::write(procs, pid.to_string()).map_err(|e| {
            RunqError::environment(format!(
                "payload \"{}\": could not join cgroup {}: {e}; check that the cgroup exists \
                 and runq runs as root",
                spec.name,
                procs.display()
            ))
        })?;
    }
    Ok(())
}

fn launch_error(spec: &PayloadSpec, err: LaunchError) -> anyhow::Error {
    let name = &spec.name;
    match err {
        LaunchError::Exec { .. } | LaunchError::Nul(_) => {
            RunqError::bad_input(format!("payload \"{name}\": {err}"))
        }
        other => RunqError::environment(format!("payload \"{name}\": {other}")),
    }
}

/// In the (trace-mode) child: run the program under the ptrace engine and
/// send the tree and the root's end to the parent as JSON. Returns the
/// child's exit code.
fn run_tracer(program: &Path, spec: &PayloadSpec, channel: OwnedFd, ready_dir: &Path) -> i32 {
    std::env::set_var(ready::READY_DIR_ENV, ready_dir);
    // The program's pid is not known here; it can use $RUNQ_READY_DIR/runq-ready-$$.
    std::env::remove_var(ready::READY_FILE_ENV);
    let mut argv = vec![spec.binary.clone()];
    argv.extend(spec.args.iter().cloned());
    let config = crate::trace::TraceConfig {
        program: program.to_path_buf(),
        argv,
        follow_exec: true,
        coverage: None,
        program_lines: None,
        on_interrupt: crate::trace::InterruptAction::Kill,
        // The payload's cgroups hold the tree; the handle kills it there.
        contain: false,
    };
    let tree = match crate::trace::trace(&config) {
        Ok(outcome) => TracedTree {
            processes: outcome
                .processes
                .iter()
                .map(|p| {
                    let exe = p.current_exe();
                    let name = Path::new(exe)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| exe.to_string());
                    (p.pid, name)
                })
                .collect(),
            root_exit: outcome.root_status.map(|s| match s {
                crate::trace::ExitStatus::Exited { code } => ExitShape::Exited(code),
                crate::trace::ExitStatus::Signaled { number, .. } => ExitShape::Signaled(number),
            }),
            error: None,
        },
        Err(e) => TracedTree {
            error: Some(format!("{e:#}")),
            ..TracedTree::default()
        },
    };
    let json = serde_json::to_vec(&tree).unwrap_or_default();
    let mut written = 0;
    while written < json.len() {
        match nix::unistd::write(&channel, &json[written..]) {
            Ok(n) => written += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    0
}
