//! Watching a running qemu: signals read from a signalfd, the timeout and
//! the power-off grace, the report channel's frames, qemu's exit; qemu is
//! killed and reaped on every path out.
//!
//! Separate because this loop is the only part that waits on qemu, and what
//! it saw ([`Watch`]) is all the outcome needs.

use std::io::Read;
use std::os::fd::AsFd;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::FrameSink;
use crate::vm::channel::{Decoder, Frame};

/// How long qemu may take to power off after the guest reported its exit.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);

/// Runs `body` with SIGINT, SIGTERM and SIGHUP blocked and readable from a
/// signalfd, so an interrupted run still kills qemu and removes its files;
/// the signal mask is restored on every path.
pub(super) fn with_signals_read<T>(
    body: impl FnOnce(&SignalFd) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
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

/// Kills and reaps qemu on every path out of [`run_prepared`](super::run_prepared).
pub(super) struct QemuGuard<'a> {
    pub(super) child: Option<&'a mut Child>,
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

    pub(super) fn kill(&mut self) {
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
pub(super) enum End {
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
pub(super) struct Watch {
    pub(super) end: End,
    pub(super) boot_to_init: Option<Duration>,
    pub(super) guest_uptime_at_init: Option<Duration>,
    pub(super) notes: Vec<String>,
    /// The exit code the guest reported, and when.
    exit_code: Option<i32>,
    exit_seen_at: Option<Instant>,
}

/// Watches a running qemu: signals, the timeout, the report channel's
/// frames, qemu's exit.
pub(super) struct Supervisor<'a> {
    pub(super) guard: QemuGuard<'a>,
    pub(super) channel: &'a mut std::fs::File,
    pub(super) signal_fd: &'a SignalFd,
    pub(super) started: Instant,
    pub(super) deadline: Instant,
    pub(super) sink: &'a mut dyn FrameSink,
    pub(super) decoder: Decoder,
    pub(super) buffer: Vec<u8>,
    pub(super) watch: Watch,
}

impl Supervisor<'_> {
    /// Loops until qemu exits, the timeout passes or a signal arrives.
    pub(super) fn run(&mut self) -> anyhow::Result<Watch> {
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
