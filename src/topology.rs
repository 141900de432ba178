//! CPU topology: read from sysfs; spec strings like "1n2l4c1t".
//!
//! A spec string names a uniform shape: `N` NUMA nodes, `L` last-level
//! caches per node, `C` cores per LLC and `T` hardware threads per core, as
//! `<N>n<L>l<C>c<T>t`. The host's shape is read from sysfs (the root is
//! injectable so tests can read fake trees); VM mode builds a synthetic
//! topology from a spec to choose qemu arguments and later compares the
//! guest's real topology with it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::RunqError;

/// Upper bound on the CPUs a spec may describe (keeps typos like
/// `64n64l64c8t` from allocating absurd topologies).
pub const MAX_SPEC_CPUS: usize = 4096;

/// One online CPU and where it sits. Core, LLC and node numbers are dense
/// indices (0..count) assigned in order of their lowest CPU, not the raw
/// sysfs ids, so they can index the vectors returned by [`Topology::cores`],
/// [`Topology::llcs`] and [`Topology::nodes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// Logical CPU number as the kernel names it (`cpuN`).
    pub cpu: usize,
    /// Dense core index; SMT siblings share it.
    pub core: usize,
    /// Dense last-level-cache index.
    pub llc: usize,
    /// Dense NUMA node index.
    pub node: usize,
    /// Physical package (socket) id as sysfs reports it.
    pub package: usize,
}

/// A uniform topology shape: nodes, LLCs per node, cores per LLC, threads
/// per core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopoSpec {
    pub nodes: usize,
    pub llcs_per_node: usize,
    pub cores_per_llc: usize,
    pub threads_per_core: usize,
}

impl TopoSpec {
    /// Total logical CPUs of this shape.
    pub fn total_cpus(&self) -> usize {
        self.nodes * self.llcs_per_node * self.cores_per_llc * self.threads_per_core
    }

    /// Total LLCs of this shape.
    pub fn total_llcs(&self) -> usize {
        self.nodes * self.llcs_per_node
    }

    /// Total cores of this shape.
    pub fn total_cores(&self) -> usize {
        self.total_llcs() * self.cores_per_llc
    }
}

impl fmt::Display for TopoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}n{}l{}c{}t",
            self.nodes, self.llcs_per_node, self.cores_per_llc, self.threads_per_core
        )
    }
}

impl FromStr for TopoSpec {
    type Err = anyhow::Error;

    /// Parses `<N>n<L>l<C>c<T>t`; errors are bad input naming the part.
    /// Whitespace around the spec is ignored and the letters may be upper
    /// case (`1N1L1C1T`), so a spec pasted from elsewhere reads the same;
    /// whitespace inside it is an error.
    fn from_str(text: &str) -> anyhow::Result<Self> {
        const PARTS: [(char, &str); 4] = [
            ('n', "NUMA nodes"),
            ('l', "LLCs per node"),
            ('c', "cores per LLC"),
            ('t', "threads per core"),
        ];
        let usage = "expected <nodes>n<llcs>l<cores>c<threads>t, e.g. 1n2l4c1t";
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(RunqError::bad_input(format!(
                "topology spec is empty: {usage}"
            )));
        }
        let mut values = [0usize; 4];
        for (slot, (letter, meaning)) in PARTS.iter().enumerate() {
            let digits_len = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits_len == 0 {
                return Err(RunqError::bad_input(format!(
                    "topology spec {text:?}: missing the number of {meaning} before '{letter}' \
                     (at {rest:?}); {usage}"
                )));
            }
            let (digits, after) = rest.split_at(digits_len);
            let value: usize = digits.parse().map_err(|_| {
                RunqError::bad_input(format!(
                    "topology spec {text:?}: {meaning} {digits:?} is too large; {usage}"
                ))
            })?;
            if value == 0 {
                return Err(RunqError::bad_input(format!(
                    "topology spec {text:?}: {meaning} must be at least 1 (got 0{letter}); {usage}"
                )));
            }
            let mut chars = after.chars();
            match chars.next() {
                Some(found) if found.eq_ignore_ascii_case(letter) => {}
                Some(found) => {
                    return Err(RunqError::bad_input(format!(
                        "topology spec {text:?}: expected '{letter}' ({meaning}) after {digits}, \
                         found {found:?}; {usage}"
                    )))
                }
                None => {
                    return Err(RunqError::bad_input(format!(
                        "topology spec {text:?}: missing '{letter}' ({meaning}) after {digits}; \
                         {usage}"
                    )))
                }
            }
            values[slot] = value;
            rest = chars.as_str();
        }
        if !rest.is_empty() {
            return Err(RunqError::bad_input(format!(
                "topology spec {text:?}: unexpected trailing {rest:?}; {usage}"
            )));
        }
        let spec = TopoSpec {
            nodes: values[0],
            llcs_per_node: values[1],
            cores_per_llc: values[2],
            threads_per_core: values[3],
        };
        let total = values
            .iter()
            .try_fold(1usize, |acc, v| acc.checked_mul(*v))
            .unwrap_or(usize::MAX);
        if total > MAX_SPEC_CPUS {
            return Err(RunqError::bad_input(format!(
                "topology spec {text:?} describes {total} CPUs; at most {MAX_SPEC_CPUS} are supported"
            )));
        }
        Ok(spec)
    }
}

