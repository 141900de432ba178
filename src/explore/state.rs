//! Layout of the exploration shared memory.
//!
//! One [`SharedWords`] mapping holds, in order: the counters ([`Stat`]),
//! the first bug's and first crash's recorded recipes, the assertion table
//! (name hash, kind, counts, best value, name bytes), the explored coverage
//! map (union over finished timelines) and one coverage bitmap per slot
//! (slot 0 for root timelines and for children that share their parent's
//! slot, slots 1..=P for the parallel window).

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use serde::Serialize;

use super::recipe::{ForkStep, Recipe};
use super::rng::fnv1a64;
use super::shm::SharedWords;

/// Bits in one coverage bitmap.
pub const BITMAP_BITS: usize = 8192;
const BITMAP_WORDS: usize = BITMAP_BITS / 64;
/// Assertion slots in the shared table.
pub const MAX_ASSERTIONS: usize = 256;
/// Bytes of an assertion's name kept in shared memory.
pub const NAME_BYTES: usize = 64;
const NAME_WORDS: usize = NAME_BYTES / 8;
/// Longest fork path a recorded recipe can hold (so the largest max depth).
pub const MAX_RECIPE_FORKS: usize = 64;
/// Largest parallel window (slots are tracked in one 64-bit mask).
pub const MAX_PARALLEL: usize = 63;

/// Shared counters.
#[derive(Clone, Copy)]
#[repr(usize)]
pub enum Stat {
    /// Timelines started (roots and forked children).
    Timelines,
    /// Root timelines started.
    Roots,
    /// Discoveries that split.
    ForkPoints,
    /// Timelines that exited 42 (found a bug).
    Bugs,
    /// Timelines killed by a signal or exiting with an unexpected code.
    Crashes,
    /// Energy not yet spent (one unit per timeline).
    EnergyLeft,
    /// Pool slots held by running children right now.
    LiveChildren,
    /// Most pool slots ever held at once.
    MaxLiveChildren,
    /// Set once exploration must stop forking (first bug found).
    Stop,
    /// Adaptive marks stopped because a batch added no coverage.
    BarrenMarks,
    /// Energy returned to the pool by barren marks.
    EnergyReturned,
    /// Free pool slots (bit i = slot i free).
    PoolFree,
    /// Set when the explored map already held coverage when the current
    /// root started (a warm start).
    Warm,
    /// Forks refused (not single-threaded, fork failed).
    RefusedForks,
    /// Assertions that did not fit in the table.
    AssertionOverflow,
    /// Deepest fork depth reached.
    MaxDepthReached,
}

const HEADER_WORDS: usize = 32;
// flag, ordinal, outcome, depth-of-path, seed, then (calls, seed) pairs
const RECIPE_WORDS: usize = 5 + 2 * MAX_RECIPE_FORKS;
// hash, kind, checks, passes, failures, best, has_best, name
const ENTRY_WORDS: usize = 7 + NAME_WORDS;

/// Which recorded recipe.
#[derive(Clone, Copy)]
pub enum Record {
    /// The first timeline that exited 42.
    Bug,
    /// The first timeline that crashed.
    Crash,
}

/// Assertion kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssertKind {
    /// Must hold at least once over the exploration.
    Sometimes,
    /// Must hold every time it is checked.
    Always,
    /// `value > threshold` at least once; best = largest value.
    SometimesGreater,
    /// `value < threshold` at least once; best = smallest value.
    SometimesLess,
    /// `value > threshold` every time; best = smallest value.
    AlwaysGreater,
    /// `value < threshold` every time; best = largest value.
    AlwaysLess,
}

impl AssertKind {
    fn code(self) -> u64 {
        self as u64 + 1
    }

    fn from_code(code: u64) -> Option<Self> {
        use AssertKind::*;
        [
            Sometimes,
            Always,
            SometimesGreater,
            SometimesLess,
            AlwaysGreater,
            AlwaysLess,
        ]
        .get(code.checked_sub(1)? as usize)
        .copied()
    }

    /// A `sometimes` kind (must fire at least once).
    pub fn is_sometimes(self) -> bool {
        matches!(
            self,
            AssertKind::Sometimes | AssertKind::SometimesGreater | AssertKind::SometimesLess
        )
    }

    /// For numeric kinds: does a larger value count as better?
    pub fn larger_is_better(self) -> Option<bool> {
        match self {
            AssertKind::SometimesGreater | AssertKind::AlwaysLess => Some(true),
            AssertKind::SometimesLess | AssertKind::AlwaysGreater => Some(false),
            _ => None,
        }
    }
}

