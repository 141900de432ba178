//! The guest's initramfs: gzip-compressed cpio (newc) archives.
//!
//! The boot image is two archives back to back, which the kernel unpacks
//! in order: a base (runq as `/init`, its shared libraries, busybox and its
//! applet links, the empty mount points) that only changes when those
//! binaries change, and a small per-run overlay (the command to run, the
//! files given with `--include`, the working directory). The base is
//! cached in runq's cache root ([`crate::cache::root`]) by the SHA-256
//! of everything it contains, so repeated boots only write the overlay.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::write::GzEncoder;
use flate2::Compression;
use object::read::elf::{Dyn as _, ProgramHeader as _};
use sha2::{Digest, Sha256};

use crate::error::RunqError;

/// Bumped whenever the layout of the base image changes, so old cached
/// images are not reused.
const BASE_FORMAT: &str = "runq-initramfs-v1";

/// Name prefix of images being written into the cache (see [`crate::scratch`]).
const TEMP_PREFIX: &str = ".tmp-initramfs";
/// Name prefix of the temporary directory runq is stripped in.
const STRIP_PREFIX: &str = "runq-strip";

/// How many base images the cache keeps (newest by modification time).
const CACHE_KEEP: usize = 4;

/// Directories searched for shared libraries, in the order the Debian
/// dynamic loader uses for its trusted directories.
const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Empty directories every guest needs (mount points and scratch space).
const BASE_DIRS: &[&str] = &[
    "/bin", "/sbin", "/dev", "/proc", "/sys", "/tmp", "/run", "/etc", "/root",
];

/// One entry of an archive.
#[derive(Debug, Clone)]
enum Node {
    Dir,
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { major: u32, minor: u32 },
}

/// An in-memory cpio archive that creates parent directories first, as
/// the kernel's unpacker needs.
#[derive(Debug, Default)]
pub struct Archive {
    entries: Vec<(String, Node)>,
    dirs: BTreeSet<String>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str) {
        let path = normalize(path);
        if path.is_empty() || self.dirs.contains(&path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.clone());
        self.entries.push((path, Node::Dir));
    }

    fn parent_of(&mut self, path: &str) -> String {
        let path = normalize(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        path
    }

    /// Adds a regular file with the given permission bits.
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = self.parent_of(path);
        self.entries.push((path, Node::File { mode, data }));
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = self.parent_of(path);
        self.entries.push((
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        ));
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) {
        let path = self.parent_of(path);
        self.entries.push((path, Node::CharDev { major, minor }));
    }

    /// Copies a host file, keeping its permission bits.
    pub fn copy_host_file(&mut self, guest_path: &str, host_path: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(host_path)
            .with_context(|| format!("reading {} for the initramfs", host_path.display()))?;
        let mode = std::fs::metadata(host_path)?.permissions().mode() & 0o7777;
        self.file(guest_path, mode, data);
        Ok(())
    }

    /// The archive as gzip-compressed cpio newc bytes.
    pub fn to_gzip(&self, level: u32) -> anyhow::Result<Vec<u8>> {
        let mut out = GzEncoder::new(Vec::new(), Compression::new(level));
        for (index, (path, node)) in self.entries.iter().enumerate() {
            let name = path.trim_start_matches('/');
            let builder = cpio::newc::Builder::new(name)
                .ino(index as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(0);
            match node {
                Node::Dir => {
                    builder
                        .mode(0o040755)
                        .nlink(2)
                        .write(&mut out, 0)
                        .finish()?;
                }
                Node::File { mode, data } => {
                    let size = u32::try_from(data.len())
                        .map_err(|_| anyhow::anyhow!("{path} is larger than 4 GiB"))?;
                    let mut writer = builder.mode(0o100000 | mode).write(&mut out, size);
                    writer.write_all(data)?;
                    writer.finish()?;
                }
                Node::Symlink { target } => {
                    let mut writer = builder.mode(0o120777).write(&mut out, target.len() as u32);
                    writer.write_all(target.as_bytes())?;
                    writer.finish()?;
                }
                Node::CharDev { major, minor } => {
                    builder
                        .mode(0o020600)
                        .rdev_major(*major)
                        .rdev_minor(*minor)
                        .write(&mut out, 0)
                        .finish()?;
                }
            }
        }
        cpio::newc::trailer(&mut out)?;
        Ok(out.finish()?)
    }
}