impl Serialize for TopoSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TopoSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The CPUs of a machine and how they group into cores, LLCs and nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// One entry per online CPU, sorted by CPU number.
    pub cpus: Vec<CpuInfo>,
}

impl Topology {
    /// Reads the running host's topology from `/sys`.
    pub fn host() -> anyhow::Result<Self> {
        Self::from_sysfs(Path::new("/sys"))
    }

    /// Reads a topology from a sysfs tree rooted at `sysfs_root` (normally
    /// `/sys`). Uses `devices/system/cpu/online`, each CPU's `topology/` and
    /// `cache/index*/` directories, and `devices/system/node/node*/cpulist`.
    /// The LLC is the highest-level data or unified cache; without cache
    /// information the package stands in for it. Without node directories
    /// every CPU is on node 0.
    pub fn from_sysfs(sysfs_root: &Path) -> anyhow::Result<Self> {
        let cpu_dir = sysfs_root.join("devices/system/cpu");
        let online_path = cpu_dir.join("online");
        let online = parse_cpu_list(read_trimmed(&online_path)?.as_str())
            .with_context(|| format!("parsing {}", online_path.display()))?;
        if online.is_empty() {
            return Err(RunqError::environment(format!(
                "{} lists no online CPU",
                online_path.display()
            )));
        }

        let node_of = read_node_map(&sysfs_root.join("devices/system/node"))?;

        // Raw grouping keys per CPU, turned into dense indices below.
        struct Raw {
            cpu: usize,
            core_key: Vec<usize>,
            llc_key: (usize, Vec<usize>),
            node_key: usize,
            package: usize,
        }
        let mut raws = Vec::with_capacity(online.len());
        for &cpu in &online {
            let dir = cpu_dir.join(format!("cpu{cpu}"));
            let topo_dir = dir.join("topology");
            let package = read_optional_number(&topo_dir.join("physical_package_id"))?.unwrap_or(0);
            // Siblings: core_cpus_list (newer kernels) or thread_siblings_list.
            let mut siblings = match read_optional(&topo_dir.join("core_cpus_list"))? {
                Some(text) => parse_cpu_list(&text)?,
                None => match read_optional(&topo_dir.join("thread_siblings_list"))? {
                    Some(text) => parse_cpu_list(&text)?,
                    None => vec![cpu],
                },
            };
            siblings.retain(|c| online.contains(c));
            if !siblings.contains(&cpu) {
                siblings.push(cpu);
                siblings.sort_unstable();
            }
            let llc_key = match read_llc_cpus(&dir.join("cache"), &online)? {
                Some(shared) => (usize::MAX, shared),
                // No cache info: all CPUs of the package share one "LLC".
                None => (package, Vec::new()),
            };
            let node_key = node_of.get(&cpu).copied().unwrap_or(0);
            raws.push(Raw {
                cpu,
                core_key: siblings,
                llc_key,
                node_key,
                package,
            });
        }

        let mut core_ids: BTreeMap<Vec<usize>, usize> = BTreeMap::new();
        let mut llc_ids: BTreeMap<(usize, Vec<usize>), usize> = BTreeMap::new();
        let mut node_ids: BTreeMap<usize, usize> = BTreeMap::new();
        let mut cpus = Vec::with_capacity(raws.len());
        for raw in raws {
            let next = core_ids.len();
            let core = *core_ids.entry(raw.core_key).or_insert(next);
            let next = llc_ids.len();
            let llc = *llc_ids.entry(raw.llc_key).or_insert(next);
            let next = node_ids.len();
            let node = *node_ids.entry(raw.node_key).or_insert(next);
            cpus.push(CpuInfo {
                cpu: raw.cpu,
                core,
                llc,
                node,
                package: raw.package,
            });
        }
        Ok(Topology { cpus })
    }

