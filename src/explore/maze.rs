//! The built-in maze: a bug behind a chain of rare random choices.
//!
//! The walker crosses [`MAZE_GATES`] gates. Before each gate it wanders a
//! corridor of 1-3 random turns (coverage only); then it picks one of
//! [`MAZE_DOORS`] doors, and only one opens; it gets [`MAZE_TRIES`] picks,
//! and if none opens the gate the walk ends.
//! Each opened gate is a `sometimes`, so exploration splits right behind
//! it; the treasure behind the last gate fails an `always` (the bug).
//! Independent seeds need about `(1 - (1 - 1/MAZE_DOORS)^MAZE_TRIES)^-MAZE_GATES`
//! (about 26 000) walks to find it.

use rand::RngCore;

use super::{always, cover, declare_sometimes, rng, sometimes};

/// Gates between the entrance and the treasure.
pub const MAZE_GATES: u64 = 7;
/// Doors per gate (one opens).
pub const MAZE_DOORS: u64 = 8;
/// Picks per gate.
pub const MAZE_TRIES: u64 = 2;
/// The `always` the treasure breaks.
pub const MAZE_BUG: &str = "maze treasure stays locked";

fn gate_name(gate: u64) -> String {
    format!("maze gate {gate} opened")
}

/// Walk the maze once; `path` receives every choice made.
pub fn walk(path: &mut Vec<u64>) {
    for gate in 0..MAZE_GATES {
        declare_sometimes(&gate_name(gate));
    }
    let mut rng = rng();
    for gate in 0..MAZE_GATES {
        let turns = 1 + rng.next_u64() % 3;
        path.push(turns);
        for _ in 0..turns {
            let turn = rng.next_u64() % 4;
            path.push(turn);
            cover("maze corridor", gate * 4 + turn);
        }
        let key = (gate * 5 + 3) % MAZE_DOORS;
        let mut opened = false;
        for _ in 0..MAZE_TRIES {
            let door = rng.next_u64() % MAZE_DOORS;
            path.push(door);
            if door == key {
                opened = true;
                break;
            }
        }
        if !sometimes(&gate_name(gate), opened) {
            return;
        }
    }
    always(MAZE_BUG, false);
}

/// Timelines independent seeds `root_seed, root_seed + 1, ...` need to
/// reach the treasure (None if `limit` walks are not enough).
pub fn independent_timelines_to_bug(root_seed: u64, limit: u64) -> Option<u64> {
    let mut path = Vec::new();
    (0..limit).find_map(|i| {
        path.clear();
        let report = super::run_plain(root_seed.wrapping_add(i), &mut || walk(&mut path));
        report.found_bug().then_some(i + 1)
    })
}
