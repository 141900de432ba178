//! The kernel cache: `kernels/<release>/` directories holding the kernel's
//! files and `runq-kernel.json`, which records where they came from and
//! each file's SHA-256. Entries appear by renaming a finished temporary
//! directory into place, so a reader sees a whole entry or none.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::error::RunqError;

/// The metadata file inside an entry.
pub const METADATA_FILE: &str = "runq-kernel.json";
/// Version of [`KernelMetadata`]'s layout.
pub const METADATA_FORMAT: u32 = 1;
/// Name prefix of temporary directories in the kernels directory (see
/// [`crate::scratch`]).
pub const TEMP_PREFIX: &str = ".tmp-kernel";

/// The compressed boot image.
pub const VMLINUZ: &str = "vmlinuz";
/// The uncompressed ELF kernel, booted directly when it has PVH.
pub const VMLINUX: &str = "vmlinux";
/// The kernel's build configuration.
pub const CONFIG: &str = "config";
/// The kernel's symbol table (absent when the package ships a placeholder).
pub const SYSTEM_MAP: &str = "System.map";

/// What `runq-kernel.json` holds (stable, versioned by `format`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KernelMetadata {
    /// [`METADATA_FORMAT`] when written.
    pub format: u32,
    /// `uname -r` of the kernel, also the entry's directory name.
    pub release: String,
    /// Where the kernel came from.
    pub origin: Origin,
    /// When it was fetched or built (RFC 3339, UTC).
    pub fetched_at: String,
    /// Capabilities read from the config and the ELF kernel.
    pub capabilities: Capabilities,
    /// The entry's files by name, with their SHA-256 and size.
    pub files: BTreeMap<String, FileRecord>,
}

/// Where a cached kernel came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    /// Debian packages.
    Debian {
        suite: String,
        flavour: String,
        mirror: String,
        /// The package version, e.g. `7.2.13-1`.
        version: String,
        /// The kernel ABI, e.g. `7.2.13+deb14`.
        abi: String,
        /// The packages unpacked, with their versions.
        packages: Vec<String>,
    },
    /// Built from a source tree with `runq kernel build`.
    Build { source_dir: String },
}

/// The features runq cares about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    /// `CONFIG_SCHED_CLASS_EXT=y`.
    pub sched_ext: bool,
    /// `CONFIG_DEBUG_INFO_BTF=y`.
    pub btf: bool,
    /// The ELF kernel has the PVH entry note (or, without one at hand,
    /// `CONFIG_PVH=y`).
    pub pvh: bool,
}

impl Capabilities {
    /// Reads `sched_ext`, `btf` and `pvh` from a kernel config's text.
    pub fn from_config(config: &str) -> Capabilities {
        let enabled = |name: &str| {
            config
                .lines()
                .any(|line| line.trim() == format!("{name}=y"))
        };
        Capabilities {
            sched_ext: enabled("CONFIG_SCHED_CLASS_EXT"),
            btf: enabled("CONFIG_DEBUG_INFO_BTF"),
            pvh: enabled("CONFIG_PVH"),
        }
    }
}

/// One file of an entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileRecord {
    pub sha256: String,
    pub size: u64,
}

impl FileRecord {
    /// Hashes the file at `path`.
    pub fn of(path: &Path) -> anyhow::Result<FileRecord> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(FileRecord {
            sha256: sha256_hex(&data),
            size: data.len() as u64,
        })
    }
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A cached kernel: its directory and metadata.
#[derive(Debug, Clone)]
pub struct CachedKernel {
    pub dir: PathBuf,
    pub metadata: KernelMetadata,
}

impl CachedKernel {
    /// The path of one of the entry's files.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether the entry recorded a file by that name.
    pub fn has(&self, name: &str) -> bool {
        self.metadata.files.contains_key(name)
    }

    /// The image qemu should load: `vmlinux` when the kernel has PVH,
    /// else `vmlinuz`.
    pub fn boot_file(&self) -> &'static str {
        if self.metadata.capabilities.pvh && self.has(VMLINUX) {
            VMLINUX
        } else {
            VMLINUZ
        }
    }

    /// Checks the named files against their recorded SHA-256; a mismatch
    /// or a missing file is an environment error naming the fix.
    pub fn verify(&self, names: &[&str]) -> anyhow::Result<()> {
        for name in names {
            let Some(record) = self.metadata.files.get(*name) else {
                continue;
            };
            let path = self.file(name);
            let problem = match FileRecord::of(&path) {
                Ok(found) if found.sha256 == record.sha256 => continue,
                Ok(found) => format!(
                    "SHA-256 is {} but {} was recorded",
                    &found.sha256[..16],
                    &record.sha256[..16.min(record.sha256.len())]
                ),
                Err(e) => format!("{e:#}"),
            };
            return Err(RunqError::environment(format!(
                "cached kernel {} is corrupt: {}: {problem}. Remove it with `rm -r {}` and \
                 fetch again with `{}`",
                self.metadata.release,
                path.display(),
                self.dir.display(),
                self.refetch_command()
            )));
        }
        Ok(())
    }

    /// The command that fetches this kernel's kind again.
    pub fn refetch_command(&self) -> String {
        match &self.metadata.origin {
            Origin::Debian { suite, flavour, .. } => {
                format!("runq kernel fetch --suite {suite} --flavour {flavour}")
            }
            Origin::Build { source_dir } => format!("runq kernel build {source_dir}"),
        }
    }
}

