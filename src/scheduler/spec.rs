//! What a run says about its scheduler under test: [`SchedulerSpec`] (the
//! TOML `[scheduler]` table, the `--scheduler`/`--scheduler-arg` flags and
//! the library builder) and where its binary is found.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::RunqError;
use crate::scenario::dsl::duration_text;

/// Default of [`SchedulerSpec::attach_timeout`]: generous, because a large
/// BPF program takes tens of seconds to verify without hardware
/// virtualization (scx_lavd: about 24 s under TCG).
pub const DEFAULT_ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`SchedulerSpec::stop_timeout`].
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A sched_ext scheduler to run under the scenario.
///
/// ```
/// use std::time::Duration;
/// use runq::scheduler::SchedulerSpec;
/// let spec = SchedulerSpec::new("scx_bpfland")
///     .args(["--slice-us", "5000"])
///     .attach_timeout(Duration::from_secs(30));
/// assert_eq!(spec.binary, "scx_bpfland");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSpec {
    /// A name looked up on PATH, in `~/.cargo/bin` and in runq's scheduler
    /// cache (`<cache>/schedulers/bin`), or a path.
    pub binary: String,
    /// Its command-line arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// How long the kernel may take to report it attached.
    #[serde(default = "default_attach_timeout", with = "duration_text")]
    pub attach_timeout: Duration,
    /// How long it may take to exit after SIGINT before it is killed.
    #[serde(default = "default_stop_timeout", with = "duration_text")]
    pub stop_timeout: Duration,
}

fn default_attach_timeout() -> Duration {
    DEFAULT_ATTACH_TIMEOUT
}

fn default_stop_timeout() -> Duration {
    DEFAULT_STOP_TIMEOUT
}

impl SchedulerSpec {
    /// A scheduler with no arguments and the default timeouts.
    pub fn new(binary: impl Into<String>) -> Self {
        SchedulerSpec {
            binary: binary.into(),
            args: Vec::new(),
            attach_timeout: DEFAULT_ATTACH_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }

    /// Replaces the arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn attach_timeout(mut self, timeout: Duration) -> Self {
        self.attach_timeout = timeout;
        self
    }

    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The binary's file name (what the guest's copy is called).
    pub fn file_name(&self) -> &str {
        self.binary.rsplit('/').next().unwrap_or(&self.binary)
    }

    /// Rejects values no run can use (bad input, exit 2).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.binary.trim().is_empty() {
            return Err(RunqError::bad_input(
                "scheduler.binary is empty: name a sched_ext scheduler, e.g. scx_bpfland",
            ));
        }
        if self.attach_timeout.is_zero() {
            return Err(RunqError::bad_input(
                "scheduler.attach_timeout must be more than 0s, e.g. \"60s\"",
            ));
        }
        Ok(())
    }

    /// The executable to start (see [`find_binary`]).
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        find_binary(&self.binary)
    }
}

/// Directories searched for a scheduler given by name, in order: PATH,
/// `~/.cargo/bin`, runq's scheduler cache.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    if let Ok(dir) = crate::cache::schedulers_dir() {
        dirs.push(dir.join("bin"));
    }
    dirs
}

/// Finds a scheduler's executable: a name containing `/` is a path; any
/// other name is looked up in [`search_dirs`]. Not found, or not an
/// executable file: bad input naming where runq looked and how to install.
pub fn find_binary(binary: &str) -> anyhow::Result<PathBuf> {
    find_program("--scheduler", binary)
}

/// [`find_binary`] for any program; `flag` names the option in errors.
pub fn find_program(flag: &str, binary: &str) -> anyhow::Result<PathBuf> {
    if binary.contains('/') {
        let path = PathBuf::from(binary);
        return match executable(&path) {
            Ok(()) => Ok(path),
            Err(why) => Err(RunqError::bad_input(format!(
                "{flag} {binary}: {why}; give the path of an executable"
            ))),
        };
    }
    let dirs = search_dirs();
    for dir in &dirs {
        let candidate = dir.join(binary);
        if executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(RunqError::bad_input(format!(
        "{flag} {binary}: no executable of that name on PATH, in ~/.cargo/bin or in runq's \
         scheduler cache ({}); install it with `scripts/setup-scx {binary}` or give its path",
        dirs.last().map_or_else(
            || "<cache>/schedulers/bin".into(),
            |d| d.display().to_string()
        )
    )))
}

/// Ok when `path` is a regular file with an execute bit.
fn executable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) => Err(format!("cannot read it ({e})")),
        Ok(meta) if !meta.is_file() => Err("not a regular file".into()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            Err("not executable (no x permission)".into())
        }
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_form_has_defaults_and_rejects_unknown_fields() {
        let spec: SchedulerSpec = toml::from_str("binary = \"scx_bpfland\"").unwrap();
        assert_eq!(spec, SchedulerSpec::new("scx_bpfland"));
        let spec: SchedulerSpec = toml::from_str(
            "binary = \"/opt/scx_x\"\nargs = [\"-s\", \"5000\"]\nattach_timeout = \"5s\"\nstop_timeout = \"500ms\"",
        )
        .unwrap();
        assert_eq!(spec.args, ["-s", "5000"]);
        assert_eq!(spec.attach_timeout, Duration::from_secs(5));
        assert_eq!(spec.stop_timeout, Duration::from_millis(500));
        assert_eq!(spec.file_name(), "scx_x");
        assert!(toml::from_str::<SchedulerSpec>("binary = \"x\"\nflags = 1").is_err());
    }

    #[test]
    fn lookup_rejects_missing_and_non_executable_files() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("not_exec");
        std::fs::write(&plain, "x").unwrap();
        for bad in [
            plain.to_str().unwrap(),
            "/nonexistent/scx_x",
            "scx_no_such_scheduler",
        ] {
            let err = find_binary(bad).unwrap_err();
            assert_eq!(
                crate::error::exit_code_for(&err),
                crate::error::EXIT_BAD_INPUT
            );
            assert!(format!("{err:#}").contains("--scheduler"), "{err:#}");
        }
        assert_eq!(
            find_binary("/bin/true").unwrap(),
            PathBuf::from("/bin/true")
        );
        assert!(find_binary("true").unwrap().ends_with("true"));
    }
}
