//! Where runq keeps what it downloads, builds or extracts between runs.
//!
//! The root is `$RUNQ_CACHE_DIR`, else `$XDG_CACHE_HOME/runq`, else
//! `$HOME/.cache/runq`. Under it:
//!
//! | path | owner | what |
//! | --- | --- | --- |
//! | `initramfs-*.cpio.gz`, `memo-*` | [`crate::vm::initramfs`] | base guest images by content hash |
//! | `kernels/<release>/` | [`crate::kernel`] | fetched or built kernels with their metadata |
//! | `schedulers/` | scheduler builds | a cargo install root; binaries in `schedulers/bin/` |
//! | `consoles/` | [`crate::vm`] | guest consoles of failed boots |
//!
//! Nothing here creates the directories: writers create what they write.

use std::path::PathBuf;

use crate::error::RunqError;

/// Environment variable that overrides the cache root.
pub const CACHE_ENV: &str = "RUNQ_CACHE_DIR";

/// The cache root (see the module docs for the order of precedence).
/// Empty variables count as unset.
pub fn root() -> anyhow::Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(CACHE_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("runq"));
    }
    if let Some(home) = var("HOME") {
        return Ok(PathBuf::from(home).join(".cache").join("runq"));
    }
    Err(RunqError::environment(format!(
        "no cache directory: none of {CACHE_ENV}, XDG_CACHE_HOME or HOME is set; set one of them"
    )))
}

/// Cached kernels, one directory per release.
pub fn kernels_dir() -> anyhow::Result<PathBuf> {
    Ok(root()?.join("kernels"))
}

/// The cargo install root for schedulers; their binaries are in `bin/`.
pub fn schedulers_dir() -> anyhow::Result<PathBuf> {
    Ok(root()?.join("schedulers"))
}

/// Consoles of guests that failed, kept for reading after the run.
pub fn consoles_dir() -> anyhow::Result<PathBuf> {
    Ok(root()?.join("consoles"))
}
