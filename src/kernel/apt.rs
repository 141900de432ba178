//! A private apt configuration for one Debian suite: its own sources list,
//! package lists, cache and state under `kernels/.apt/<suite>/`, so
//! fetching kernels never reads or changes the system's sources, pinning,
//! package state or lists. The system's apt.conf settings (proxies, for
//! instance) still apply. Signatures are checked by apt against
//! `debian-archive-keyring`.
//!
//! The lists are kept between fetches, so a second `apt-get update` only
//! checks that the suite's `InRelease` is unchanged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::Context;

use crate::error::RunqError;

/// Debian's archive signing keys (package `debian-archive-keyring`).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// The default mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// How long a download of a kernel's packages may take.
const DOWNLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// apt tools run against one suite's private state.
pub struct PrivateApt {
    dir: PathBuf,
    suite: String,
    mirror: String,
}

/// One package's candidate stanza, as `apt-cache show` prints it.
#[derive(Debug, Clone, Default)]
pub struct Stanza {
    pub package: String,
    pub version: String,
    pub depends: Vec<String>,
    pub size: u64,
}

impl PrivateApt {
    /// Sets up (or reuses) the private state for `suite` under `apt_root`.
    pub fn new(apt_root: &Path, suite: &str, mirror: &str) -> anyhow::Result<PrivateApt> {
        if suite.is_empty()
            || !suite
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(RunqError::bad_input(format!(
                "--suite {suite:?}: a Debian suite is a name like sid, trixie or bookworm-backports"
            )));
        }
        if !Path::new(KEYRING).is_file() {
            return Err(RunqError::environment(format!(
                "{KEYRING} is missing, so Debian's signatures cannot be checked; install it with \
                 `apt-get install debian-archive-keyring`"
            )));
        }
        let apt = PrivateApt {
            dir: apt_root.join(suite),
            suite: suite.to_string(),
            mirror: mirror.trim_end_matches('/').to_string(),
        };
        for sub in ["lists/partial", "cache/archives/partial", "state", "empty"] {
            let path = apt.dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        // Only the package index: no translations, no Contents or DEP-11
        // files that the system's configuration may enable.
        let line = format!(
            "deb [signed-by={KEYRING} arch=amd64 target=Packages] {} {} main\n",
            apt.mirror, apt.suite
        );
        std::fs::write(apt.dir.join("sources.list"), line)?;
        Ok(apt)
    }

    /// The mirror used.
    pub fn mirror(&self) -> &str {
        &self.mirror
    }