    /// Builds the topology a machine of shape `spec` has, numbering CPUs
    /// the way qemu does: threads of a core are consecutive, then cores of
    /// an LLC, then LLCs of a node, then nodes. Each node is one package.
    pub fn from_spec(spec: &TopoSpec) -> Self {
        let mut cpus = Vec::with_capacity(spec.total_cpus());
        for node in 0..spec.nodes {
            for llc_in_node in 0..spec.llcs_per_node {
                let llc = node * spec.llcs_per_node + llc_in_node;
                for core_in_llc in 0..spec.cores_per_llc {
                    let core = llc * spec.cores_per_llc + core_in_llc;
                    for _thread in 0..spec.threads_per_core {
                        cpus.push(CpuInfo {
                            cpu: cpus.len(),
                            core,
                            llc,
                            node,
                            package: node,
                        });
                    }
                }
            }
        }
        Topology { cpus }
    }

    /// Parses a spec string and builds its topology.
    pub fn from_spec_str(text: &str) -> anyhow::Result<Self> {
        Ok(Self::from_spec(&text.parse()?))
    }

    /// Online CPU numbers, ascending.
    pub fn cpu_ids(&self) -> Vec<usize> {
        self.cpus.iter().map(|c| c.cpu).collect()
    }

    /// Number of online CPUs.
    pub fn num_cpus(&self) -> usize {
        self.cpus.len()
    }

    /// Information about one CPU, if it is online.
    pub fn cpu(&self, cpu: usize) -> Option<&CpuInfo> {
        self.cpus.iter().find(|c| c.cpu == cpu)
    }

    /// Whether `cpu` is an online CPU of this topology.
    pub fn contains(&self, cpu: usize) -> bool {
        self.cpu(cpu).is_some()
    }

    fn group_by(&self, key: impl Fn(&CpuInfo) -> usize) -> Vec<Vec<usize>> {
        let count = self.cpus.iter().map(&key).max().map_or(0, |m| m + 1);
        let mut groups = vec![Vec::new(); count];
        for info in &self.cpus {
            groups[key(info)].push(info.cpu);
        }
        groups
    }

    /// CPU sets of each core (SMT siblings), indexed by dense core index.
    pub fn cores(&self) -> Vec<Vec<usize>> {
        self.group_by(|c| c.core)
    }

    /// CPU sets of each LLC, indexed by dense LLC index.
    pub fn llcs(&self) -> Vec<Vec<usize>> {
        self.group_by(|c| c.llc)
    }

    /// CPU sets of each NUMA node, indexed by dense node index.
    pub fn nodes(&self) -> Vec<Vec<usize>> {
        self.group_by(|c| c.node)
    }

