//! JSON report (versioned), text summary, compare.
