//! Capture bridge: tagged captures, bounded store, event log.