    /// CPUs of LLC `index` (empty if out of range).
    pub fn llc_cpus(&self, index: usize) -> Vec<usize> {
        self.llcs().get(index).cloned().unwrap_or_default()
    }

    /// CPUs of node `index` (empty if out of range).
    pub fn node_cpus(&self, index: usize) -> Vec<usize> {
        self.nodes().get(index).cloned().unwrap_or_default()
    }

    /// SMT siblings of `cpu`, including itself (empty if not online).
    pub fn siblings(&self, cpu: usize) -> Vec<usize> {
        match self.cpu(cpu) {
            Some(info) => self
                .cpus
                .iter()
                .filter(|c| c.core == info.core)
                .map(|c| c.cpu)
                .collect(),
            None => Vec::new(),
        }
    }

    /// LLC indices that belong to node `index`.
    pub fn llcs_of_node(&self, index: usize) -> Vec<usize> {
        let mut llcs: Vec<usize> = self
            .cpus
            .iter()
            .filter(|c| c.node == index)
            .map(|c| c.llc)
            .collect();
        llcs.sort_unstable();
        llcs.dedup();
        llcs
    }

    /// Whether every node has the same number of LLCs, every LLC the same
    /// number of cores and every core the same number of threads, so that
    /// [`Topology::spec`] describes the machine exactly.
    pub fn is_uniform(&self) -> bool {
        Topology::from_spec(&self.spec()).num_cpus() == self.num_cpus()
            && self.llcs().iter().all(|l| l.len() == self.llcs()[0].len())
            && self
                .cores()
                .iter()
                .all(|c| c.len() == self.cores()[0].len())
            && (0..self.nodes().len())
                .all(|n| self.llcs_of_node(n).len() == self.llcs_of_node(0).len())
    }

    /// The spec string of this shape. For a non-uniform machine each count
    /// is the largest seen (check [`Topology::is_uniform`]).
    pub fn spec(&self) -> TopoSpec {
        let nodes = self.nodes().len().max(1);
        let llcs_per_node = (0..nodes)
            .map(|n| self.llcs_of_node(n).len())
            .max()
            .unwrap_or(1)
            .max(1);
        let cores = self.cores();
        let cores_per_llc = self
            .llcs()
            .iter()
            .map(|llc| {
                let mut core_ids: Vec<usize> = llc
                    .iter()
                    .filter_map(|&cpu| self.cpu(cpu).map(|c| c.core))
                    .collect();
                core_ids.sort_unstable();
                core_ids.dedup();
                core_ids.len()
            })
            .max()
            .unwrap_or(1)
            .max(1);
        let threads_per_core = cores.iter().map(Vec::len).max().unwrap_or(1).max(1);
        TopoSpec {
            nodes,
            llcs_per_node,
            cores_per_llc,
            threads_per_core,
        }
    }

    /// Whether this (e.g. a guest's) topology has the shape `spec`.
    pub fn matches_spec(&self, spec: &TopoSpec) -> bool {
        self.is_uniform() && self.spec() == *spec
    }

    /// Multi-line human description: spec, then node / LLC / core tree.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "spec: {}{}\ncpus: {} ({} online)\n",
            self.spec(),
            if self.is_uniform() {
                ""
            } else {
                " (non-uniform; largest counts)"
            },
            format_cpu_list(&self.cpu_ids()),
            self.num_cpus()
        );
        let llcs = self.llcs();
        let cores = self.cores();
        for (node, node_cpus) in self.nodes().iter().enumerate() {
            out += &format!("node {node}: cpus {}\n", format_cpu_list(node_cpus));
            for llc in self.llcs_of_node(node) {
                out += &format!("  llc {llc}: cpus {}\n", format_cpu_list(&llcs[llc]));
                for (core, core_cpus) in cores.iter().enumerate() {
                    let first = core_cpus[0];
                    if self.cpu(first).map(|c| c.llc) == Some(llc) {
                        out += &format!("    core {core}: cpus {}\n", format_cpu_list(core_cpus));
                    }
                }
            }
        }
        out
    }
}

