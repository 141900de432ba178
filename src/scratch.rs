//! Temporary files and directories named after the process that made them
//! (`<prefix>-<pid>-<random>`), and reaping those whose process is gone.
//!
//! A run that is killed (SIGKILL, OOM, power loss) cannot remove its
//! temporary files; the next run that uses the same place removes those
//! whose pid is dead, the way stale cgroup roots are removed. A zombie
//! counts as dead: it will never clean up after itself.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A temporary directory `<parent>/<prefix>-<pid>-<random>`, removed on drop.
pub fn dir_in(parent: &Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&own_prefix(prefix))
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))
}

/// A temporary file `<parent>/<prefix>-<pid>-<random>`, removed on drop
/// unless persisted.
pub fn file_in(parent: &Path, prefix: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&own_prefix(prefix))
        .tempfile_in(parent)
        .with_context(|| format!("creating a temporary file in {}", parent.display()))
}

fn own_prefix(prefix: &str) -> String {
    format!("{prefix}-{}-", std::process::id())
}

/// Removes the entries of `parent` named `<prefix>-<pid>-…` whose pid is
/// dead (or a zombie). Returns what was removed; failures are logged and
/// skipped, since another run may be removing the same entry.
pub fn reap(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| owner_pid(n, prefix)) else {
            continue;
        };
        if pid == std::process::id() || !pid_dead(pid) {
            continue;
        }
        let path = entry.path();
        let result = match entry.file_type() {
            Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!("removed {} left by dead pid {pid}", path.display());
                removed.push(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove stale {}: {e}", path.display()),
        }
    }
    removed
}

/// The pid in `<prefix>-<pid>-<rest>`, if `name` has that shape.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// True when no live process has this pid: none at all, or a zombie
/// ([`crate::process::is_alive`]).
pub fn pid_dead(pid: u32) -> bool {
    i32::try_from(pid).map_or(true, |pid| !crate::process::is_alive(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(owner_pid("runq-vm-123-abc", "runq-vm"), Some(123));
        assert_eq!(owner_pid("runq-vm-abc", "runq-vm"), None);
        assert_eq!(owner_pid("runq-vmx-123-abc", "runq-vm"), None);
        assert_eq!(owner_pid("other-123-abc", "runq-vm"), None);
    }

    #[test]
    fn dead_and_zombie_pids_are_reaped_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let mine = dir_in(parent.path(), "runq-test").unwrap();
        // A child that exited but is not yet reaped is a zombie.
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let zombie_pid = zombie.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !pid_dead(zombie_pid) {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::yield_now();
        }
        let stale = parent.path().join(format!("runq-test-{zombie_pid}-x"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join("f"), b"x").unwrap();
        let removed = reap(parent.path(), "runq-test");
        assert_eq!(removed, vec![stale.clone()]);
        assert!(mine.path().is_dir());
        zombie.wait().unwrap();
        assert!(pid_dead(zombie_pid));
    }
}
