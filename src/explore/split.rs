//! The split loop: fork child timelines at a discovery, wait, merge.
//!
//! At a discovery the timeline flushes its coverage into the explored map
//! and forks children, each reseeded with `mix_seed(seed, mark, index)`.
//! Sequentially (P = 0) every child shares its parent's bitmap slot and is
//! waited for before the next fork. With a window of P, a child gets a free
//! pool slot (its own bitmap) and the parent keeps forking while slots are
//! free, reaping one of its own children when the window is full; when no
//! slot is free and it has no child of its own to wait for, the child shares
//! the parent's slot and the parent waits for it (the parent is blocked, so
//! at most P pool children ever run). After the last child the parent
//! resumes its own timeline.

use std::io::Write;
use std::sync::atomic::Ordering::SeqCst;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::assert::{Explorer, Timeline};
use super::fork::{ensure_single_threaded, fork_timeline, Forked};
use super::recipe::{ForkStep, Recipe};
use super::rng::mix_seed;
use super::state::{encode_outcome, Record, Shared, Stat};

/// Exit code of a timeline that found a bug.
pub const BUG_EXIT: i32 = 42;

/// Where a batch's energy comes from.
pub(crate) enum Source<'a> {
    /// One unit per child from the global pool.
    Global,
    /// From a mark's reservation.
    Reserve(&'a mut u64),
}

impl Source<'_> {
    fn take(&mut self, shared: &Shared) -> bool {
        match self {
            Source::Global => shared.take_energy(),
            Source::Reserve(left) if **left > 0 => {
                **left -= 1;
                true
            }
            Source::Reserve(_) => false,
        }
    }

    fn give_back(&mut self, shared: &Shared) {
        match self {
            Source::Global => shared.return_energy(1),
            Source::Reserve(left) => **left += 1,
        }
    }
}

/// Result of forking a batch, on each side of the fork.
pub(crate) enum Batch {
    /// This process is a new child: return to the program at once.
    Child,
    /// Every child of the batch finished; how many were started.
    Done(u64),
}

struct LiveChild {
    pid: Pid,
    pool_slot: Option<usize>,
    calls: u64,
    seed: u64,
    ordinal: u64,
}

/// Split the current timeline at the discovery `mark`.
pub(crate) fn split(t: &mut Timeline, ex: &Explorer, mark: &str) {
    let shared = &ex.shared;
    if shared.get(Stat::Stop) != 0 || t.depth >= ex.cfg.max_depth || !t.failed.is_empty() {
        return;
    }
    if let Err(err) = ensure_single_threaded() {
        if shared.stat(Stat::RefusedForks).fetch_add(1, SeqCst) == 0 {
            eprintln!("runq: not splitting at {mark:?}: {err:#}");
        }
        return;
    }
    shared.merge_slot(t.slot);
    shared.stat(Stat::ForkPoints).fetch_add(1, SeqCst);
    let mut next_index = 0;
    match &ex.cfg.adaptive {
        None => {
            spawn_batch(
                t,
                ex,
                mark,
                &mut next_index,
                u64::from(ex.cfg.per_split),
                Source::Global,
            );
        }
        Some(adaptive) => {
            super::adaptive::run_mark(t, ex, mark, adaptive, &mut next_index);
        }
    }
}

/// Fork up to `count` children at `mark`, wait for all of them.
pub(crate) fn spawn_batch(
    t: &mut Timeline,
    ex: &Explorer,
    mark: &str,
    next_index: &mut u32,
    count: u64,
    mut source: Source<'_>,
) -> Batch {
    let shared = &ex.shared;
    let mut live: Vec<LiveChild> = Vec::new();
    let mut started = 0;
    let _ = std::io::stdout().flush();
    for _ in 0..count {
        if shared.get(Stat::Stop) != 0
            || crate::scenario::interrupt_signal().is_some()
            || !source.take(shared)
        {
            break;
        }
        let index = *next_index;
        *next_index += 1;
        let child_seed = mix_seed(t.seed, mark, index);
        let pool_slot = wait_for_pool_slot(t, ex, &mut live);
        let ordinal = shared.stat(Stat::Timelines).fetch_add(1, SeqCst) + 1;
        let calls = t.rng.calls();
        match fork_timeline() {
            Ok(Forked::Child) => {
                let step = ForkStep {
                    calls,
                    seed: child_seed,
                };
                become_child(t, shared, step, ordinal, pool_slot);
                return Batch::Child;
            }
            Ok(Forked::Parent(pid)) => {
                started += 1;
                let child = LiveChild {
                    pid,
                    pool_slot,
                    calls,
                    seed: child_seed,
                    ordinal,
                };
                if pool_slot.is_some() {
                    live.push(child);
                } else {
                    let status = wait_for(pid);
                    finish(t, ex, &child, status);
                }
            }
            Err(err) => {
                shared.stat(Stat::Timelines).fetch_sub(1, SeqCst);
                source.give_back(shared);
                if let Some(slot) = pool_slot {
                    shared.release_slot(slot);
                }
                if shared.stat(Stat::RefusedForks).fetch_add(1, SeqCst) == 0 {
                    eprintln!("runq: not splitting at {mark:?}: {err:#}");
                }
                break;
            }
        }
    }
    while !live.is_empty() {
        reap_any(t, ex, &mut live);
    }
    Batch::Done(started)
}

