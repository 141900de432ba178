//! Output files: every path a subcommand writes (JSON reports, lcov, HTML,
//! TOML exports, files copied back from a VM) goes through this module so
//! that all of them behave the same way.
//!
//! - A regular file (or a path that does not exist yet) is replaced
//!   atomically: the bytes go to a temporary file in the same directory,
//!   which is then renamed over it, so a reader never sees half a file.
//! - A symlink is followed: the file it points to is replaced, the link
//!   stays.
//! - Anything else that exists (a character device such as `/dev/null` or
//!   `/dev/stdout`, a FIFO, a socket) is written into, never replaced:
//!   renaming over `/dev/null` as root would destroy it for everyone.
//! - Write errors are reported: a full disk (ENOSPC, EDQUOT) is an
//!   environment error (exit 3) naming the path.
//!
//! [`check_output_path`] is the up-front half: it rejects a path whose
//! directory is missing or that names a directory, before anything runs
//! (exit 2).

use crate::error::RunqError;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Rejects an output path that cannot be written, before any work starts.
/// `flag` names the option in the message (e.g. `--json`).
pub fn check_output_path(flag: &str, path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Err(RunqError::bad_input(format!(
            "{flag} {}: is a directory; give a file path such as {}/out",
            path.display(),
            path.display()
        )));
    }
    let target = resolve_target(path);
    let dir = parent_of(&target);
    if !dir.is_dir() {
        return Err(RunqError::bad_input(format!(
            "{flag} {}: directory {} does not exist; create it or choose another path",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Writes `bytes` to `path` as the module header describes.
pub fn write_output(flag: &str, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let result = match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => write_into(path, bytes),
        _ => replace_atomically(&resolve_target(path), bytes),
    };
    result.map_err(|e| describe_write_error(flag, path, e))
}

/// Writes into an existing non-regular file (device, FIFO) without
/// creating or truncating anything.
fn write_into(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.write_all(bytes)?;
    file.flush()
}

/// Writes a temporary file beside `target` and renames it over `target`.
/// An existing file keeps its permission bits; a new one gets 0644 (a
/// report is meant to be shared, temporary files start private).
fn replace_atomically(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mode = std::fs::metadata(target)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let mut tmp = tempfile::Builder::new()
        .prefix(".runq-out-")
        .tempfile_in(parent_of(target))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(target).map_err(|e| e.error)?;
    Ok(())
}

/// The file a write to `path` should land in: symlinks are followed, also
/// a dangling one (its target is created). Relative link targets are taken
/// from the link's directory.
fn resolve_target(path: &Path) -> PathBuf {
    let mut current = path.to_path_buf();
    // A bounded walk: a link loop ends with the last name, and the write
    // then fails with the kernel's ELOOP message.
    for _ in 0..40 {
        match std::fs::read_link(&current) {
            Ok(next) if next.is_absolute() => current = next,
            Ok(next) => current = parent_of(&current).join(next),
            Err(_) => break,
        }
    }
    current
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn describe_write_error(flag: &str, path: &Path, err: std::io::Error) -> anyhow::Error {
    let full = matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    if full {
        return RunqError::environment(format!(
            "{flag} {}: the disk is full ({err}); free space or choose another path",
            path.display()
        ));
    }
    anyhow::Error::new(err).context(format!("writing {flag} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn a_new_file_is_created_with_shareable_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_output("--json", &path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn an_existing_file_is_replaced_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, b"old and longer").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_output("--json", &path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_symlink_is_followed_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("link.json");
        std::fs::write(&real, b"old").unwrap();
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write_output("--json", &link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn a_dangling_symlink_creates_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(dir.path().join("made.json"), &link).unwrap();
        write_output("--json", &link, b"x").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(dir.path().join("made.json")).unwrap(), b"x");
    }

    #[test]
    fn a_fifo_is_written_into_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_output("--json", &fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "the FIFO is still a FIFO");
    }

    #[test]
    fn dev_null_stays_a_device() {
        write_output("--json", Path::new("/dev/null"), b"discarded").unwrap();
        let kind = std::fs::symlink_metadata("/dev/null").unwrap().file_type();
        assert!(kind.is_char_device());
    }

    #[test]
    fn a_full_device_is_an_environment_error_naming_the_path() {
        let err = write_output("--json", Path::new("/dev/full"), b"x").unwrap_err();
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::EXIT_ENVIRONMENT
        );
        let text = format!("{err:#}");
        assert!(
            text.contains("--json /dev/full: the disk is full"),
            "{text}"
        );
    }

    #[test]
    fn missing_directories_and_directories_are_bad_input() {
        let err = check_output_path("--lcov", Path::new("/nonexistent/x.info")).unwrap_err();
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::EXIT_BAD_INPUT
        );
        assert!(format!("{err}").contains("directory /nonexistent does not exist"));
        let err = check_output_path("--json", Path::new("/tmp")).unwrap_err();
        assert!(format!("{err}").contains("is a directory"));
        check_output_path("--json", Path::new("/dev/null")).unwrap();
    }
}
