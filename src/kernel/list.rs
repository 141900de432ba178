//! `runq kernel list`: every cached kernel and every `/boot/vmlinuz-*`,
//! with the capabilities runq cares about.

use std::path::{Path, PathBuf};

use super::store::{self, Capabilities, VMLINUZ};

/// Version of the `--json` layout.
pub const LIST_FORMAT: u32 = 1;

/// The `--json` document.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KernelList {
    pub format: u32,
    pub kernels: Vec<ListedKernel>,
}

/// Where a listed kernel lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelSource {
    /// runq's kernel cache (`--kernel <release>`).
    Cache,
    /// The host's /boot (`--kernel /boot/vmlinuz-<release>`).
    Boot,
}

/// One kernel. Capabilities are `None` when no config was found.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ListedKernel {
    pub release: String,
    pub source: KernelSource,
    /// The entry directory (cache) or the image (boot).
    pub path: PathBuf,
    pub sched_ext: Option<bool>,
    pub btf: Option<bool>,
    pub pvh: Option<bool>,
    /// Size of the compressed image (`vmlinuz`) in bytes.
    pub size: u64,
    /// When a cached kernel was fetched or built.
    pub fetched_at: Option<String>,
}

/// Cached kernels (newest first), then /boot's.
pub fn list(kernels_root: &Path, boot_dir: &Path) -> KernelList {
    let mut kernels: Vec<ListedKernel> = store::entries(kernels_root)
        .into_iter()
        .map(|cached| {
            let caps = cached.metadata.capabilities;
            ListedKernel {
                release: cached.metadata.release.clone(),
                source: KernelSource::Cache,
                size: cached.metadata.files.get(VMLINUZ).map_or(0, |f| f.size),
                path: cached.dir,
                sched_ext: Some(caps.sched_ext),
                btf: Some(caps.btf),
                pvh: Some(caps.pvh),
                fetched_at: Some(cached.metadata.fetched_at),
            }
        })
        .collect();
    kernels.extend(boot_kernels(boot_dir));
    KernelList {
        format: LIST_FORMAT,
        kernels,
    }
}

fn boot_kernels(boot_dir: &Path) -> Vec<ListedKernel> {
    let Ok(entries) = std::fs::read_dir(boot_dir) else {
        return Vec::new();
    };
    let mut found: Vec<ListedKernel> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            let size = e.metadata().ok().filter(|m| m.is_file())?.len();
            // /boot kernels are read from their config; PVH from CONFIG_PVH.
            let caps = std::fs::read_to_string(boot_dir.join(format!("config-{release}")))
                .ok()
                .map(|text| Capabilities::from_config(&text));
            Some(ListedKernel {
                release,
                source: KernelSource::Boot,
                path: e.path(),
                sched_ext: caps.map(|c| c.sched_ext),
                btf: caps.map(|c| c.btf),
                pvh: caps.map(|c| c.pvh),
                size,
                fetched_at: None,
            })
        })
        .collect();
    found.sort_by(|a, b| crate::vm::kernel::compare_versions(&b.release, &a.release));
    found
}

/// The table `runq kernel list` prints.
pub fn render_table(list: &KernelList) -> String {
    let yes_no = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    };
    let width = list
        .kernels
        .iter()
        .map(|k| k.release.len())
        .max()
        .unwrap_or(0)
        .max("RELEASE".len());
    let mut out = format!(
        "{:<width$}  {:<6} {:<9} {:<4} {:<4} {:>8}  PATH\n",
        "RELEASE", "SOURCE", "SCHED_EXT", "BTF", "PVH", "SIZE"
    );
    for k in &list.kernels {
        let source = match k.source {
            KernelSource::Cache => "cache",
            KernelSource::Boot => "boot",
        };
        out.push_str(&format!(
            "{:<width$}  {:<6} {:<9} {:<4} {:<4} {:>6.1}MB  {}\n",
            k.release,
            source,
            yes_no(k.sched_ext),
            yes_no(k.btf),
            yes_no(k.pvh),
            k.size as f64 / 1e6,
            k.path.display()
        ));
    }
    if list.kernels.is_empty() {
        out.push_str("(no kernels: fetch one with `runq kernel fetch`)\n");
    }
    out
}
