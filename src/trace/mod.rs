//! Tracing: ptrace event source, state machine, breakpoints, DWARF lines, lcov.