/// One assertion's totals over the exploration.
#[derive(Clone, Debug, Serialize)]
pub struct AssertionSummary {
    /// Name (truncated to 64 bytes).
    pub name: String,
    /// Kind.
    pub kind: AssertKind,
    /// Times evaluated.
    pub checks: u64,
    /// Times the condition held.
    pub passes: u64,
    /// Times the condition failed.
    pub failures: u64,
    /// Best numeric value seen (numeric kinds).
    pub best: Option<i64>,
}

impl AssertionSummary {
    /// A `sometimes` that held at least once, or an `always` that never failed.
    pub fn satisfied(&self) -> bool {
        if self.kind.is_sometimes() {
            self.passes > 0
        } else {
            self.failures == 0
        }
    }
}

/// A recipe recorded in shared memory with the timeline's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RecordedTimeline {
    /// How to replay it.
    pub recipe: Recipe,
    /// Its position in the order timelines were started (1-based).
    pub ordinal: u64,
    /// Exit code, or None when a signal killed it.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
}

/// Outcome of one timeline process, encoded for shared memory.
pub fn encode_outcome(exit_code: Option<i32>, signal: Option<i32>) -> u64 {
    match (exit_code, signal) {
        (_, Some(sig)) => 0x1_0000 | sig as u64,
        (Some(code), None) => code as u64 & 0xff,
        (None, None) => 0x2_0000,
    }
}

fn decode_outcome(word: u64) -> (Option<i32>, Option<i32>) {
    if word & 0x1_0000 != 0 {
        (None, Some((word & 0xffff) as i32))
    } else if word & 0x2_0000 != 0 {
        (None, None)
    } else {
        (Some(word as i32), None)
    }
}

