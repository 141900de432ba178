//! `runq kernel fetch`: resolve a Debian suite's `linux-image-<flavour>` to
//! its concrete ABI packages, download and unpack them in a temporary
//! directory of the kernels directory, extract the kernel's files, record
//! their hashes, and rename the finished entry into place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::apt::{PrivateApt, Stanza};
use super::image;
use super::store::{
    self, CachedKernel, Capabilities, FileRecord, KernelMetadata, Origin, CONFIG, SYSTEM_MAP,
    VMLINUX, VMLINUZ,
};
use crate::error::RunqError;

/// Debian's x86-64 kernel flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavour {
    /// The generic kernel.
    Amd64,
    /// The kernel for virtual machines (fewer drivers).
    CloudAmd64,
}

impl Flavour {
    /// The flavour as Debian spells it in package names.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Amd64 => "amd64",
            Flavour::CloudAmd64 => "cloud-amd64",
        }
    }
}

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub suite: String,
    pub flavour: Flavour,
    pub mirror: String,
}

/// How a fetch ended.
pub enum Fetched {
    /// Downloaded and installed now.
    New(CachedKernel),
    /// The suite's current kernel was already cached, intact.
    AlreadyCached(CachedKernel),
}

/// The packages one kernel release consists of.
struct Resolved {
    release: String,
    version: String,
    packages: Vec<Stanza>,
}

/// Fetches the suite's current kernel into `kernels_root` (see the module
/// docs). Concurrent fetches wait for each other.
pub fn fetch(request: &FetchRequest, kernels_root: &Path) -> anyhow::Result<Fetched> {
    std::fs::create_dir_all(kernels_root)
        .with_context(|| format!("creating {}", kernels_root.display()))?;
    let _lock = lock(kernels_root)?;
    crate::scratch::reap(kernels_root, store::TEMP_PREFIX);
    let progress = Progress::new();

    progress.stage(&format!("updating the package list of {}", request.suite));
    let apt = PrivateApt::new(&kernels_root.join(".apt"), &request.suite, &request.mirror)?;
    apt.update()?;
    let resolved = resolve(&apt, request)?;

    let target = kernels_root.join(&resolved.release);
    if let Some(cached) = store::load(&target) {
        let names: Vec<&str> = cached.metadata.files.keys().map(String::as_str).collect();
        match cached.verify(&names) {
            Ok(()) => return Ok(Fetched::AlreadyCached(cached)),
            Err(err) => {
                eprintln!("runq: {err:#}; replacing it");
                discard(kernels_root, &target)?;
            }
        }
    } else if target.exists() {
        // A directory without valid metadata: not an entry runq made whole.
        discard(kernels_root, &target)?;
    }

    let staging = crate::scratch::dir_in(kernels_root, store::TEMP_PREFIX)?;
    let debs = staging.path().join("debs");
    std::fs::create_dir(&debs)?;
    let names: Vec<String> = resolved
        .packages
        .iter()
        .map(|p| p.package.clone())
        .collect();
    let total: u64 = resolved.packages.iter().map(|p| p.size).sum();
    progress.download(&format!("downloading {}", names.join(", ")), total);
    apt.download(&names, &debs, |bytes| progress.set_bytes(bytes))?;

    progress.stage("unpacking");
    let unpacked = staging.path().join("root");
    for deb in std::fs::read_dir(&debs)?.flatten() {
        unpack(&deb.path(), &unpacked)?;
    }
    progress.stage("extracting vmlinux and hashing");
    let entry = staging.path().join("entry");
    std::fs::create_dir(&entry)?;
    let capabilities = collect_files(&unpacked, &resolved.release, &entry)?;
    let metadata = KernelMetadata {
        format: store::METADATA_FORMAT,
        release: resolved.release.clone(),
        origin: debian_origin(request, apt.mirror(), &resolved),
        fetched_at: store::now_rfc3339(),
        capabilities,
        files: records(&entry)?,
    };
    progress.finish();
    store::install(kernels_root, &entry, &metadata)?;
    let cached = store::load(&target).ok_or_else(|| {
        anyhow::anyhow!("{} vanished right after it was installed", target.display())
    })?;
    Ok(Fetched::New(cached))
}

/// Where a fetched kernel came from, for its metadata.
fn debian_origin(request: &FetchRequest, mirror: &str, resolved: &Resolved) -> Origin {
    let flavour = request.flavour.name();
    Origin::Debian {
        suite: request.suite.clone(),
        flavour: flavour.to_string(),
        mirror: mirror.to_string(),
        version: resolved.version.clone(),
        abi: resolved
            .release
            .strip_suffix(&format!("-{flavour}"))
            .unwrap_or(&resolved.release)
            .to_string(),
        packages: resolved
            .packages
            .iter()
            .map(|p| format!("{} {}", p.package, p.version))
            .collect(),
    }
}

