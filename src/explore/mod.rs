//! Exploration: shared memory, coverage maps, energy, split loop, recipe, replay.