    fn command(&self, tool: &str) -> Command {
        let dir = |sub: &str| self.dir.join(sub).display().to_string();
        let mut command = Command::new(tool);
        command.arg("-q");
        let options = [
            format!("Dir::Etc::sourcelist={}", dir("sources.list")),
            format!("Dir::Etc::sourceparts={}", dir("empty")),
            "Dir::Etc::preferences=/dev/null".to_string(),
            format!("Dir::Etc::preferencesparts={}", dir("empty")),
            format!("Dir::State={}", dir("state")),
            format!("Dir::State::Lists={}", dir("lists")),
            "Dir::State::status=/dev/null".to_string(),
            format!("Dir::Cache={}", dir("cache")),
            "Acquire::Languages=none".to_string(),
        ];
        for option in options {
            command.arg("-o").arg(option);
        }
        if nix::unistd::geteuid().is_root() {
            // apt drops to `_apt` for downloads, which cannot enter a
            // private directory under /root; it would fall back with a
            // warning, so ask for that directly.
            command.arg("-o").arg("APT::Sandbox::User=root");
        }
        command
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn run(&self, mut command: Command, what: &str) -> anyhow::Result<Output> {
        command.output().map_err(|e| {
            RunqError::environment(format!(
                "cannot run apt ({e}) for {what}; runq fetches kernels with apt-get and \
                 dpkg, install them with `apt-get install apt dpkg`"
            ))
        })
    }

    /// Refreshes the suite's package list. An unknown suite is bad input;
    /// an unreachable mirror is an environment error unless an earlier
    /// list is there to use.
    pub fn update(&self) -> anyhow::Result<()> {
        let mut command = self.command("apt-get");
        command.arg("update");
        let output = self.run(command, "updating the package list")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("does not have a Release file") {
            return Err(RunqError::bad_input(format!(
                "--suite {}: {} has no such suite; use sid (the only Debian suite whose kernels \
                 have sched_ext today), trixie, or another suite Debian publishes",
                self.suite, self.mirror
            )));
        }
        let have_list = self.has_package_list();
        if !output.status.success() || !have_list {
            let detail = first_problem(&stderr);
            return Err(RunqError::environment(format!(
                "cannot update the package list of {} {}: {detail}. Check the network (or pass \
                 --mirror URL)",
                self.mirror, self.suite
            )));
        }
        if let Some(problem) = stderr.lines().find(|l| l.starts_with("W: Failed to fetch")) {
            eprintln!("runq: WARNING: using the package list fetched earlier: {problem}");
        }
        Ok(())
    }

    fn has_package_list(&self) -> bool {
        std::fs::read_dir(self.dir.join("lists"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
            .unwrap_or(false)
    }

    /// The candidate stanza of `package`, or `None` if the suite lacks it.
    pub fn show(&self, package: &str) -> anyhow::Result<Option<Stanza>> {
        let mut command = self.command("apt-cache");
        command.args(["show", "--no-all-versions", package]);
        let output = self.run(command, "reading the package list")?;
        if !output.status.success() {
            return Ok(None);
        }
        Ok(parse_stanza(&String::from_utf8_lossy(&output.stdout)))
    }

    /// Downloads `packages` (exact names) into `dir`, calling `progress`
    /// with the bytes on disk so far while apt works.
    pub fn download(
        &self,
        packages: &[String],
        dir: &Path,
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<()> {
        let mut command = self.command("apt-get");
        command.arg("download").args(packages).current_dir(dir);
        command.stdout(Stdio::null());
        let stderr_path = dir.join(".apt-stderr");
        command.stderr(std::fs::File::create(&stderr_path)?);
        let mut child = command.spawn().map_err(|e| {
            RunqError::environment(format!(
                "cannot run apt-get ({e}); install it with `apt-get install apt`"
            ))
        })?;
        let deadline = std::time::Instant::now() + DOWNLOAD_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunqError::environment(format!(
                    "downloading {} from {} took over {} minutes; check the network (or pass \
                     --mirror URL)",
                    packages.join(", "),
                    self.mirror,
                    DOWNLOAD_TIMEOUT.as_secs() / 60
                )));
            }
            progress(bytes_in(dir));
            // Progress display only: nothing waits on this interval.
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        progress(bytes_in(dir));
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let _ = std::fs::remove_file(&stderr_path);
        if !status.success() {
            return Err(RunqError::environment(format!(
                "downloading {} from {} failed: {}. Check the network (or pass --mirror URL)",
                packages.join(", "),
                self.mirror,
                first_problem(&stderr)
            )));
        }
        Ok(())
    }
}

/// The first error line apt printed, else its last line.
fn first_problem(stderr: &str) -> String {
    stderr
        .lines()
        .find(|l| l.starts_with("E:"))
        .or_else(|| stderr.lines().find(|l| l.starts_with("W:")))
        .or_else(|| stderr.lines().last())
        .unwrap_or("apt said nothing")
        .trim()
        .to_string()
}

/// Total size of the files in `dir` and its `partial/` subdirectory.
fn bytes_in(dir: &Path) -> u64 {
    let size_of = |d: &Path| -> u64 {
        std::fs::read_dir(d)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    size_of(dir) + size_of(&dir.join("partial"))
}

/// Parses the first stanza of `apt-cache show` output.
pub fn parse_stanza(text: &str) -> Option<Stanza> {
    let mut stanza = Stanza::default();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        match key {
            "Package" => stanza.package = value.trim().to_string(),
            "Version" => stanza.version = value.trim().to_string(),
            "Size" => stanza.size = value.trim().parse().unwrap_or(0),
            "Depends" | "Pre-Depends" => stanza.depends.extend(
                value
                    .split(',')
                    .flat_map(|alternatives| alternatives.split('|'))
                    .filter_map(|dep| dep.split_whitespace().next())
                    .map(str::to_string),
            ),
            _ => {}
        }
    }
    (!stanza.package.is_empty()).then_some(stanza)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_depends_are_package_names() {
        let text =
            "Package: linux-image-7.2.13+deb14-amd64\nSource: linux-signed-amd64 (7.2.13+1)\n\
Version: 7.2.13-1\nDepends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1)\n\
Size: 1892\n\nPackage: other\n";
        let stanza = parse_stanza(text).unwrap();
        assert_eq!(stanza.package, "linux-image-7.2.13+deb14-amd64");
        assert_eq!(stanza.version, "7.2.13-1");
        assert_eq!(stanza.size, 1892);
        assert!(stanza
            .depends
            .contains(&"linux-binary-7.2.13+deb14-amd64".to_string()));
        assert!(stanza.depends.contains(&"dracut".to_string()));
    }

    #[test]
    fn a_bad_suite_name_is_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let err = PrivateApt::new(dir.path(), "sid/../x", DEFAULT_MIRROR)
            .err()
            .unwrap();
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::EXIT_BAD_INPUT
        );
    }
}