/// With a window, a free pool slot (cleared), reaping children until one
/// frees up; `None` when running sequentially or when no child is left to
/// free one (the next child then runs while its parent waits).
fn wait_for_pool_slot(t: &mut Timeline, ex: &Explorer, live: &mut Vec<LiveChild>) -> Option<usize> {
    if ex.cfg.parallel == 0 {
        return None;
    }
    let slot = loop {
        if let Some(slot) = ex.shared.acquire_slot() {
            break Some(slot);
        }
        if live.is_empty() {
            break None;
        }
        reap_any(t, ex, live);
    };
    if let Some(slot) = slot {
        ex.shared.clear_slot(slot);
    }
    slot
}

/// In a freshly forked child: turn the parent's timeline into the child's,
/// one fork step deeper on its own seed.
fn become_child(
    t: &mut Timeline,
    shared: &Shared,
    step: ForkStep,
    ordinal: u64,
    pool_slot: Option<usize>,
) {
    t.seed = step.seed;
    t.depth += 1;
    t.rng.reseed(step.seed);
    t.recipe.forks.push(step);
    t.ordinal = ordinal;
    if let Some(slot) = pool_slot {
        t.slot = slot;
    }
    shared
        .stat(Stat::MaxDepthReached)
        .fetch_max(u64::from(t.depth), SeqCst);
}

/// Wait for one specific child, retrying on EINTR.
pub(crate) fn wait_for(pid: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            Ok(status) => return Some(status),
            Err(_) => return None,
        }
    }
}

fn reap_any(t: &mut Timeline, ex: &Explorer, live: &mut Vec<LiveChild>) {
    loop {
        let status = match waitpid(None::<Pid>, None) {
            Err(Errno::EINTR) => continue,
            Err(_) => {
                // No child left to wait for: the live list is stale.
                for child in live.drain(..) {
                    finish(t, ex, &child, None);
                }
                return;
            }
            Ok(status) => status,
        };
        let Some(pid) = status.pid() else { continue };
        if let Some(pos) = live.iter().position(|c| c.pid == pid) {
            let child = live.swap_remove(pos);
            finish(t, ex, &child, Some(status));
            return;
        }
    }
}

fn finish(t: &Timeline, ex: &Explorer, child: &LiveChild, status: Option<WaitStatus>) {
    let shared = &ex.shared;
    shared.merge_slot(child.pool_slot.unwrap_or(t.slot));
    if let Some(slot) = child.pool_slot {
        shared.release_slot(slot);
    }
    let recipe = t.recipe.child(child.calls, child.seed);
    account(
        shared,
        ex.cfg.stop_at_first_bug,
        &recipe,
        child.ordinal,
        status,
    );
}

/// Count a finished timeline: a bug when it exited 42, a crash when a
/// signal killed it or it exited with another non-zero code; the first of
/// each keeps its recipe.
pub(crate) fn account(
    shared: &Shared,
    stop_at_first_bug: bool,
    recipe: &Recipe,
    ordinal: u64,
    status: Option<WaitStatus>,
) {
    let (exit_code, signal) = match status {
        Some(WaitStatus::Exited(_, code)) => (Some(code), None),
        Some(WaitStatus::Signaled(_, sig, _)) => (None, Some(sig as i32)),
        _ => (None, None),
    };
    if exit_code == Some(0) {
        return;
    }
    let (stat, record) = if exit_code == Some(BUG_EXIT) {
        (Stat::Bugs, Record::Bug)
    } else {
        (Stat::Crashes, Record::Crash)
    };
    shared.stat(stat).fetch_add(1, SeqCst);
    shared.record_timeline(record, recipe, ordinal, encode_outcome(exit_code, signal));
    if stop_at_first_bug {
        shared.stat(Stat::Stop).store(1, SeqCst);
    }
}
