//! int3 breakpoints, tracked per address space.
//!
//! Threads and vfork children share their parent's memory, so they share one
//! [`AddressSpace`]; a forked child gets a copy of its parent's memory,
//! int3 bytes included, so it gets a copy of the parent's table. A hit
//! restores the original byte in that address space only.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use nix::unistd::Pid;

/// The x86 one-byte breakpoint instruction.
const INT3: u8 = 0xcc;

/// Identifies one address space (a Linux `mm`) among the traced tasks.
pub type SpaceId = u64;

/// A breakpoint that has not been hit yet.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// The byte the int3 replaced.
    pub original: u8,
    /// Which image's site this is (index into the coverage's images).
    pub image: usize,
    /// Link-time address of the site in that image.
    pub link_address: u64,
}

/// The breakpoints of one address space, at run-time addresses.
#[derive(Debug, Clone, Default)]
pub struct AddressSpace {
    pub pending: HashMap<u64, Pending>,
    /// Breakpoints already removed, with their original byte. Another thread
    /// may have trapped on one just before it was removed; its trap is then
    /// only rewound. And a fork copies memory before runq sees the fork
    /// event: a breakpoint another thread of the parent removed in between
    /// is still in the child's copy, and is removed there on its trap.
    pub removed: HashMap<u64, u8>,
}

/// Reads `len` bytes of a stopped tracee's memory.
pub fn read_memory(pid: Pid, address: u64, len: usize) -> Result<Vec<u8>> {
    let mem = OpenOptions::new()
        .read(true)
        .open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem"))?;
    let mut buf = vec![0u8; len];
    mem.read_exact_at(&mut buf, address)
        .with_context(|| format!("reading {len} bytes at {address:#x} in pid {pid}"))?;
    Ok(buf)
}

/// Writes bytes into a tracee's memory (text pages included: /proc/PID/mem
/// writes through read-only private mappings for the tracer).
pub fn write_memory(pid: Pid, address: u64, bytes: &[u8]) -> Result<()> {
    let mem = OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .with_context(|| format!("opening /proc/{pid}/mem"))?;
    mem.write_all_at(bytes, address)
        .with_context(|| format!("writing {} bytes at {address:#x} in pid {pid}", bytes.len()))
}

impl AddressSpace {
    /// Inserts breakpoints at `sites` (run-time address, what it stands for)
    /// into the memory of `pid`, whose other threads must not be running.
    /// Nearby addresses are patched with one read and one write.
    pub fn insert_all(&mut self, pid: Pid, mut sites: Vec<(u64, usize, u64)>) -> Result<usize> {
        sites.sort_unstable_by_key(|s| s.0);
        sites.dedup_by_key(|s| s.0);
        let mut inserted = 0;
        let mut start = 0;
        while start < sites.len() {
            // A cluster: sites less than a page apart.
            let mut end = start + 1;
            while end < sites.len() && sites[end].0 - sites[end - 1].0 < 4096 {
                end += 1;
            }
            let lo = sites[start].0;
            let hi = sites[end - 1].0 + 1;
            let mut buf = read_memory(pid, lo, (hi - lo) as usize)?;
            for &(address, image, link_address) in &sites[start..end] {
                if self.pending.contains_key(&address) {
                    continue;
                }
                let offset = (address - lo) as usize;
                self.pending.insert(
                    address,
                    Pending {
                        original: buf[offset],
                        image,
                        link_address,
                    },
                );
                buf[offset] = INT3;
                inserted += 1;
            }
            write_memory(pid, lo, &buf)?;
            start = end;
        }
        Ok(inserted)
    }

    /// Handles a trap of `pid` at `address` (the int3's address, one before
    /// the reported instruction pointer). Returns what was hit, or `None` if
    /// the address is not one of ours at all.
    pub fn take_hit(&mut self, pid: Pid, address: u64) -> Result<Option<Hit>> {
        if let Some(pending) = self.pending.remove(&address) {
            write_memory(pid, address, &[pending.original])?;
            self.removed.insert(address, pending.original);
            return Ok(Some(Hit::First(pending)));
        }
        if let Some(&original) = self.removed.get(&address) {
            if read_memory(pid, address, 1)?[0] == INT3 {
                write_memory(pid, address, &[original])?;
            }
            return Ok(Some(Hit::AlreadyRemoved));
        }
        Ok(None)
    }

    /// Restores every original byte (before detaching from the tasks that
    /// use this address space; they must all be stopped).
    pub fn remove_all(&mut self, pid: Pid) -> Result<()> {
        for (address, pending) in self.pending.drain() {
            write_memory(pid, address, &[pending.original])?;
            self.removed.insert(address, pending.original);
        }
        Ok(())
    }
}

/// The outcome of a trap on one of our addresses.
#[derive(Debug, Clone, Copy)]
pub enum Hit {
    /// The first hit of this breakpoint in this address space.
    First(Pending),
    /// A stale trap on a breakpoint another thread already removed.
    AlreadyRemoved,
}
