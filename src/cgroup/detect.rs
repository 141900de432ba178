//! Finding cgroup hierarchies: `/proc/self/mountinfo` says where each
//! hierarchy is mounted and which controllers it carries,
//! `/proc/self/cgroup` says where this process sits in each of them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// One cgroup (v1) or cgroup2 mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// The cgroup path shown at the mount point (`/` unless bind-mounted or
    /// namespaced).
    pub root: String,
    /// True for cgroup2, false for a v1 hierarchy.
    pub unified: bool,
    /// v1 controllers named in the super options (`cpu`, `cpuacct`, ...).
    /// Empty for cgroup2 (read `cgroup.controllers` there instead).
    pub controllers: Vec<String>,
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup {
    /// Hierarchy id; 0 is the unified (v2) hierarchy.
    pub hierarchy_id: u32,
    /// Controllers bound to the hierarchy (empty for v2).
    pub controllers: Vec<String>,
    /// Path of the process's cgroup inside the hierarchy.
    pub path: String,
}

/// v1 controller names runq may meet in super options.
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let text = std::str::from_utf8(digits).unwrap_or("");
                if let Ok(value) = u8::from_str_radix(text, 8) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text, keeping cgroup and cgroup2 mounts.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        // id parent dev root mount_point options [optional...] - fstype source super
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if dash < 6 || fields.len() < dash + 4 {
            continue;
        }
        let fstype = fields[dash + 1];
        let unified = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if unified {
            Vec::new()
        } else {
            fields[dash + 3]
                .split(',')
                .filter(|opt| V1_CONTROLLERS.contains(opt))
                .map(str::to_string)
                .collect()
        };
        mounts.push(CgroupMount {
            mount_point: PathBuf::from(unescape(fields[4])),
            root: unescape(fields[3]),
            unified,
            controllers,
        });
    }
    mounts
}

/// Parses `/proc/<pid>/cgroup` text.
pub fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let controllers = parts.next()?;
            let path = parts.next()?.to_string();
            Some(ProcCgroup {
                hierarchy_id: id,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path,
            })
        })
        .collect()
}

/// Reads this process's cgroup mounts.
pub fn read_mounts() -> anyhow::Result<Vec<CgroupMount>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// Reads this process's cgroup membership.
pub fn read_self_cgroups() -> anyhow::Result<Vec<ProcCgroup>> {
    let text = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    Ok(parse_proc_cgroup(&text))
}

/// The directory of `path` (a cgroup path inside the hierarchy) under a
/// mount whose root is `mount.root`. `None` when the path lies outside what
/// the mount shows.
pub fn dir_for(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let rest = if root.is_empty() {
        path
    } else if path == root {
        ""
    } else {
        path.strip_prefix(root)?
            .strip_prefix('/')
            .map(|_| &path[root.len()..])?
    };
    let rest = rest.trim_start_matches('/');
    Some(if rest.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rest)
    })
}

/// This process's directory in a v1 mount (matched by its controllers), or
/// in the unified hierarchy for a cgroup2 mount.
pub fn own_dir(mount: &CgroupMount, selves: &[ProcCgroup]) -> Option<PathBuf> {
    let entry = if mount.unified {
        selves.iter().find(|s| s.hierarchy_id == 0)?
    } else {
        selves.iter().find(|s| {
            s.hierarchy_id != 0
                && !mount.controllers.is_empty()
                && mount.controllers.iter().all(|c| s.controllers.contains(c))
        })?
    };
    dir_for(mount, &entry.path)
}

/// The first v1 mount carrying `controller` whose view contains this
/// process's cgroup.
pub fn v1_mount_for<'a>(
    mounts: &'a [CgroupMount],
    selves: &[ProcCgroup],
    controller: &str,
) -> Option<(&'a CgroupMount, PathBuf)> {
    mounts
        .iter()
        .filter(|m| !m.unified && m.controllers.iter().any(|c| c == controller))
        .find_map(|m| own_dir(m, selves).map(|dir| (m, dir)))
}

/// The first cgroup2 mount whose view contains this process's cgroup.
pub fn v2_mount<'a>(
    mounts: &'a [CgroupMount],
    selves: &[ProcCgroup],
) -> Option<(&'a CgroupMount, PathBuf)> {
    mounts
        .iter()
        .filter(|m| m.unified)
        .find_map(|m| own_dir(m, selves).map(|dir| (m, dir)))
}

/// The mount whose mount point is `path` (after resolving symlinks).
pub fn mount_at<'a>(mounts: &'a [CgroupMount], path: &Path) -> Option<&'a CgroupMount> {
    let wanted = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mounts.iter().rev().find(|m| {
        m.mount_point == wanted || fs::canonicalize(&m.mount_point).ok().as_deref() == Some(&wanted)
    })
}

/// Controllers listed in a cgroup2 directory's `cgroup.controllers`.
pub fn v2_controllers(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .map(|text| text.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:39 /docker/abc /mnt/with\\040space rw shared:5 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn mountinfo_finds_v1_and_v2_mounts() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[0].controllers, vec!["cpu"]);
        assert!(mounts[4].unified);
        assert_eq!(mounts[3].controllers, Vec::<String>::new());
        assert_eq!(mounts[5].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(mounts[5].root, "/docker/abc");
        assert_eq!(mounts[5].controllers, vec!["cpu", "cpuacct"]);
    }

    #[test]
    fn own_dirs_follow_proc_cgroup_and_mount_roots() {
        let mounts = parse_mountinfo(HYBRID);
        let selves =
            parse_proc_cgroup("3:cpuset:/a/b\n2:cpu,cpuacct:/docker/abc/x\n1:cpu:/\n0::/u\n");
        let (m, dir) = v1_mount_for(&mounts, &selves, "cpuset").unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/cpuset"));
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/cpuset/a/b"));
        assert_eq!(
            own_dir(&mounts[5], &selves).unwrap(),
            PathBuf::from("/mnt/with space/x")
        );
        let (_, dir) = v2_mount(&mounts, &selves).unwrap();
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/unified/u"));
        // A path outside the mount's root is not reachable through it.
        let outside = parse_proc_cgroup("2:cpu,cpuacct:/elsewhere\n");
        assert!(own_dir(&mounts[5], &outside).is_none());
        // A sibling whose name merely starts with the root is outside too.
        let sibling = parse_proc_cgroup("2:cpu,cpuacct:/docker/abcdef\n");
        assert!(own_dir(&mounts[5], &sibling).is_none());
    }
}
