//! runq as the guest's init (pid 1 in the initramfs).
//!
//! Init mounts proc, sysfs, devtmpfs, a tmpfs on /tmp and a pure cgroup v2
//! hierarchy with the cpu and cpuset controllers enabled for children. It
//! then reads the plan the host put in the initramfs ([`PLAN_PATH`]), runs
//! the requested runq command line as a child (init itself must not exit:
//! that panics the kernel), streams the child's stdout and stderr to the
//! host over ttyS1 (see [`super::channel`]), ships the output files named
//! in the plan, reports the exit code and powers the machine off.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::channel::{encode, Frame};

/// Where the host puts the plan inside the initramfs.
pub const PLAN_PATH: &str = "/runq/plan.json";
/// The serial port carrying the report channel.
pub const CHANNEL_TTY: &str = "/dev/ttyS1";
/// The guest's PATH: busybox, then the executables `runq vm` copied in
/// (`/usr/local/bin`, e.g. a scheduler under test).
pub const GUEST_PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin";
/// The console the shell runs on.
pub const CONSOLE_TTY: &str = "/dev/ttyS0";
/// How long init keeps reading output after the command exited, for
/// descendants that still hold its pipes.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What the guest should do, written by the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    pub mode: PlanMode,
    /// Working directory for the command (the host's, so relative paths
    /// mean the same thing).
    pub cwd: String,
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
    /// Guest paths of the output files to ship back, by index.
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlanMode {
    /// Run `runq <args>`.
    Command { args: Vec<String> },
    /// Run a shell script (`runq shell` with a non-terminal stdin), its
    /// output streamed like a command's.
    Script { script: String },
    /// Run an interactive busybox shell on the console.
    Shell,
    /// Run test cases of the test binary that is `/init`, one after
    /// another in this boot, resetting the guest between them (see
    /// [`super::guest_cases`]).
    Cases { cases: Vec<String> },
}

/// Whether this process runs inside a runq guest (the plan is there).
pub fn in_guest() -> bool {
    Path::new(PLAN_PATH).is_file()
}

/// Whether this process is the guest's init: pid 1 with a plan in place.
/// (A container's pid 1 has no plan and runs the normal command line.)
pub fn is_guest_init() -> bool {
    std::process::id() == 1 && Path::new(PLAN_PATH).is_file()
}

/// Runs the guest and powers off; never returns. Errors are printed on the
/// console (which the host shows in its error message) and sent as a note.
pub fn init_main() -> ! {
    let mut channel = open_channel().ok();
    if let Err(err) = run_init(channel.as_mut()) {
        let text = format!("runq init: {err:#}");
        eprintln!("{text}");
        if let Some(tty) = channel.as_mut() {
            let _ = tty.write_all(&encode(&Frame::Note(text)));
        }
    }
    if let Some(tty) = channel.as_ref() {
        let _ = nix::sys::termios::tcdrain(tty.as_fd());
    }
    power_off()
}

fn power_off() -> ! {
    // Stop stragglers so their writes cannot race the sync.
    let _ = nix::sys::signal::kill(Pid::from_raw(-1), nix::sys::signal::Signal::SIGKILL);
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // reboot() only returns on failure; the kernel panics when init exits,
    // which the host reports with the console tail.
    std::process::exit(111)
}

fn run_init(channel: Option<&mut std::fs::File>) -> anyhow::Result<()> {
    mount_filesystems()?;
    let channel = match channel {
        Some(tty) => tty,
        None => {
            return Err(anyhow::anyhow!(
                "cannot open {CHANNEL_TTY} for the report channel"
            ))
        }
    };
    let uptime_ms = read_uptime_ms().unwrap_or(0);
    channel.write_all(&encode(&Frame::Ready { uptime_ms }))?;

    let plan_text = std::fs::read_to_string(PLAN_PATH).context("reading the plan")?;
    let plan: Plan = serde_json::from_str(&plan_text).context("parsing the plan")?;
    std::fs::create_dir_all(&plan.cwd).ok();
    for output in &plan.outputs {
        if let Some(parent) = Path::new(output).parent() {
            std::fs::create_dir_all(parent).ok();
        }
    }

    let code = match &plan.mode {
        PlanMode::Command { args } => {
            let mut command = std::process::Command::new("/init");
            command.arg0("runq").args(args);
            run_streamed(&plan, command, None, channel)?
        }
        PlanMode::Script { script } => {
            let path = "/tmp/runq-script.sh";
            std::fs::write(path, script).context("writing the script")?;
            let mut command = std::process::Command::new("/bin/busybox");
            command.args(["sh", "-s"]);
            let stdin = std::fs::File::open(path)?;
            run_streamed(&plan, command, Some(stdin), channel)?
        }
        PlanMode::Shell => run_shell(&plan)?,
        PlanMode::Cases { cases } => super::guest_cases::run_cases(&plan, cases, channel)?,
    };
    for (index, output) in plan.outputs.iter().enumerate() {
        if let Ok(data) = std::fs::read(output) {
            channel.write_all(&encode(&Frame::File { index, data }))?;
        }
    }
    channel.write_all(&encode(&Frame::Exit { code }))?;
    channel.flush()?;
    Ok(())
}