/// Absolute form without a trailing slash; the root is the empty string.
fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() || trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

/// What an ELF executable or library needs from the dynamic loader.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DynamicInfo {
    /// PT_INTERP (the dynamic loader), if any.
    pub interpreter: Option<String>,
    /// DT_NEEDED names.
    pub needed: Vec<String>,
    /// DT_RUNPATH and DT_RPATH directories (`$ORIGIN` expanded).
    pub search_dirs: Vec<PathBuf>,
}

/// Reads PT_INTERP, DT_NEEDED and the run paths of an ELF file. A static
/// executable gives an empty [`DynamicInfo`].
pub fn dynamic_info(path: &Path) -> anyhow::Result<DynamicInfo> {
    // Read on demand: only the headers and dynamic section of a large
    // executable are needed.
    let opened =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let cache = object::ReadCache::new(opened);
    let data = &cache;
    let file = object::read::elf::ElfFile64::<object::Endianness, _>::parse(data)
        .with_context(|| format!("{} is not a 64-bit ELF file", path.display()))?;
    let endian = file.endian();
    let mut info = DynamicInfo::default();
    for header in file.elf_program_headers() {
        if let Some(interp) = header.interpreter(endian, data)? {
            info.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = file.elf_section_table();
    let Some((entries, strings_index)) = sections.dynamic(endian, data)? else {
        return Ok(info);
    };
    let strings = sections.strings(endian, data, strings_index)?;
    let origin = path.parent().unwrap_or(Path::new("/"));
    for entry in entries {
        let tag = entry.tag32(endian);
        let Some(tag) = tag else { continue };
        if tag == object::elf::DT_NULL {
            break;
        }
        if !entry.is_string(endian) {
            continue;
        }
        let value = String::from_utf8_lossy(
            strings
                .get(entry.d_val(endian) as u32)
                .map_err(|()| anyhow::anyhow!("{}: bad dynamic string offset", path.display()))?,
        )
        .into_owned();
        match tag {
            object::elf::DT_NEEDED => info.needed.push(value),
            object::elf::DT_RUNPATH | object::elf::DT_RPATH => {
                for dir in value.split(':').filter(|d| !d.is_empty()) {
                    let expanded = dir
                        .replace("${ORIGIN}", &origin.to_string_lossy())
                        .replace("$ORIGIN", &origin.to_string_lossy());
                    info.search_dirs.push(PathBuf::from(expanded));
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Every shared library `exe` loads, found by following DT_NEEDED
/// recursively, plus its dynamic loader: pairs of (path in the guest, path
/// on the host). Libraries keep the path they were found at, which is one
/// of the loader's default directories, so the guest needs no ld.so.cache.
pub fn shared_libraries(exe: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let mut seen_names: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<PathBuf> = vec![exe.to_path_buf()];
    let extra_dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    while let Some(object_path) = queue.pop() {
        let info = dynamic_info(&object_path)?;
        if let Some(interp) = &info.interpreter {
            if seen_names.insert(interp.clone()) {
                let host = PathBuf::from(interp);
                if !host.exists() {
                    return Err(RunqError::environment(format!(
                        "{} needs the dynamic loader {interp}, which is missing",
                        object_path.display()
                    )));
                }
                found.push((interp.clone(), host));
            }
        }
        for name in &info.needed {
            if !seen_names.insert(name.clone()) {
                continue;
            }
            let dirs = info
                .search_dirs
                .iter()
                .chain(extra_dirs.iter())
                .cloned()
                .chain(LIBRARY_DIRS.iter().map(PathBuf::from));
            let Some(host) = dirs.map(|d| d.join(name)).find(|p| p.is_file()) else {
                return Err(RunqError::environment(format!(
                    "{} needs {name}, which is not in {} or its run path",
                    object_path.display(),
                    LIBRARY_DIRS.join(", ")
                )));
            };
            found.push((host.to_string_lossy().into_owned(), host.clone()));
            queue.push(host);
        }
    }
    found.sort();
    Ok(found)
}

/// Where host executables given to `runq vm` live in the guest (on the
/// guest's PATH).
pub const GUEST_BIN_DIR: &str = "/usr/local/bin";

/// The guest path of a host executable: `/usr/local/bin/<file name>`.
pub fn guest_executable_path(host: &Path) -> anyhow::Result<String> {
    let name = host.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        RunqError::bad_input(format!(
            "{}: an executable for the guest needs a UTF-8 file name",
            host.display()
        ))
    })?;
    Ok(format!("{GUEST_BIN_DIR}/{name}"))
}

/// Adds host executables at [`guest_executable_path`] with the shared
/// libraries they load (DT_NEEDED, recursively) that the base image does
/// not already hold (`present`: guest paths).
pub fn add_executables(
    overlay: &mut Archive,
    executables: &[PathBuf],
    present: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let mut added: BTreeSet<String> = present.clone();
    for exe in executables {
        overlay.copy_host_file(&guest_executable_path(exe)?, exe)?;
        for (guest, host) in shared_libraries(exe)? {
            if added.insert(guest.clone()) {
                overlay.copy_host_file(&guest, &host)?;
            }
        }
    }
    Ok(())
}

/// Guest paths of the libraries the base image holds for `runq` and
/// `busybox`.
pub fn base_libraries(runq: &Path, busybox: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut present = BTreeSet::new();
    for exe in [runq, busybox] {
        present.extend(shared_libraries(exe)?.into_iter().map(|(guest, _)| guest));
    }
    Ok(present)
}

/// Finds busybox: `$RUNQ_BUSYBOX`, else `busybox` on PATH.
pub fn find_busybox() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("RUNQ_BUSYBOX") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(RunqError::bad_input(format!(
            "RUNQ_BUSYBOX={} is not a file; point it at a busybox binary or unset it",
            path.display()
        )));
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path_var)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            RunqError::environment(
                "busybox not found on PATH; install it with `apt-get install busybox-static` \
                 or set RUNQ_BUSYBOX",
            )
        })
}

/// The applets a busybox binary provides (`busybox --list`).
fn busybox_applets(busybox: &Path) -> anyhow::Result<Vec<String>> {
    let output = std::process::Command::new(busybox)
        .arg("--list")
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !output.status.success() {
        return Err(RunqError::environment(format!(
            "{} --list failed ({}); reinstall busybox-static",
            busybox.display(),
            output.status
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains('/') && *name != "busybox")
        .map(str::to_string)
        .collect())
}

/// Path of the base image inside the cache, and whether it was just built.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub path: PathBuf,
    pub sha256: String,
    pub built: bool,
}

/// Returns the cached base image for this runq and busybox, building and
/// caching it when its content hash is new.
pub fn base_image(runq: &Path, busybox: &Path) -> anyhow::Result<BaseImage> {
    let libraries = shared_libraries(runq)?;
    let busybox_libraries = shared_libraries(busybox)?;
    let runq_data = std::fs::read(runq).with_context(|| format!("reading {}", runq.display()))?;
    let busybox_data =
        std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;

    let mut all_libraries = libraries;
    all_libraries.extend(busybox_libraries);
    all_libraries.sort();
    all_libraries.dedup();

    let dir = crate::cache::root()?;
    // Partial images of killed runs.
    crate::scratch::reap(&dir, TEMP_PREFIX);
    // Hashing a large runq costs a fifth of a second per boot; when no input
    // changed (same paths, sizes, mtimes, inodes) the memo names the image.
    let memo = memo_path(&dir, runq, busybox, &all_libraries);
    if let Some(image) = memo.as_ref().and_then(|m| remembered_image(&dir, m)) {
        return Ok(image);
    }

    let (sha256, library_data) = hash_inputs(&runq_data, &busybox_data, &all_libraries)?;

    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the cache directory {}", dir.display()))?;
    if let Some(memo) = &memo {
        // Best effort: without the memo the next boot hashes again.
        let _ = std::fs::write(memo, &sha256);
    }
    let path = image_path(&dir, &sha256);
    if path.is_file() {
        touch(&path);
        return Ok(BaseImage {
            path,
            sha256,
            built: false,
        });
    }

    let bytes = build_base_archive((runq, runq_data), (busybox, busybox_data), library_data)?;
    // Write under a unique name and rename, so concurrent runs never see a
    // half-written image.
    let mut temp = crate::scratch::file_in(&dir, TEMP_PREFIX)?;
    temp.write_all(&bytes)?;
    temp.persist(&path)
        .map_err(|e| anyhow::anyhow!("saving {}: {}", path.display(), e.error))?;
    trim_cache(&dir, &path);
    Ok(BaseImage {
        path,
        sha256,
        built: true,
    })
}

/// A shared library for the guest: (guest path, host path, contents).
type Library = (String, PathBuf, Vec<u8>);

/// The content hash naming the base image (format, init, busybox and every
/// library under its guest path), and the libraries read on the way.
fn hash_inputs(
    runq_data: &[u8],
    busybox_data: &[u8],
    libraries: &[(String, PathBuf)],
) -> anyhow::Result<(String, Vec<Library>)> {
    let mut hasher = Sha256::new();
    hasher.update(BASE_FORMAT.as_bytes());
    hash_part(&mut hasher, "init", runq_data);
    hash_part(&mut hasher, "busybox", busybox_data);
    let mut library_data = Vec::with_capacity(libraries.len());
    for (guest, host) in libraries {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        hash_part(&mut hasher, guest, &data);
        library_data.push((guest.clone(), host.clone(), data));
    }
    Ok((hex(&hasher.finalize()), library_data))
}

/// The gzipped base archive: folders, console and null devices, runq as
/// `/init` (without debug info when it can be stripped), busybox with its
/// applets, and the libraries both need.
fn build_base_archive(
    (runq, runq_data): (&Path, Vec<u8>),
    (busybox, busybox_data): (&Path, Vec<u8>),
    libraries: Vec<Library>,
) -> anyhow::Result<Vec<u8>> {
    let mut archive = Archive::new();
    for dir in BASE_DIRS {
        archive.dir(dir);
    }
    archive.char_dev("/dev/console", 5, 1);
    archive.char_dev("/dev/null", 1, 3);
    archive.file(
        "/init",
        0o755,
        without_debug_info(runq).unwrap_or(runq_data),
    );
    archive.symlink("/bin/runq", "/init");
    archive.file("/bin/busybox", 0o755, busybox_data);
    for applet in busybox_applets(busybox)? {
        archive.symlink(&format!("/bin/{applet}"), "/bin/busybox");
    }
    for (guest, host, data) in libraries {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&host)?.permissions().mode() & 0o7777;
        archive.file(&guest, mode, data);
    }
    archive.to_gzip(1)
}

/// `exe` without its DWARF sections (`objcopy --strip-debug`), which
/// shrinks runq's image about sevenfold; the symbol table stays, so guest
/// backtraces keep function names. `None` when objcopy is missing or fails.
fn without_debug_info(exe: &Path) -> Option<Vec<u8>> {
    let tmp = std::env::temp_dir();
    crate::scratch::reap(&tmp, STRIP_PREFIX);
    let dir = crate::scratch::dir_in(&tmp, STRIP_PREFIX).ok()?;
    let out = dir.path().join("stripped");
    let status = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(exe)
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    std::fs::read(&out).ok()
}

fn hash_part(hasher: &mut Sha256, name: &str, data: &[u8]) {
    hasher.update((name.len() as u64).to_le_bytes());
    hasher.update(name.as_bytes());
    hasher.update((data.len() as u64).to_le_bytes());
    hasher.update(data);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes all but the newest [`CACHE_KEEP`] base images (never `keep`).
fn image_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("initramfs-{}.cpio.gz", &sha256[..24]))
}

