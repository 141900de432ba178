//! Kernel discovery: `--kernel PATH`, then `$RUNQ_KERNEL`, then
//! `/boot/vmlinuz-*` newest version first.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::error::RunqError;

/// Environment variable naming the kernel image to boot.
pub const KERNEL_ENV: &str = "RUNQ_KERNEL";

/// Where distribution kernels live.
const BOOT_DIR: &str = "/boot";

/// Finds the kernel image to boot. An explicit path (from `--kernel`) or
/// `$RUNQ_KERNEL` must name a readable file; otherwise the newest
/// `/boot/vmlinuz-*` is used. The error lists everything that was tried.
pub fn discover(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    discover_in(
        explicit,
        std::env::var_os(KERNEL_ENV).map(PathBuf::from),
        Path::new(BOOT_DIR),
    )
}

/// [`discover`] with the environment value and boot directory injected.
pub fn discover_in(
    explicit: Option<&Path>,
    from_env: Option<PathBuf>,
    boot_dir: &Path,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return check_image(path).map_err(|why| {
            RunqError::bad_input(format!(
                "--kernel {}: {why}; pass a bzImage such as /boot/vmlinuz-<version>",
                path.display()
            ))
        });
    }
    if let Some(path) = from_env.filter(|p| !p.as_os_str().is_empty()) {
        return check_image(&path).map_err(|why| {
            RunqError::bad_input(format!(
                "{KERNEL_ENV}={}: {why}; point it at a bzImage or unset it",
                path.display()
            ))
        });
    }
    let mut tried = vec![
        format!("--kernel (not given)"),
        format!("{KERNEL_ENV} (unset)"),
    ];
    let mut candidates = boot_candidates(boot_dir);
    if candidates.is_empty() {
        tried.push(format!("{}/vmlinuz-* (none found)", boot_dir.display()));
    }
    candidates.sort_by(|a, b| compare_versions(file_version(b), file_version(a)));
    for candidate in &candidates {
        match check_image(candidate) {
            Ok(path) => return Ok(path),
            Err(why) => tried.push(format!("{} ({why})", candidate.display())),
        }
    }
    Err(RunqError::environment(format!(
        "no kernel to boot; tried: {}. Install one with `apt-get install linux-image-amd64`, \
         or pass --kernel PATH / set {KERNEL_ENV}",
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

/// Checks that `path` is a readable x86 boot image (bzImage "HdrS" magic)
/// or an ELF kernel; returns it unchanged.
fn check_image(path: &Path) -> Result<PathBuf, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut head = vec![0u8; 0x210];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(format!("cannot read: {e}")),
        }
    }
    let is_bzimage = filled >= 0x206 && &head[0x202..0x206] == b"HdrS";
    let is_elf = filled >= 4 && &head[..4] == b"\x7fELF";
    if is_bzimage || is_elf {
        Ok(path.to_path_buf())
    } else {
        Err("not a Linux kernel image (no bzImage header, not ELF)".into())
    }
}

/// The image qemu should load for `kernel`: for a bzImage whose payload
/// is a PVH-capable ELF kernel, that ELF file (extracted once and cached by
/// the bzImage's SHA-256); otherwise `kernel` itself.
///
/// Loading the ELF kernel directly (qemu's PVH entry) skips the kernel's
/// self-decompression, which under TCG costs seconds per boot (4 s of the
/// 8 s a Debian 6.1 bzImage took to reach init here).
pub fn boot_image(kernel: &Path, cache_dir: &Path) -> PathBuf {
    match extract_pvh_kernel(kernel, cache_dir) {
        Ok(Some(path)) => path,
        Ok(None) => kernel.to_path_buf(),
        Err(err) => {
            tracing::warn!("booting {} as a bzImage: {err:#}", kernel.display());
            kernel.to_path_buf()
        }
    }
}

