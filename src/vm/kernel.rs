//! Which kernel a VM boots, and what of it goes into the guest.
//!
//! `--kernel` (else `$RUNQ_KERNEL`) names a path, a cached release (see
//! `runq kernel list`), or the word `sched_ext` (the newest cached kernel
//! with sched_ext); without either, the newest `/boot/vmlinuz-*` boots.
//! A cached kernel's files are checked against their recorded SHA-256 on
//! every use. When the kernel has PVH, qemu loads the uncompressed ELF
//! kernel (`vmlinux`) directly, skipping the guest's self-decompression,
//! which under TCG costs seconds per boot. The kernel's config goes into
//! the guest as `/boot/config-<release>` (libbpf reads it there).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::error::RunqError;
use crate::kernel::image;
use crate::kernel::store::{self, CachedKernel, CONFIG};

/// Environment variable naming the kernel to boot.
pub const KERNEL_ENV: &str = "RUNQ_KERNEL";
/// The `--kernel` word for the newest cached kernel with sched_ext.
pub const SCHED_EXT_WORD: &str = "sched_ext";

/// Where distribution kernels live.
const BOOT_DIR: &str = "/boot";

/// The kernel a VM boots.
#[derive(Debug, Clone)]
pub struct BootKernel {
    /// What qemu loads with `-kernel`.
    pub image: PathBuf,
    /// `uname -r` of the kernel, when known.
    pub release: Option<String>,
    /// The kernel's config, installed in the guest as `/boot/config-<release>`.
    pub config: Option<PathBuf>,
    /// One line for humans: release, where it came from, how it boots.
    pub description: String,
}

/// Where kernels are looked for (injected by tests).
#[derive(Debug, Clone)]
pub struct Places {
    pub boot_dir: PathBuf,
    pub kernels_dir: PathBuf,
    /// Where ELF kernels extracted from path kernels are cached.
    pub extract_dir: PathBuf,
}

impl Places {
    /// The host's /boot and runq's cache.
    pub fn standard() -> anyhow::Result<Places> {
        Ok(Places {
            boot_dir: PathBuf::from(BOOT_DIR),
            kernels_dir: crate::cache::kernels_dir()?,
            extract_dir: crate::cache::root()?,
        })
    }
}

/// A kernel chosen, before its boot files are worked out.
#[derive(Debug, Clone)]
pub enum Choice {
    Cached(Box<CachedKernel>),
    Path(PathBuf),
}

/// Resolves `--kernel` (`explicit`), else `$RUNQ_KERNEL`, else /boot.
pub fn resolve(explicit: Option<&str>) -> anyhow::Result<BootKernel> {
    let places = Places::standard()?;
    let from_env = std::env::var(KERNEL_ENV).ok();
    let choice = choose(explicit, from_env.as_deref(), &places)?;
    boot_kernel(choice, &places)
}

/// Picks the kernel (see the module docs); errors name the flag or
/// variable and the fix.
pub fn choose(
    explicit: Option<&str>,
    from_env: Option<&str>,
    places: &Places,
) -> anyhow::Result<Choice> {
    if let Some(spec) = explicit {
        return choose_spec(spec, &format!("--kernel {spec}"), places);
    }
    if let Some(spec) = from_env.filter(|s| !s.is_empty()) {
        return choose_spec(spec, &format!("{KERNEL_ENV}={spec}"), places);
    }
    newest_boot_kernel(&places.boot_dir).map(Choice::Path)
}