/// Marks a cached image as in use, so cache trimming keeps it.
fn touch(path: &Path) {
    let _ = std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
}

/// The memo file for these inputs as they are on disk now: named by a hash
/// of each input's path, size, modification time and inode. `None` when an
/// input cannot be inspected.
fn memo_path(
    dir: &Path,
    runq: &Path,
    busybox: &Path,
    libraries: &[(String, PathBuf)],
) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut hasher = Sha256::new();
    hasher.update(BASE_FORMAT.as_bytes());
    let inputs = [runq, busybox]
        .into_iter()
        .chain(libraries.iter().map(|(_, host)| host.as_path()));
    for path in inputs {
        let meta = std::fs::metadata(path).ok()?;
        hasher.update(path.as_os_str().as_encoded_bytes());
        for field in [meta.size(), meta.ino(), meta.dev()] {
            hasher.update(field.to_le_bytes());
        }
        hasher.update(meta.mtime().to_le_bytes());
        hasher.update(meta.mtime_nsec().to_le_bytes());
    }
    Some(dir.join(format!("memo-{}", &hex(&hasher.finalize())[..24])))
}

/// The cached image a memo names, if both are still there.
fn remembered_image(dir: &Path, memo: &Path) -> Option<BaseImage> {
    let (path, sha256) = remembered_image_path(dir, memo)?;
    if !path.is_file() {
        return None;
    }
    touch(&path);
    Some(BaseImage {
        path,
        sha256,
        built: false,
    })
}