pub(super) fn mount_filesystems() -> anyhow::Result<()> {
    let plain = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounts: [(&str, &str, MsFlags, Option<&str>); 5] = [
        ("proc", "/proc", plain, None),
        ("sysfs", "/sys", plain, None),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        (
            "tmpfs",
            "/tmp",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        ("cgroup2", "/sys/fs/cgroup", plain, None),
    ];
    // Files the host put under /tmp (--include, the working directory)
    // would be hidden by the tmpfs: move them aside and copy them in.
    let saved_tmp = Path::new("/.initramfs-tmp");
    let had_tmp = std::fs::rename("/tmp", saved_tmp).is_ok();
    for (fstype, target, flags, data) in mounts {
        std::fs::create_dir_all(target).ok();
        mount(Some(fstype), target, Some(fstype), flags, data)
            .with_context(|| format!("mounting {fstype} on {target}"))?;
    }
    if had_tmp {
        copy_tree(saved_tmp, Path::new("/tmp")).context("copying the image's /tmp")?;
        let _ = std::fs::remove_dir_all(saved_tmp);
    }
    // The controllers the scenarios use; cpu and cpuset are required.
    let control = "/sys/fs/cgroup/cgroup.subtree_control";
    std::fs::write(control, "+cpu +cpuset")
        .with_context(|| format!("enabling cpu and cpuset in {control}"))?;
    for optional in ["+memory", "+pids", "+io"] {
        let _ = std::fs::write(control, optional);
    }
    Ok(())
}

/// Copies a directory tree (files with their modes, symlinks, dirs).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn read_uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((seconds * 1000.0) as u64)
}

/// Opens ttyS1 in raw mode, so bytes pass through unchanged.
fn open_channel() -> anyhow::Result<std::fs::File> {
    use nix::sys::termios::{cfmakeraw, cfsetspeed, tcgetattr, tcsetattr, BaudRate, SetArg};
    use std::os::unix::fs::OpenOptionsExt;
    // devtmpfs may not be mounted yet; create the node if needed.
    if !Path::new(CHANNEL_TTY).exists() {
        std::fs::create_dir_all("/dev").ok();
        let dev = nix::sys::stat::makedev(4, 65);
        nix::sys::stat::mknod(
            CHANNEL_TTY,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            dev,
        )
        .with_context(|| format!("creating {CHANNEL_TTY}"))?;
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(CHANNEL_TTY)
        .with_context(|| format!("opening {CHANNEL_TTY}"))?;
    let mut attrs = tcgetattr(tty.as_fd()).context("reading the channel's terminal settings")?;
    cfmakeraw(&mut attrs);
    cfsetspeed(&mut attrs, BaudRate::B115200).ok();
    tcsetattr(tty.as_fd(), SetArg::TCSANOW, &attrs).context("setting the channel to raw")?;
    Ok(tty)
}

fn exit_code_of(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Reaps every exited process (init inherits orphans); returns the exit
/// code of `child` if it was among them.
pub(super) fn reap(child: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(status) => {
                if status.pid() == Some(child) {
                    code = exit_code_of(status).or(code);
                }
            }
        }
    }
}

