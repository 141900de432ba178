//! The gauntlet at a glance: after a `cargo test` run of several
//! topologies or profiles, one table with a row per test function and a
//! column per (topology, profile), each cell saying how that case ended.
//! libtest's own lines list cases one by one, which hides the shape of a
//! failure (one topology failing every test, one profile failing one).
//!
//! Under nextest every case is its own process, so there is no table
//! there; nextest's own summary and JUnit output serve instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;

use super::case::Case;

/// How one case ended, as a cell of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Passed,
    /// `expect_fail`, and it failed as expected.
    ExpectedFailure,
    Failed,
    Skipped,
}

impl Cell {
    fn text(self) -> &'static str {
        match self {
            Cell::Passed => "ok",
            Cell::ExpectedFailure => "xfail",
            Cell::Failed => "FAIL",
            Cell::Skipped => "skip",
        }
    }
}

/// One case's place in the table and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub function: String,
    pub topology: String,
    pub profile: String,
    pub cell: Cell,
}

impl Entry {
    pub fn of(case: &Case, cell: Cell) -> Entry {
        Entry {
            function: case.function(),
            topology: case.topology.to_string(),
            profile: case.profile.to_string(),
            cell,
        }
    }
}

/// Cases that ended in this process, in the order they ended.
static ENDED: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Records how a case ended.
pub fn record(entry: Entry) {
    ENDED.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
}

/// The table of every case recorded so far, when there is more than one
/// column to show; `None` for a single case or a single column.
pub fn table() -> Option<String> {
    render(&ENDED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The table of `entries`: cases not among them show `-`.
pub fn render(entries: &[Entry]) -> Option<String> {
    let columns: BTreeSet<(&str, &str)> = entries
        .iter()
        .map(|e| (e.topology.as_str(), e.profile.as_str()))
        .collect();
    if columns.len() < 2 {
        return None;
    }
    let mut rows: BTreeMap<&str, BTreeMap<(&str, &str), Cell>> = BTreeMap::new();
    for e in entries {
        rows.entry(e.function.as_str())
            .or_default()
            .insert((e.topology.as_str(), e.profile.as_str()), e.cell);
    }
    let first = rows
        .keys()
        .map(|f| f.len())
        .max()
        .unwrap_or(0)
        .max("test".len());
    let width = columns
        .iter()
        .map(|(t, p)| t.len().max(p.len()))
        .max()
        .unwrap_or(0)
        .max("xfail".len());
    let mut out = String::new();
    let header = |out: &mut String, label: &str, part: &dyn Fn(&(&str, &str)) -> String| {
        let _ = write!(out, "  {label:<first$}");
        for column in &columns {
            let _ = write!(out, "  {:<width$}", part(column));
        }
        out.push('\n');
    };
    header(&mut out, "test", &|(t, _)| t.to_string());
    header(&mut out, "", &|(_, p)| p.to_string());
    for (function, cells) in &rows {
        let _ = write!(out, "  {function:<first$}");
        for column in &columns {
            let text = cells.get(column).map_or("-", |c| c.text());
            let _ = write!(out, "  {text:<width$}");
        }
        out.push('\n');
    }
    // Padding is for the columns between, not after the last.
    Some(out.lines().map(|l| format!("{}\n", l.trim_end())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: &str, topology: &str, profile: &str, cell: Cell) -> Entry {
        Entry {
            function: function.into(),
            topology: topology.into(),
            profile: profile.into(),
            cell,
        }
    }

    #[test]
    fn one_row_per_function_one_column_per_topology_and_profile() {
        let table = render(&[
            entry("hogs", "1n1l2c1t", "default", Cell::Passed),
            entry("hogs", "2n1l2c1t", "default", Cell::Failed),
            entry("ejection", "1n1l2c1t", "default", Cell::ExpectedFailure),
            entry("hogs", "1n1l2c1t", "lowlat", Cell::Skipped),
        ])
        .unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "  test      1n1l2c1t  1n1l2c1t  2n1l2c1t",
                "            default   lowlat    default",
                "  ejection  xfail     -         -",
                "  hogs      ok        skip      FAIL",
            ]
        );
    }

    #[test]
    fn a_single_column_needs_no_table() {
        assert_eq!(
            render(&[entry("hogs", "1n1l2c1t", "default", Cell::Passed)]),
            None
        );
        assert_eq!(render(&[]), None);
    }
}