fn choose_spec(spec: &str, what: &str, places: &Places) -> anyhow::Result<Choice> {
    if spec == SCHED_EXT_WORD {
        return store::entries(&places.kernels_dir)
            .into_iter()
            .find(|k| k.metadata.capabilities.sched_ext)
            .map(|k| Choice::Cached(Box::new(k)))
            .ok_or_else(|| {
                RunqError::environment(format!(
                    "{what}: no cached kernel has sched_ext (cache: {}); fetch one with \
                     `runq kernel fetch` (Debian sid's kernel has it)",
                    places.kernels_dir.display()
                ))
            });
    }
    let path = Path::new(spec);
    if spec.contains('/') || path.exists() {
        return match image::kind_of(path) {
            Ok(_) => Ok(Choice::Path(path.to_path_buf())),
            Err(why) => Err(RunqError::bad_input(format!(
                "{what}: {why}; pass a kernel image (a bzImage such as \
                 /boot/vmlinuz-<version>, or a vmlinux), a cached release or `{SCHED_EXT_WORD}`"
            ))),
        };
    }
    if let Some(cached) = store::load(&places.kernels_dir.join(spec)) {
        return Ok(Choice::Cached(Box::new(cached)));
    }
    let cached: Vec<String> = store::entries(&places.kernels_dir)
        .into_iter()
        .map(|k| k.metadata.release)
        .collect();
    Err(RunqError::bad_input(format!(
        "{what}: no such file and no cached kernel of that release (cached: {}); fetch one \
         with `runq kernel fetch` and see `runq kernel list`, or pass a path",
        if cached.is_empty() {
            "none".to_string()
        } else {
            cached.join(", ")
        }
    )))
}

/// Works out what qemu loads and which config goes into the guest.
pub fn boot_kernel(choice: Choice, places: &Places) -> anyhow::Result<BootKernel> {
    match choice {
        Choice::Cached(cached) => {
            let boot_file = cached.boot_file();
            cached.verify(&[boot_file, CONFIG])?;
            let release = cached.metadata.release.clone();
            Ok(BootKernel {
                image: cached.file(boot_file),
                config: cached.has(CONFIG).then(|| cached.file(CONFIG)),
                description: format!("{release} (cache, {boot_file})"),
                release: Some(release),
            })
        }
        Choice::Path(path) => {
            use anyhow::Context;
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let release = image::release_of(&data);
            let config = release.as_deref().and_then(|r| config_beside(&path, r));
            let image = boot_image(&path, &data, &places.extract_dir);
            let how = if image == path {
                "as given"
            } else {
                "its ELF kernel, PVH"
            };
            Ok(BootKernel {
                description: format!(
                    "{} ({}, {how})",
                    release.as_deref().unwrap_or("unknown release"),
                    path.display()
                ),
                image,
                release,
                config,
            })
        }
    }
}

/// The config of a kernel image at `path`: `config-<release>` beside it
/// (the /boot layout) or `config` (a modules directory or cache entry).
fn config_beside(path: &Path, release: &str) -> Option<PathBuf> {
    let dir = path.parent()?;
    [dir.join(format!("config-{release}")), dir.join(CONFIG)]
        .into_iter()
        .find(|p| p.is_file())
}

/// The newest valid `/boot/vmlinuz-*`; the error lists what was tried.
fn newest_boot_kernel(boot_dir: &Path) -> anyhow::Result<PathBuf> {
    let mut tried = vec![
        "--kernel (not given)".to_string(),
        format!("{KERNEL_ENV} (unset)"),
    ];
    let mut candidates = boot_candidates(boot_dir);
    if candidates.is_empty() {
        tried.push(format!("{}/vmlinuz-* (none found)", boot_dir.display()));
    }
    candidates.sort_by(|a, b| compare_versions(file_version(b), file_version(a)));
    for candidate in &candidates {
        match image::kind_of(candidate) {
            Ok(_) => return Ok(candidate.clone()),
            Err(why) => tried.push(format!("{} ({why})", candidate.display())),
        }
    }
    Err(RunqError::environment(format!(
        "no kernel to boot; tried: {}. Fetch one with `runq kernel fetch`, install one with \
         `apt-get install linux-image-amd64`, or pass --kernel PATH / set {KERNEL_ENV}",
        tried.join(", ")
    )))
}