fn trim_cache(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut images: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("initramfs-") && name.ends_with(".cpio.gz")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    images.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in images.into_iter().skip(CACHE_KEEP) {
        if path != keep {
            let _ = std::fs::remove_file(path);
        }
    }
    // Memos of removed images are of no use any more.
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with("memo-")
            && remembered_image_path(dir, &entry.path()).is_none_or(|(p, _)| !p.is_file())
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The image path and content hash a memo file holds.
fn remembered_image_path(dir: &Path, memo: &Path) -> Option<(PathBuf, String)> {
    let text = std::fs::read_to_string(memo).ok()?;
    let sha256 = text.trim();
    (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (image_path(dir, sha256), sha256.to_owned()))
}

/// Writes the boot image for one run: the cached base followed by the
/// gzip-compressed `overlay`.
pub fn write_boot_image(base: &BaseImage, overlay: &Archive, out: &Path) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let base_bytes = std::fs::read(&base.path)
        .with_context(|| format!("reading the cached image {}", base.path.display()))?;
    file.write_all(&base_bytes)?;
    file.write_all(&overlay.to_gzip(1)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_lists_parents_before_children() {
        let mut archive = Archive::new();
        archive.file("/a/b/c.txt", 0o644, b"hi".to_vec());
        archive.symlink("/a/link", "b/c.txt");
        let names: Vec<&str> = archive.entries.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["/a", "/a/b", "/a/b/c.txt", "/a/link"]);

        let gz = archive.to_gzip(6).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let mut reader = &raw[..];
        let mut seen = Vec::new();
        loop {
            let entry = cpio::newc::Reader::new(reader).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            seen.push((entry.entry().name().to_string(), entry.entry().mode()));
            reader = entry.finish().unwrap();
        }
        assert_eq!(seen[2], ("a/b/c.txt".to_string(), 0o100644));
        assert_eq!(seen[3].1, 0o120777);
    }

    #[test]
    fn runq_itself_resolves_to_libc_and_the_loader() {
        let exe = std::env::current_exe().unwrap();
        let libs = shared_libraries(&exe).unwrap();
        let names: Vec<&str> = libs.iter().map(|(g, _)| g.as_str()).collect();
        assert!(names.iter().any(|n| n.ends_with("/libc.so.6")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("ld-linux")), "{names:?}");
    }
}