/// `linux-image-<flavour>` -> `linux-image-<release>` -> the image, binary
/// and base packages of that release (older suites ship one image package
/// holding everything).
fn resolve(apt: &PrivateApt, request: &FetchRequest) -> anyhow::Result<Resolved> {
    let flavour = request.flavour.name();
    let meta_name = format!("linux-image-{flavour}");
    let meta = apt.show(&meta_name)?.ok_or_else(|| {
        RunqError::bad_input(format!(
            "--suite {}: it has no package {meta_name}; use a suite with kernels, e.g. sid",
            request.suite
        ))
    })?;
    let suffix = format!("-{flavour}");
    let image_name = meta
        .depends
        .iter()
        .find(|d| d.starts_with("linux-image-") && d.ends_with(&suffix) && **d != meta_name)
        .ok_or_else(|| {
            RunqError::environment(format!(
                "{meta_name} {} in {} depends on no linux-image-<release>{suffix} package; \
                 Debian changed its packaging, runq needs updating",
                meta.version, request.suite
            ))
        })?
        .clone();
    let release = image_name["linux-image-".len()..].to_string();
    let image = apt.show(&image_name)?.ok_or_else(|| {
        RunqError::environment(format!(
            "{image_name} is missing from {} although {meta_name} depends on it; retry later",
            request.suite
        ))
    })?;
    let mut packages = vec![image.clone()];
    for part in ["linux-base-", "linux-binary-"] {
        let name = format!("{part}{release}");
        if image.depends.contains(&name) {
            let stanza = apt.show(&name)?.ok_or_else(|| {
                RunqError::environment(format!("{name} is missing from {}", request.suite))
            })?;
            packages.push(stanza);
        }
    }
    Ok(Resolved {
        release,
        version: image.version,
        packages,
    })
}

/// `dpkg -x DEB DIR`.
fn unpack(deb: &Path, into: &Path) -> anyhow::Result<()> {
    let output = std::process::Command::new("dpkg")
        .arg("-x")
        .arg(deb)
        .arg(into)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            RunqError::environment(format!(
                "cannot run dpkg ({e}); install it with `apt-get install dpkg`"
            ))
        })?;
    if !output.status.success() {
        anyhow::bail!(
            "dpkg -x {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Moves the kernel's files from the unpacked packages into `entry`
/// (`vmlinuz`, `config`, `System.map` when it is the real one), writes
/// `vmlinux` when the kernel inside has PVH, and returns the capabilities.
fn collect_files(unpacked: &Path, release: &str, entry: &Path) -> anyhow::Result<Capabilities> {
    let modules = unpacked.join("usr/lib/modules").join(release);
    let boot = unpacked.join("boot");
    let find = |in_modules: &str, in_boot: &str| -> Option<PathBuf> {
        [
            modules.join(in_modules),
            boot.join(format!("{in_boot}-{release}")),
        ]
        .into_iter()
        .find(|p| p.is_file())
    };
    let vmlinuz = find("vmlinuz", "vmlinuz").ok_or_else(|| {
        RunqError::environment(format!(
            "the packages of {release} hold no vmlinuz; Debian changed its packaging, runq \
             needs updating"
        ))
    })?;
    let config = find("config", "config").ok_or_else(|| {
        RunqError::environment(format!("the packages of {release} hold no kernel config"))
    })?;
    std::fs::rename(&vmlinuz, entry.join(VMLINUZ))?;
    std::fs::rename(&config, entry.join(CONFIG))?;
    if let Some(map) = find("System.map", "System.map") {
        // Debian ships a placeholder line pointing at the -dbg package.
        if std::fs::metadata(&map).is_ok_and(|m| m.len() > 4096) {
            std::fs::rename(&map, entry.join(SYSTEM_MAP))?;
        }
    }
    let config_text = std::fs::read_to_string(entry.join(CONFIG))?;
    let mut capabilities = Capabilities::from_config(&config_text);
    let bzimage = std::fs::read(entry.join(VMLINUZ))?;
    capabilities.pvh = match image::vmlinux_of(&bzimage) {
        Ok(elf) if image::has_pvh_note(&elf) => {
            std::fs::write(entry.join(VMLINUX), &elf)?;
            true
        }
        Ok(_) => false,
        Err(err) => {
            eprintln!("runq: WARNING: no vmlinux for {release} (boots as vmlinuz): {err:#}");
            false
        }
    };
    Ok(capabilities)
}

fn records(entry: &Path) -> anyhow::Result<std::collections::BTreeMap<String, FileRecord>> {
    let mut files = std::collections::BTreeMap::new();
    for name in [VMLINUZ, VMLINUX, CONFIG, SYSTEM_MAP] {
        let path = entry.join(name);
        if path.is_file() {
            files.insert(name.to_string(), FileRecord::of(&path)?);
        }
    }
    Ok(files)
}

/// Moves an entry out of the way (into a temporary directory that is then
/// removed), so no reader sees it half-deleted.
fn discard(kernels_root: &Path, entry: &Path) -> anyhow::Result<()> {
    let trash = crate::scratch::dir_in(kernels_root, store::TEMP_PREFIX)?;
    std::fs::rename(entry, trash.path().join("old"))
        .with_context(|| format!("moving {} aside", entry.display()))?;
    Ok(())
}

/// An exclusive lock on the kernels directory, held while fetching.
fn lock(kernels_root: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = kernels_root.join(".lock");
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", path.display()))
}

/// The progress display: a bar on a terminal, one line per stage
/// otherwise.
struct Progress {
    bar: ProgressBar,
    terminal: bool,
}

impl Progress {
    fn new() -> Progress {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        let bar = if terminal {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar, terminal }
    }

    fn stage(&self, message: &str) {
        if self.terminal {
            self.bar.set_style(ProgressStyle::default_spinner());
            self.bar.set_message(message.to_string());
        } else {
            eprintln!("runq kernel fetch: {message}");
        }
    }

    fn download(&self, message: &str, total: u64) {
        if self.terminal {
            let style = ProgressStyle::with_template(
                "{msg}\n[{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            self.bar.set_style(style);
            self.bar.set_length(total);
            self.bar.set_position(0);
            self.bar.set_message(message.to_string());
        } else {
            eprintln!(
                "runq kernel fetch: {message} ({:.1} MB)",
                total as f64 / 1e6
            );
        }
    }

    fn set_bytes(&self, bytes: u64) {
        self.bar.set_position(bytes);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
