//! Named gauntlets: `gauntlet = "small"` expands to a fixed list of
//! topologies. `runq::test::PRESETS` repeats this table for the runtime
//! (documentation and listing); a test in runq keeps the two equal.

/// (name, topologies). Each preset varies one dimension at a time so a
/// failure points at the shape that causes it.
pub const PRESETS: &[(&str, &[&str])] = &[
    // Up to 4 CPUs: cheap enough to boot under TCG. One LLC, two LLCs,
    // SMT siblings, two NUMA nodes.
    ("small", &["1n1l2c1t", "1n2l2c1t", "1n1l2c2t", "2n1l2c1t"]),
    // 8 CPUs: LLC splits with SMT, NUMA with several LLCs.
    ("medium", &["1n2l4c1t", "1n2l2c2t", "2n2l2c1t", "2n1l2c2t"]),
    // SMT in every shape.
    ("smt", &["1n1l2c2t", "1n2l2c2t", "2n1l2c2t"]),
    // NUMA in every shape.
    ("numa", &["2n1l2c1t", "2n2l2c1t", "4n1l2c1t"]),
];

pub fn lookup(name: &str) -> Option<&'static [&'static str]> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, list)| *list)
}

/// "small (1n1l2c1t, ...), medium (...)" for error messages.
pub fn describe() -> String {
    PRESETS
        .iter()
        .map(|(name, list)| format!("{name} ({})", list.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}