/// Parses a kernel CPU list such as `0-3,8,10-11` (also used for cpuset
/// files). An empty string is the empty set. The result is sorted and
/// deduplicated.
pub fn parse_cpu_list(text: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let bad = || {
            RunqError::bad_input(format!(
                "CPU list {text:?}: bad element {part:?}; expected numbers or ranges like 0-3,8"
            ))
        };
        match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: usize = lo.trim().parse().map_err(|_| bad())?;
                let hi: usize = hi.trim().parse().map_err(|_| bad())?;
                if lo > hi || hi - lo > MAX_SPEC_CPUS * 16 {
                    return Err(bad());
                }
                cpus.extend(lo..=hi);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Formats CPUs in kernel list form with ranges (`0-3,8`). Accepts any order
/// and duplicates.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < sorted.len() {
        let start = sorted[index];
        let mut end = start;
        while index + 1 < sorted.len() && sorted[index + 1] == end + 1 {
            index += 1;
            end = sorted[index];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        index += 1;
    }
    parts.join(",")
}

fn read_trimmed(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| RunqError::environment(format!("cannot read {}: {e}", path.display())))
}

fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RunqError::environment(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn read_optional_number(path: &Path) -> anyhow::Result<Option<usize>> {
    match read_optional(path)? {
        // Some kernels report -1 for unknown ids.
        Some(text) => Ok(text.parse::<i64>().ok().map(|v| v.max(0) as usize)),
        None => Ok(None),
    }
}

/// CPUs sharing the highest-level data/unified cache of one CPU, restricted
/// to online CPUs; `None` if the CPU has no cache directories.
fn read_llc_cpus(cache_dir: &Path, online: &[usize]) -> anyhow::Result<Option<Vec<usize>>> {
    let entries = match std::fs::read_dir(cache_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RunqError::environment(format!(
                "cannot list {}: {e}",
                cache_dir.display()
            )))
        }
    };
    let mut best: Option<(usize, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("index") {
            continue;
        }
        let path = entry.path();
        let kind = read_optional(&path.join("type"))?.unwrap_or_default();
        if kind == "Instruction" {
            continue;
        }
        let Some(level) = read_optional_number(&path.join("level"))? else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| level > *b) {
            best = Some((level, path));
        }
    }
    let Some((_, path)) = best else {
        return Ok(None);
    };
    let Some(text) = read_optional(&path.join("shared_cpu_list"))? else {
        return Ok(None);
    };
    let mut shared = parse_cpu_list(&text)?;
    shared.retain(|c| online.contains(c));
    Ok(Some(shared))
}

/// Map CPU -> raw node id from `node*/cpulist`; empty if there is no node
/// directory (kernels without NUMA).
fn read_node_map(node_dir: &Path) -> anyhow::Result<BTreeMap<usize, usize>> {
    let mut map = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(node_dir) else {
        return Ok(map);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix("node")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(text) = read_optional(&entry.path().join("cpulist"))? {
            for cpu in parse_cpu_list(&text)? {
                map.insert(cpu, id);
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_list_round_trip() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(format_cpu_list(&[11, 0, 1, 2, 3, 8, 10, 2]), "0-3,8,10-11");
        assert!(parse_cpu_list("").unwrap().is_empty());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
    }

    #[test]
    fn spec_round_trip() {
        let spec: TopoSpec = "2n2l4c2t".parse().unwrap();
        assert_eq!(spec.to_string(), "2n2l4c2t");
        assert_eq!(spec.total_cpus(), 32);
        let topo = Topology::from_spec(&spec);
        assert_eq!(topo.spec(), spec);
        assert!(topo.is_uniform());
        assert_eq!(topo.llcs().len(), 4);
        assert_eq!(topo.siblings(5), vec![4, 5]);
        assert_eq!(topo.node_cpus(1), (16..32).collect::<Vec<_>>());
    }
}
