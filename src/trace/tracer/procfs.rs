//! What the tracer reads from /proc: a task's thread group and parent, a
//! process's command line, its mappings, the load bias of a
//! position-independent executable, and the source location of a fault.
//!
//! Separate because these are plain readers of kernel files with no tracer
//! state, used by task creation, exec, endings and fault reports alike.

use std::path::Path;

use anyhow::{Context, Result};
use nix::unistd::Pid;

/// The thread group a task belongs to, from /proc.
pub(super) fn thread_group_of(tid: Pid) -> Option<Pid> {
    proc_ids(tid).map(|(tgid, _)| tgid)
}

/// (thread group id, parent pid) of a task, from /proc/TID/status.
pub(super) fn proc_ids(tid: Pid) -> Option<(Pid, Pid)> {
    let (tgid, ppid) = crate::process::proc::ids(tid.as_raw())?;
    Some((Pid::from_raw(tgid), Pid::from_raw(ppid)))
}

pub(super) fn read_cmdline(pid: Pid) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// One line of /proc/PID/maps.
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

fn read_maps(pid: Pid) -> Result<Vec<Mapping>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let _perms = fields.next()?;
            let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
            let _dev = fields.next()?;
            let _inode = fields.next()?;
            let path = fields.collect::<Vec<_>>().join(" ");
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset,
                path: path.trim_end_matches(" (deleted)").to_string(),
            })
        })
        .collect())
}

/// Run-time address minus link-time address of a position-independent
/// executable: where its first segment (file offset 0) is mapped.
pub(super) fn load_bias(pid: Pid, exe: &Path, first_segment_vaddr: u64) -> Result<u64> {
    let exe = exe.display().to_string();
    let mapping = read_maps(pid)?
        .into_iter()
        .find(|m| m.path == exe && m.offset == 0)
        .with_context(|| format!("{exe} is not mapped at offset 0"))?;
    Ok(mapping.start.wrapping_sub(first_segment_vaddr))
}

/// "file:line" of an instruction address of a stopped task, or
/// "object+offset" when the object has no line information.
pub(super) fn locate(pid: Pid, ip: u64) -> Option<String> {
    let maps = read_maps(pid).ok()?;
    let mapping = maps
        .iter()
        .find(|m| ip >= m.start && ip < m.end && m.path.starts_with('/'))?;
    let base = maps
        .iter()
        .filter(|m| m.path == mapping.path)
        .map(|m| m.start.wrapping_sub(m.offset))
        .min()?;
    let relative = ip.wrapping_sub(base);
    let fallback = format!("{}+{relative:#x}", mapping.path);
    let Ok(loader) = addr2line::Loader::new(&mapping.path) else {
        return Some(fallback);
    };
    // Object-relative to link-time address: add the first segment's vaddr.
    let probe = relative.wrapping_add(loader.relative_address_base());
    match loader.find_location(probe) {
        Ok(Some(location)) => match (location.file, location.line) {
            (Some(file), Some(line)) => Some(format!("{file}:{line}")),
            _ => Some(fallback),
        },
        _ => Some(fallback),
    }
}