fn boot_candidates(boot_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(boot_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect()
}

fn file_version(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or("")
}

/// Compares version strings the way `sort -V` does for kernel names:
/// runs of digits numerically, everything else bytewise.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (trim_zeros(&a[..da]), trim_zeros(&b[..db]));
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

/// The image qemu should load for the kernel image `data` read from
/// `kernel`: for a bzImage whose payload is a PVH-capable ELF kernel, that
/// ELF file (extracted once and cached by the bzImage's SHA-256);
/// otherwise `kernel` itself.
fn boot_image(kernel: &Path, data: &[u8], cache_dir: &Path) -> PathBuf {
    match extract_pvh_kernel(data, cache_dir) {
        Ok(Some(path)) => path,
        Ok(None) => kernel.to_path_buf(),
        Err(err) => {
            tracing::warn!("booting {} as a bzImage: {err:#}", kernel.display());
            kernel.to_path_buf()
        }
    }
}

/// Name prefix of ELF kernels being written into the cache.
const EXTRACT_TEMP_PREFIX: &str = ".tmp-vmlinux";

fn extract_pvh_kernel(data: &[u8], cache_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    use anyhow::Context;
    use std::io::Write;
    if image::kind_of_bytes(data) != Some(image::ImageKind::BzImage) {
        return Ok(None);
    }
    let hash = store::sha256_hex(data);
    let cached = cache_dir.join(format!("vmlinux-{}.elf", &hash[..24]));
    if cached.is_file() {
        return Ok(Some(cached));
    }
    let elf = image::vmlinux_of(data)?;
    if !image::has_pvh_note(&elf) {
        return Ok(None);
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    crate::scratch::reap(cache_dir, EXTRACT_TEMP_PREFIX);
    let mut temp = crate::scratch::file_in(cache_dir, EXTRACT_TEMP_PREFIX)?;
    temp.write_all(&elf)?;
    temp.persist(&cached)
        .map_err(|e| anyhow::anyhow!("saving {}: {}", cached.display(), e.error))?;
    trim_cached_kernels(cache_dir, &cached);
    Ok(Some(cached))
}

/// Keeps the two newest extracted kernels besides `keep`.
fn trim_cached_kernels(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut kernels: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("vmlinux-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    kernels.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in kernels.into_iter().skip(3) {
        if path != keep {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        assert_eq!(
            compare_versions("6.1.0-10-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(compare_versions("6.10.0", "6.9.12"), Ordering::Greater);
        assert_eq!(compare_versions("5.10", "5.10"), Ordering::Equal);
        assert_eq!(compare_versions("5.10", "5.10.1"), Ordering::Less);
    }

    fn places(boot: &Path, kernels: &Path) -> Places {
        Places {
            boot_dir: boot.to_path_buf(),
            kernels_dir: kernels.to_path_buf(),
            extract_dir: kernels.to_path_buf(),
        }
    }

    #[test]
    fn discovery_prefers_newest_and_lists_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        let kernels = tempfile::tempdir().unwrap();
        let places = places(dir.path(), kernels.path());
        let mut image = vec![0u8; 0x300];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        for name in ["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64"] {
            std::fs::write(dir.path().join(name), &image).unwrap();
        }
        std::fs::write(dir.path().join("vmlinuz-7.0-broken"), b"junk").unwrap();
        let Choice::Path(found) = choose(None, None, &places).unwrap() else {
            panic!("expected a /boot kernel");
        };
        assert!(found.ends_with("vmlinuz-6.1.0-10-amd64"), "{found:?}");

        let empty = tempfile::tempdir().unwrap();
        let err = choose(
            None,
            None,
            &super::tests::places(empty.path(), kernels.path()),
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("runq kernel fetch"), "{text}");
        assert!(text.contains("RUNQ_KERNEL"), "{text}");
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::EXIT_ENVIRONMENT
        );

        let broken = dir.path().join("vmlinuz-7.0-broken");
        let err = choose(broken.to_str(), None, &places).unwrap_err();
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::EXIT_BAD_INPUT
        );
    }

    #[test]
    fn an_unknown_release_is_bad_input_naming_fetch() {
        let boot = tempfile::tempdir().unwrap();
        let kernels = tempfile::tempdir().unwrap();
        let places = places(boot.path(), kernels.path());
        let err = choose(Some("no-such-release"), None, &places).unwrap_err();
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::EXIT_BAD_INPUT
        );
        assert!(format!("{err}").contains("runq kernel fetch"), "{err}");
        let err = choose(None, Some("sched_ext"), &places).unwrap_err();
        assert!(format!("{err}").contains("RUNQ_KERNEL=sched_ext"), "{err}");
        assert!(format!("{err}").contains("runq kernel fetch"), "{err}");
    }
}