/// Reads the entry in `dir`; `None` when it has no readable metadata.
pub fn load(dir: &Path) -> Option<CachedKernel> {
    let text = std::fs::read_to_string(dir.join(METADATA_FILE)).ok()?;
    let metadata: KernelMetadata = serde_json::from_str(&text).ok()?;
    (metadata.format == METADATA_FORMAT).then(|| CachedKernel {
        dir: dir.to_path_buf(),
        metadata,
    })
}

/// Every entry of the kernels directory `root`, newest release first.
/// Temporary and unreadable directories are skipped.
pub fn entries(root: &Path) -> Vec<CachedKernel> {
    let Ok(read) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<CachedKernel> = read
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| load(&e.path()))
        .collect();
    found.sort_by(|a, b| {
        crate::vm::kernel::compare_versions(&b.metadata.release, &a.metadata.release)
    });
    found
}

/// Writes `metadata` into the finished directory `staged` and renames it
/// to `root/<release>`. Returns false (and leaves `staged` for its owner
/// to remove) when another run installed the same release first.
pub fn install(root: &Path, staged: &Path, metadata: &KernelMetadata) -> anyhow::Result<bool> {
    let json = serde_json::to_vec_pretty(metadata)?;
    std::fs::write(staged.join(METADATA_FILE), json)
        .with_context(|| format!("writing {}", staged.join(METADATA_FILE).display()))?;
    let target = root.join(&metadata.release);
    match std::fs::rename(staged, &target) {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST))
                && target.is_dir() =>
        {
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("renaming into {}", target.display())),
    }
}

/// The current time in RFC 3339 (UTC, whole seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(release: &str, config: &FileRecord) -> KernelMetadata {
        KernelMetadata {
            format: METADATA_FORMAT,
            release: release.into(),
            origin: Origin::Debian {
                suite: "sid".into(),
                flavour: "amd64".into(),
                mirror: "http://deb.debian.org/debian".into(),
                version: "1".into(),
                abi: "1".into(),
                packages: vec![],
            },
            fetched_at: now_rfc3339(),
            capabilities: Capabilities::from_config(
                "CONFIG_SCHED_CLASS_EXT=y\n# CONFIG_PVH is not set\n",
            ),
            files: [(CONFIG.to_string(), config.clone())].into(),
        }
    }

    #[test]
    fn capabilities_come_from_the_config() {
        let caps = Capabilities::from_config(
            "CONFIG_SCHED_CLASS_EXT=y\nCONFIG_DEBUG_INFO_BTF=y\n# CONFIG_PVH is not set\n",
        );
        assert!(caps.sched_ext && caps.btf && !caps.pvh);
    }

    #[test]
    fn installed_entries_list_newest_first_and_corruption_is_found() {
        let root = tempfile::tempdir().unwrap();
        for release in ["6.9.0-1-amd64", "6.10.0-1-amd64"] {
            let staged = crate::scratch::dir_in(root.path(), TEMP_PREFIX).unwrap();
            std::fs::write(staged.path().join(CONFIG), "CONFIG_SCHED_CLASS_EXT=y\n").unwrap();
            let record = FileRecord::of(&staged.path().join(CONFIG)).unwrap();
            let staged = staged.keep();
            assert!(install(root.path(), &staged, &metadata(release, &record)).unwrap());
        }
        let found = entries(root.path());
        let releases: Vec<_> = found.iter().map(|k| k.metadata.release.as_str()).collect();
        assert_eq!(releases, ["6.10.0-1-amd64", "6.9.0-1-amd64"]);
        assert!(found[0].metadata.capabilities.sched_ext);
        found[0].verify(&[CONFIG]).unwrap();
        std::fs::write(found[0].file(CONFIG), "CONFIG_SCHED_CLASS_EXT=n\n").unwrap();
        let err = found[0].verify(&[CONFIG]).unwrap_err();
        assert!(
            format!("{err}").contains("runq kernel fetch --suite sid"),
            "{err}"
        );
    }
}