fn extract_pvh_kernel(kernel: &Path, cache_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    use anyhow::Context;
    use sha2::Digest;
    use std::io::Write;

    let data = std::fs::read(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    if data.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let digest = sha2::Sha256::digest(&data);
    let hash: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    let cached = cache_dir.join(format!("vmlinux-{hash}.elf"));
    if cached.is_file() {
        return Ok(Some(cached));
    }
    let payload = bzimage_payload(&data)?;
    let elf = decompress(payload)?;
    if !has_pvh_note(&elf) {
        return Ok(None);
    }
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    crate::scratch::reap(cache_dir, ".tmp-vmlinux");
    let mut temp = crate::scratch::file_in(cache_dir, ".tmp-vmlinux")?;
    temp.write_all(&elf)?;
    temp.persist(&cached)
        .map_err(|e| anyhow::anyhow!("saving {}: {}", cached.display(), e.error))?;
    trim_cached_kernels(cache_dir, &cached);
    Ok(Some(cached))
}

/// The compressed kernel inside a bzImage (boot protocol 2.08+ fields
/// `payload_offset` and `payload_length`).
fn bzimage_payload(data: &[u8]) -> anyhow::Result<&[u8]> {
    let read_u32 = |at: usize| -> Option<u32> {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if data.get(0x202..0x206) != Some(b"HdrS") {
        anyhow::bail!("no bzImage header");
    }
    let version = data
        .get(0x206..0x208)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    if version < 0x208 {
        anyhow::bail!("boot protocol {version:#x} has no payload fields");
    }
    let setup_sectors = match data[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sectors + 1) * 512;
    let offset = read_u32(0x248).unwrap_or(0) as usize;
    let length = read_u32(0x24c).unwrap_or(0) as usize;
    data.get(start + offset..start + offset + length)
        .ok_or_else(|| anyhow::anyhow!("payload lies outside the file"))
}

/// Decompresses a kernel payload: gzip in-process, xz and zstd with the
/// system tools (xz-utils is part of every Debian system).
fn decompress(payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    if payload.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(payload).read_to_end(&mut out)?;
        return Ok(out);
    }
    let tool: &[&str] = if payload.starts_with(b"\xfd7zXZ\x00") {
        &["xz", "-dc", "--single-stream"]
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        &["zstd", "-dc"]
    } else {
        anyhow::bail!("payload compression not handled");
    };
    run_filter(tool, payload)
}

fn run_filter(tool: &[&str], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", tool[0]))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Feed stdin from a scoped thread so a full stdout pipe cannot deadlock.
    let output = std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = stdin.write_all(input);
        });
        child.wait_with_output()
    })?;
    if !output.status.success() {
        anyhow::bail!("{} failed ({})", tool[0], output.status);
    }
    Ok(output.stdout)
}

/// Whether an ELF kernel has the Xen PVH entry note
/// (XEN_ELFNOTE_PHYS32_ENTRY), which qemu needs to boot it directly.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    use object::read::elf::{FileHeader, ProgramHeader};
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(elf) else {
        return false;
    };
    let Ok(endian) = header.endian() else {
        return false;
    };
    let Ok(segments) = header.program_headers(endian, elf) else {
        return false;
    };
    for segment in segments {
        let Ok(Some(mut notes)) = segment.notes(endian, elf) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                return true;
            }
        }
    }
    false
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

    #[test]
    fn discovery_prefers_newest_and_lists_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = vec![0u8; 0x300];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        for name in ["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64"] {
            std::fs::write(dir.path().join(name), &image).unwrap();
        }
        std::fs::write(dir.path().join("vmlinuz-7.0-broken"), b"junk").unwrap();
        let found = discover_in(None, None, dir.path()).unwrap();
        assert!(found.ends_with("vmlinuz-6.1.0-10-amd64"), "{found:?}");

        let empty = tempfile::tempdir().unwrap();
        let err = discover_in(None, None, empty.path()).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("apt-get install linux-image-amd64"), "{text}");
        assert!(text.contains("RUNQ_KERNEL"), "{text}");
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::EXIT_ENVIRONMENT
        );

        let err = discover_in(
            Some(&dir.path().join("vmlinuz-7.0-broken")),
            None,
            dir.path(),
        )
        .unwrap_err();
        assert_eq!(
            crate::error::exit_code_for(&err),
            crate::error::EXIT_BAD_INPUT
        );
    }
}