/// Map an i64 to a u64 that sorts the same way.
fn order_key(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

fn from_order_key(k: u64) -> i64 {
    (k ^ (1 << 63)) as i64
}

/// The exploration state shared by every timeline.
pub struct Shared {
    mem: SharedWords,
    slots: usize,
}

const BUG_AREA: usize = HEADER_WORDS;
const CRASH_AREA: usize = BUG_AREA + RECIPE_WORDS;
const ASSERT_AREA: usize = CRASH_AREA + RECIPE_WORDS;
const EXPLORED_AREA: usize = ASSERT_AREA + MAX_ASSERTIONS * ENTRY_WORDS;
const SLOT_AREA: usize = EXPLORED_AREA + BITMAP_WORDS;

impl Shared {
    /// Map the state for a window of `parallel` pool slots (0 = sequential)
    /// and `energy` units.
    pub fn new(parallel: usize, energy: u64) -> anyhow::Result<Self> {
        assert!(parallel <= MAX_PARALLEL);
        let slots = parallel + 1;
        let mem = SharedWords::new(SLOT_AREA + slots * BITMAP_WORDS)?;
        let shared = Self { mem, slots };
        shared.stat(Stat::EnergyLeft).store(energy, SeqCst);
        let pool: u64 = (1..=parallel).fold(0, |m, s| m | 1 << s);
        shared.stat(Stat::PoolFree).store(pool, SeqCst);
        Ok(shared)
    }

    fn w(&self) -> &[AtomicU64] {
        self.mem.words()
    }

    /// A counter.
    pub fn stat(&self, stat: Stat) -> &AtomicU64 {
        &self.w()[stat as usize]
    }

    /// Read a counter.
    pub fn get(&self, stat: Stat) -> u64 {
        self.stat(stat).load(SeqCst)
    }

    /// Take one unit of energy; false when none is left.
    pub fn take_energy(&self) -> bool {
        self.take_energy_up_to(1) == 1
    }

    /// Take up to `want` units; returns how many were taken.
    pub fn take_energy_up_to(&self, want: u64) -> u64 {
        let left = self.stat(Stat::EnergyLeft);
        let mut current = left.load(SeqCst);
        loop {
            let take = want.min(current);
            if take == 0 {
                return 0;
            }
            match left.compare_exchange(current, current - take, SeqCst, SeqCst) {
                Ok(_) => return take,
                Err(now) => current = now,
            }
        }
    }

    /// Give unspent energy back to the pool.
    pub fn return_energy(&self, units: u64) {
        self.stat(Stat::EnergyLeft).fetch_add(units, SeqCst);
    }

    /// Claim a free pool slot, or None when the window is full.
    pub fn acquire_slot(&self) -> Option<usize> {
        let free = self.stat(Stat::PoolFree);
        let mut mask = free.load(SeqCst);
        loop {
            if mask == 0 {
                return None;
            }
            let lowest = mask & mask.wrapping_neg();
            match free.compare_exchange(mask, mask & !lowest, SeqCst, SeqCst) {
                Ok(_) => {
                    let live = self.stat(Stat::LiveChildren).fetch_add(1, SeqCst) + 1;
                    self.stat(Stat::MaxLiveChildren).fetch_max(live, SeqCst);
                    return Some(lowest.trailing_zeros() as usize);
                }
                Err(now) => mask = now,
            }
        }
    }

    /// Give a pool slot back.
    pub fn release_slot(&self, slot: usize) {
        self.stat(Stat::LiveChildren).fetch_sub(1, SeqCst);
        self.stat(Stat::PoolFree).fetch_or(1 << slot, SeqCst);
    }

    fn bitmap(&self, slot: usize) -> &[AtomicU64] {
        assert!(slot < self.slots);
        let start = SLOT_AREA + slot * BITMAP_WORDS;
        &self.w()[start..start + BITMAP_WORDS]
    }

    fn explored(&self) -> &[AtomicU64] {
        &self.w()[EXPLORED_AREA..EXPLORED_AREA + BITMAP_WORDS]
    }

    /// Set the coverage bit for `hash` in a slot's bitmap.
    pub fn cover(&self, slot: usize, hash: u64) {
        let bit = (hash % BITMAP_BITS as u64) as usize;
        self.bitmap(slot)[bit / 64].fetch_or(1 << (bit % 64), SeqCst);
    }

    /// Zero a slot's bitmap.
    pub fn clear_slot(&self, slot: usize) {
        for word in self.bitmap(slot) {
            word.store(0, SeqCst);
        }
    }

    /// OR a slot's bitmap into the explored map; returns the new bits.
    pub fn merge_slot(&self, slot: usize) -> u64 {
        let mut new = 0;
        for (dst, src) in self.explored().iter().zip(self.bitmap(slot)) {
            let bits = src.load(SeqCst);
            if bits != 0 {
                let before = dst.fetch_or(bits, SeqCst);
                new += u64::from((bits & !before).count_ones());
            }
        }
        new
    }

    /// Bits set in the explored map.
    pub fn explored_bits(&self) -> u64 {
        self.explored()
            .iter()
            .map(|w| u64::from(w.load(SeqCst).count_ones()))
            .sum()
    }

    fn entry(&self, index: usize) -> &[AtomicU64] {
        let start = ASSERT_AREA + index * ENTRY_WORDS;
        &self.w()[start..start + ENTRY_WORDS]
    }

    /// Find or claim the table entry of an assertion.
    fn lookup(&self, name: &str, kind: AssertKind) -> Option<&[AtomicU64]> {
        let hash = fnv1a64(name.as_bytes()) | 1;
        let start = (hash % MAX_ASSERTIONS as u64) as usize;
        for probe in 0..MAX_ASSERTIONS {
            let entry = self.entry((start + probe) % MAX_ASSERTIONS);
            match entry[0].compare_exchange(0, hash, SeqCst, SeqCst) {
                Ok(_) => {
                    let bytes = name.as_bytes();
                    for (i, word) in entry[7..].iter().enumerate() {
                        let mut chunk = [0u8; 8];
                        let from = (i * 8).min(bytes.len()).min(NAME_BYTES);
                        let to = (i * 8 + 8).min(bytes.len()).min(NAME_BYTES);
                        chunk[..to - from].copy_from_slice(&bytes[from..to]);
                        word.store(u64::from_le_bytes(chunk), SeqCst);
                    }
                    entry[1].store(kind.code(), SeqCst);
                    return Some(entry);
                }
                Err(existing) if existing == hash => return Some(entry),
                Err(_) => continue,
            }
        }
        self.stat(Stat::AssertionOverflow).fetch_add(1, SeqCst);
        None
    }

    /// Register an assertion without evaluating it (so a `sometimes` that
    /// is never reached is still reported as never fired).
    pub fn declare(&self, name: &str, kind: AssertKind) {
        self.lookup(name, kind);
    }

    /// Record one evaluation. Returns true when it is a discovery: the
    /// first pass of a `sometimes` kind, or a strictly better best value.
    pub fn record(&self, name: &str, kind: AssertKind, cond: bool, value: Option<i64>) -> bool {
        let Some(entry) = self.lookup(name, kind) else {
            return false;
        };
        entry[2].fetch_add(1, SeqCst);
        let mut discovery = false;
        if cond {
            let before = entry[3].fetch_add(1, SeqCst);
            discovery |= before == 0 && kind.is_sometimes();
        } else {
            entry[4].fetch_add(1, SeqCst);
        }
        if let (Some(v), Some(larger)) = (value, kind.larger_is_better()) {
            let key = order_key(v);
            if entry[6].swap(1, SeqCst) == 0 {
                entry[5].store(key, SeqCst);
            } else {
                let before = if larger {
                    entry[5].fetch_max(key, SeqCst)
                } else {
                    entry[5].fetch_min(key, SeqCst)
                };
                let improved = if larger { key > before } else { key < before };
                discovery |= improved && kind.is_sometimes();
            }
        }
        discovery
    }

    /// Every assertion in the table.
    pub fn assertions(&self) -> Vec<AssertionSummary> {
        let mut out = Vec::new();
        for index in 0..MAX_ASSERTIONS {
            let e = self.entry(index);
            if e[0].load(SeqCst) == 0 {
                continue;
            }
            let Some(kind) = AssertKind::from_code(e[1].load(SeqCst)) else {
                continue;
            };
            let mut bytes: Vec<u8> = e[7..]
                .iter()
                .flat_map(|w| w.load(SeqCst).to_le_bytes())
                .collect();
            while bytes.last() == Some(&0) {
                bytes.pop();
            }
            out.push(AssertionSummary {
                name: String::from_utf8_lossy(&bytes).into_owned(),
                kind,
                checks: e[2].load(SeqCst),
                passes: e[3].load(SeqCst),
                failures: e[4].load(SeqCst),
                best: (e[6].load(SeqCst) != 0).then(|| from_order_key(e[5].load(SeqCst))),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn area(&self, which: Record) -> &[AtomicU64] {
        let start = match which {
            Record::Bug => BUG_AREA,
            Record::Crash => CRASH_AREA,
        };
        &self.w()[start..start + RECIPE_WORDS]
    }

    /// Save a timeline's recipe if none was saved yet; true when saved.
    pub fn record_timeline(
        &self,
        which: Record,
        recipe: &Recipe,
        ordinal: u64,
        outcome: u64,
    ) -> bool {
        let area = self.area(which);
        if area[0].compare_exchange(0, 1, SeqCst, SeqCst).is_err() {
            return false;
        }
        area[1].store(ordinal, SeqCst);
        area[2].store(outcome, SeqCst);
        let forks = recipe.forks.len().min(MAX_RECIPE_FORKS);
        area[3].store(forks as u64, SeqCst);
        area[4].store(recipe.seed, SeqCst);
        for (i, fork) in recipe.forks.iter().take(forks).enumerate() {
            area[5 + 2 * i].store(fork.calls, SeqCst);
            area[6 + 2 * i].store(fork.seed, SeqCst);
        }
        area[0].store(2, SeqCst);
        true
    }

    /// The recorded timeline, if any.
    pub fn recorded(&self, which: Record) -> Option<RecordedTimeline> {
        let area = self.area(which);
        if area[0].load(SeqCst) != 2 {
            return None;
        }
        let forks = area[3].load(SeqCst) as usize;
        let recipe = Recipe {
            seed: area[4].load(SeqCst),
            forks: (0..forks)
                .map(|i| ForkStep {
                    calls: area[5 + 2 * i].load(SeqCst),
                    seed: area[6 + 2 * i].load(SeqCst),
                })
                .collect(),
        };
        let (exit_code, signal) = decode_outcome(area[2].load(SeqCst));
        Some(RecordedTimeline {
            recipe,
            ordinal: area[1].load(SeqCst),
            exit_code,
            signal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assertion_table_records_and_names() {
        let s = Shared::new(2, 10).unwrap();
        assert!(s.record("a", AssertKind::Sometimes, true, None));
        assert!(!s.record("a", AssertKind::Sometimes, true, None));
        assert!(!s.record("b", AssertKind::SometimesGreater, false, Some(-5)));
        assert!(s.record("b", AssertKind::SometimesGreater, false, Some(-1)));
        assert!(!s.record("b", AssertKind::SometimesGreater, false, Some(-3)));
        let long = "x".repeat(100);
        s.record(&long, AssertKind::Always, false, None);
        let all = s.assertions();
        assert_eq!(all.len(), 3);
        let b = all.iter().find(|a| a.name == "b").unwrap();
        assert_eq!((b.checks, b.passes, b.best), (3, 0, Some(-1)));
        assert!(all
            .iter()
            .any(|a| a.name.len() == NAME_BYTES && a.failures == 1));
    }

    #[test]
    fn slots_energy_and_recipes() {
        let s = Shared::new(2, 3).unwrap();
        assert_eq!(s.take_energy_up_to(5), 3);
        assert!(!s.take_energy());
        s.return_energy(1);
        assert!(s.take_energy());
        let a = s.acquire_slot().unwrap();
        let b = s.acquire_slot().unwrap();
        assert!(s.acquire_slot().is_none());
        assert_eq!(s.get(Stat::MaxLiveChildren), 2);
        s.release_slot(a);
        s.release_slot(b);
        s.cover(a, 12345);
        assert_eq!(s.merge_slot(a), 1);
        assert_eq!(s.merge_slot(a), 0);
        let r = Recipe::root(9).child(4, 77);
        assert!(s.record_timeline(Record::Bug, &r, 5, encode_outcome(Some(42), None)));
        assert!(!s.record_timeline(Record::Bug, &Recipe::root(1), 6, 0));
        let got = s.recorded(Record::Bug).unwrap();
        assert_eq!((got.recipe, got.ordinal, got.exit_code), (r, 5, Some(42)));
    }
}
