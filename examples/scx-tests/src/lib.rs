//! Nothing here: the tests live in tests/bpfland.rs.
