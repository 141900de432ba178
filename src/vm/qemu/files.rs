//! The per-run files: where the console goes (and where it is kept after
//! the run), the report channel's fifo opened before qemu starts, and
//! qemu's stderr.
//!
//! Separate because the fifo's opening order matters (nothing qemu writes
//! may be lost, and a fifo without writers reads as end-of-file) and both
//! the command line and the outcome read these paths.

use std::path::PathBuf;

use anyhow::Context;

use super::{PreparedBoot, VmConfig};
use crate::vm::console;

/// The per-run files: console, report channel fifo, qemu's stderr.
pub(super) struct RunFiles {
    pub(super) console: PathBuf,
    /// Whether the console is the user's `--console` file.
    console_given: bool,
    pub(super) channel_path: PathBuf,
    pub(super) channel: std::fs::File,
    /// A write end held open: a fifo without writers reads as end-of-file
    /// before qemu has opened it. Its end is seen as qemu's exit instead.
    _channel_keepalive: std::fs::File,
    pub(super) qemu_stderr: PathBuf,
}

impl RunFiles {
    pub(super) fn create(config: &VmConfig, boot: &PreparedBoot) -> anyhow::Result<RunFiles> {
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

    pub(super) fn qemu_stderr_text(&self) -> String {
        std::fs::read_to_string(&self.qemu_stderr)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Where the whole console can be read after the run: the user's
    /// `--console` file, else a copy kept in the cache (the run directory
    /// is removed). `None` if it could not be kept.
    pub(super) fn keep_console(&self) -> Option<PathBuf> {
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

trait NonBlockOpen {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlockOpen for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}
