//! Shared memory between the controller and its workers: the start and stop
//! words, and one slot per worker (iteration counter, tid, futex words,
//! wake stamps). Mapped MAP_SHARED before any fork, so worker processes and
//! the threads of a group host all see the same pages.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};

/// Words every worker watches.
#[repr(C, align(64))]
pub struct Header {
    /// 0 while workers are parked at the rendezvous; 1 once released.
    pub start: AtomicU32,
    /// Set to 1 to make every worker leave its loop.
    pub stop: AtomicU32,
    /// Workers that reached the rendezvous.
    pub ready: AtomicU32,
}

/// One worker's slot, on its own cache lines so counters do not false-share.
#[repr(C, align(128))]
pub struct Slot {
    /// Iterations so far; read by `snapshot_iterations`.
    pub iterations: AtomicU64,
    /// CLOCK_MONOTONIC ns stamped by a waker just before waking this worker
    /// (or the set, when this slot leads a set).
    pub stamp_ns: AtomicU64,
    /// The worker's tid (thread mode reports it through here).
    pub tid: AtomicI32,
    /// 1 once the worker left its body (no more stop signals needed).
    pub done: AtomicU32,
    /// Futex word owned by this slot (ping-pong turn, fan-out generation,
    /// mutex state when the slot leads a set).
    pub futex: AtomicU32,
    /// Second futex word (fan-out acknowledgements).
    pub aux: AtomicU32,
}

/// The mapping. Only the controller unmaps it (workers `_exit`).
pub struct Shm {
    base: NonNull<libc::c_void>,
    len: usize,
    slots: usize,
}

impl Shm {
    pub fn new(slots: usize) -> anyhow::Result<Shm> {
        let len = SLOT_OFFSET + std::mem::size_of::<Slot>() * slots.max(1);
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let base = unsafe {
            mmap_anonymous(
                None,
                NonZeroUsize::new(len).expect("non-zero length"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(|e| anyhow::anyhow!("mmap of {len} bytes of shared memory failed: {e}"))?;
        Ok(Shm { base, len, slots })
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a Header; zeroed atomics are valid
        // and the mapping lives as long as `self`.
        unsafe { &*(self.base.as_ptr() as *const Header) }
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < self.slots, "slot {i} out of {}", self.slots);
        // SAFETY: slot i lies inside the mapping (checked above); Header is
        // 64 bytes and Slot's alignment (128) divides the page-aligned base
        // plus 128*k, so the first slot starts at offset 128.
        unsafe {
            let first = (self.base.as_ptr() as *const u8).add(SLOT_OFFSET) as *const Slot;
            &*first.add(i)
        }
    }

    pub fn stopping(&self) -> bool {
        self.header().stop.load(Ordering::Relaxed) != 0
    }
}

/// Slots start after the header, rounded up to the slot alignment.
const SLOT_OFFSET: usize = 128;
const _: () = assert!(std::mem::size_of::<Header>() <= SLOT_OFFSET);

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: base/len come from our own mmap; nothing borrows it now.
        let _ = unsafe { munmap(self.base, self.len) };
    }
}

// The mapping is plain shared memory accessed through atomics.
unsafe impl Send for Shm {}
unsafe impl Sync for Shm {}

/// Wait while `word == expected`, at most `timeout`. Returns on wake, on a
/// changed value, on timeout or on a signal (EINTR): callers re-check.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 in shared memory (not
    // PRIVATE: the word is shared between processes); the timespec outlives
    // the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
        );
    }
}

/// Wake up to `count` waiters on `word`.
pub fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: FUTEX_WAKE only reads the address as a key.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, count);
    }
}
