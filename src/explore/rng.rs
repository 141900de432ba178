//! The counting RNG and FNV-1a seed mixing.
//!
//! Every draw increments a call counter. A fork point is identified by the
//! number of draws made before it, so a replay can reseed at exactly the
//! same place: [`CountingRng::with_schedule`] applies each scheduled reseed
//! just before the draw that follows call number `calls`.

use std::collections::VecDeque;

use rand::RngCore;

/// FNV-1a 64-bit offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `hash`.
pub fn fnv1a_extend(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET, bytes)
}

/// The seed of child `index` forked at the mark `name` from a timeline
/// seeded `parent`: FNV-1a over parent seed (8 bytes LE), the name's
/// bytes, and the child index (4 bytes LE).
pub fn mix_seed(parent: u64, name: &str, index: u32) -> u64 {
    let h = fnv1a_extend(FNV_OFFSET, &parent.to_le_bytes());
    let h = fnv1a_extend(h, name.as_bytes());
    fnv1a_extend(h, &index.to_le_bytes())
}

/// SplitMix64 generator that counts its draws.
#[derive(Clone, Debug)]
pub struct CountingRng {
    state: u64,
    calls: u64,
    schedule: VecDeque<(u64, u64)>,
    applied: usize,
}

impl CountingRng {
    /// A generator seeded with `seed`, no draws made.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            calls: 0,
            schedule: VecDeque::new(),
            applied: 0,
        }
    }

    /// A generator that reseeds to `seed` just before the draw following
    /// draw number `calls`, for each `(calls, seed)` in order (a replay).
    pub fn with_schedule(seed: u64, schedule: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut rng = Self::new(seed);
        rng.schedule = schedule.into_iter().collect();
        rng
    }

    /// Restart the sequence from `seed`; the call counter keeps counting.
    pub fn reseed(&mut self, seed: u64) {
        self.state = seed;
    }

    /// Draws made so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Scheduled reseeds applied so far.
    pub fn applied(&self) -> usize {
        self.applied
    }

    /// Scheduled reseeds still waiting for their draw.
    pub fn pending(&self) -> usize {
        self.schedule.len()
    }

    /// Apply the scheduled reseeds whose call count has been reached
    /// (forks after a timeline's last draw); returns how many remain.
    pub fn settle(&mut self) -> usize {
        self.apply_schedule();
        self.schedule.len()
    }

    fn apply_schedule(&mut self) {
        while let Some(&(calls, seed)) = self.schedule.front() {
            if calls > self.calls {
                break;
            }
            self.schedule.pop_front();
            self.state = seed;
            self.applied += 1;
        }
    }

    /// Next 64-bit draw.
    pub fn draw(&mut self) -> u64 {
        if !self.schedule.is_empty() {
            self.apply_schedule();
        }
        self.calls += 1;
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RngCore for CountingRng {
    fn next_u32(&mut self) -> u32 {
        (self.draw() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.draw()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn counting_and_reseed() {
        let mut a = CountingRng::new(5);
        let first: Vec<u64> = (0..3).map(|_| a.draw()).collect();
        assert_eq!(a.calls(), 3);
        a.reseed(5);
        let again: Vec<u64> = (0..3).map(|_| a.draw()).collect();
        assert_eq!(first, again);
        assert_eq!(a.calls(), 6);
    }

    #[test]
    fn schedule_reseeds_before_the_next_draw() {
        let mut live = CountingRng::new(1);
        live.draw();
        live.draw();
        live.reseed(99);
        let after = live.draw();
        let mut replay = CountingRng::with_schedule(1, [(2, 99)]);
        replay.draw();
        replay.draw();
        assert_eq!(replay.draw(), after);
        assert_eq!(replay.applied(), 1);
    }
}
