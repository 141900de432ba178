//! Checks over worker reports, producing results with details.