/// Runs `command` with its stdout and stderr streamed over the channel;
/// returns its exit code (128+N when killed by signal N).
pub(super) fn run_streamed(
    plan: &Plan,
    command: std::process::Command,
    stdin: Option<std::fs::File>,
    channel: &mut std::fs::File,
) -> anyhow::Result<i32> {
    let mut child = spawn_piped(plan, command, stdin)?;
    let child_pid = Pid::from_raw(child.id() as i32);
    let mut stdout = child
        .stdout
        .take()
        .map(|p| std::fs::File::from(std::os::fd::OwnedFd::from(p)));
    let mut stderr = child
        .stderr
        .take()
        .map(|p| std::fs::File::from(std::os::fd::OwnedFd::from(p)));
    let mut code = None;
    let mut exited_at: Option<Instant> = None;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if code.is_none() {
            code = reap(child_pid);
            if code.is_some() {
                exited_at = Some(Instant::now());
            }
        } else {
            reap(child_pid);
        }
        if stdout.is_none() && stderr.is_none() {
            if code.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if exited_at.is_some_and(|t| t.elapsed() > DRAIN_GRACE) {
            break;
        }
        let ready = poll_pipes(&stdout, &stderr)?;
        forward_pipes(&mut stdout, &mut stderr, &ready, &mut buffer, channel)?;
    }
    // Dropping `child` does not wait: init has reaped it above.
    drop(child);
    Ok(code.unwrap_or(128 + libc::SIGKILL))
}

/// Starts `command` in the plan's environment with its output piped.
fn spawn_piped(
    plan: &Plan,
    mut command: std::process::Command,
    stdin: Option<std::fs::File>,
) -> anyhow::Result<std::process::Child> {
    let stdin = match stdin {
        Some(file) => std::process::Stdio::from(file),
        None => std::process::Stdio::null(),
    };
    // A shared boot mounts a fresh /tmp between cases, taking a working
    // directory under /tmp with it (the host's, mirrored): make it again.
    std::fs::create_dir_all(&plan.cwd).ok();
    command
        .current_dir(&plan.cwd)
        .env_clear()
        .env("PATH", GUEST_PATH)
        .env("HOME", "/root")
        .envs(plan.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(stdin)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command.spawn().context("starting the guest command")
}

/// Waits up to 100 ms for output; one flag per open pipe, stdout first.
fn poll_pipes(
    stdout: &Option<std::fs::File>,
    stderr: &Option<std::fs::File>,
) -> anyhow::Result<Vec<bool>> {
    let mut fds = Vec::new();
    if let Some(out) = stdout {
        fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
    }
    if let Some(err) = stderr {
        fds.push(PollFd::new(err.as_fd(), PollFlags::POLLIN));
    }
    match poll(&mut fds, PollTimeout::from(100u16)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e).context("polling the command's output"),
    }
    Ok(fds
        .iter()
        .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
        .collect())
}

/// Reads once from each ready pipe and sends what came as a frame; a pipe
/// at its end (or failing) is closed.
fn forward_pipes(
    stdout: &mut Option<std::fs::File>,
    stderr: &mut Option<std::fs::File>,
    ready: &[bool],
    buffer: &mut [u8],
    channel: &mut std::fs::File,
) -> anyhow::Result<()> {
    let mut slot = 0;
    for is_stdout in [true, false] {
        let pipe = if is_stdout {
            &mut *stdout
        } else {
            &mut *stderr
        };
        let Some(reader) = pipe.as_mut() else {
            continue;
        };
        let is_ready = ready[slot];
        slot += 1;
        if !is_ready {
            continue;
        }
        let n = match reader.read(buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            *pipe = None;
            continue;
        }
        let data = buffer[..n].to_vec();
        let frame = if is_stdout {
            Frame::Stdout(data)
        } else {
            Frame::Stderr(data)
        };
        channel.write_all(&encode(&frame))?;
    }
    Ok(())
}

fn run_shell(plan: &Plan) -> anyhow::Result<i32> {
    let open_console = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(CONSOLE_TTY)
            .with_context(|| format!("opening {CONSOLE_TTY}"))
    };
    let console = open_console()?;
    let child = std::process::Command::new("/bin/busybox")
        .args(["setsid", "-c", "/bin/sh", "-l"])
        .current_dir(&plan.cwd)
        .env_clear()
        .env("PATH", GUEST_PATH)
        .env("HOME", "/root")
        .env("TERM", "linux")
        .env("PS1", "runq-guest# ")
        .envs(plan.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(console.try_clone()?)
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("starting the shell")?;
    let child_pid = Pid::from_raw(child.id() as i32);
    let code = loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status) if status.pid() == Some(child_pid) => {
                if let Some(code) = exit_code_of(status) {
                    break code;
                }
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for the shell"),
        }
    };
    drop(child);
    Ok(code)
}
