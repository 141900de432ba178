//! Anonymous shared memory that survives `fork`.
//!
//! The exploration state (counters, assertion table, coverage bitmaps,
//! recorded recipes) lives in one `MAP_SHARED | MAP_ANONYMOUS` mapping made
//! of `AtomicU64` words, so every forked timeline reads and writes the same
//! physical pages. This module holds the only `unsafe` code of the mapping:
//! creating it, viewing it as a slice of atomics, and unmapping it.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// A zero-filled shared mapping of `len` 64-bit atomic words.
///
/// Forked children inherit the mapping; they leave with `_exit`, so only
/// the process that created it unmaps it (on drop).
pub struct SharedWords {
    ptr: NonNull<AtomicU64>,
    len: usize,
}

impl SharedWords {
    /// Map `len` zeroed words shared with future children.
    pub fn new(len: usize) -> anyhow::Result<Self> {
        let len = len.max(1);
        let bytes = NonZeroUsize::new(len * std::mem::size_of::<AtomicU64>())
            .context("shared memory size overflow")?;
        // SAFETY: a fresh anonymous mapping aliases no Rust object; the
        // kernel zero-fills it and aligns it to a page.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .context("mmap of the exploration shared memory failed")?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The mapping as atomics.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds `len` page-aligned, zero-initialised
        // words (all-zero is a valid AtomicU64), it lives as long as `self`,
        // and it is only ever accessed through atomics.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Size of the mapping in bytes.
    pub fn byte_len(&self) -> usize {
        self.len * std::mem::size_of::<AtomicU64>()
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the pointer and length are those mmap returned; no slice
        // borrowed from `words()` outlives `self`.
        if let Err(err) = unsafe { munmap(self.ptr.cast(), self.byte_len()) } {
            tracing::warn!("munmap of exploration shared memory failed: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn mapping_is_zeroed_and_writable() {
        let shm = SharedWords::new(1000).unwrap();
        assert!(shm.words().iter().all(|w| w.load(Ordering::Relaxed) == 0));
        shm.words()[999].store(7, Ordering::Relaxed);
        assert_eq!(shm.words()[999].load(Ordering::Relaxed), 7);
        assert_eq!(shm.byte_len(), 8000);
    }
}
