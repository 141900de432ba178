//! What a check produces: one [`CheckOutcome`] per check, gathered in an
//! [`AssertResult`] whose `passed` is the conjunction of them all.

use serde::{Deserialize, Serialize};

/// The result of one check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CheckOutcome {
    pub name: String,
    pub passed: bool,
    /// Nothing to check (no bound set, no samples, disabled); counts as
    /// passed.
    #[serde(default)]
    pub skipped: bool,
    pub summary: String,
    /// One line per offender (on failure) or per notable fact.
    pub details: Vec<String>,
    /// The measured figure the limit applies to (worst case), if any.
    pub value: Option<f64>,
    pub limit: Option<f64>,
    /// Set on a failed check when foreign load on the run's CPUs was high
    /// enough to explain it: the figures (see [`crate::host::HostNoise`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_busy: Option<String>,
}

impl CheckOutcome {
    /// A check that ran, passed or not, with its one-line summary.
    pub fn new(name: &str, passed: bool, summary: String) -> Self {
        CheckOutcome {
            name: name.to_string(),
            passed,
            skipped: false,
            summary,
            details: Vec::new(),
            value: None,
            limit: None,
            host_busy: None,
        }
    }

    /// A check that had nothing to look at.
    pub fn skipped(name: &str, why: impl Into<String>) -> Self {
        CheckOutcome {
            skipped: true,
            ..CheckOutcome::new(name, true, why.into())
        }
    }

    /// Records the measured figure (dropped unless finite) and its limit.
    pub fn measured(mut self, value: Option<f64>, limit: Option<f64>) -> Self {
        self.value = value.filter(|v| v.is_finite());
        self.limit = limit;
        self
    }

    /// `PASS`, `FAIL` or `SKIP`.
    pub fn verdict(&self) -> &'static str {
        match (self.passed, self.skipped) {
            (_, true) => "SKIP",
            (true, false) => "PASS",
            (false, false) => "FAIL",
        }
    }
}

/// All check results; `passed` is true when every check passed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AssertResult {
    pub passed: bool,
    pub checks: Vec<CheckOutcome>,
}

impl AssertResult {
    /// Builds a result from outcomes.
    pub fn from_checks(checks: Vec<CheckOutcome>) -> Self {
        AssertResult {
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }

    /// Adds an outcome (e.g. a payload's own check) and updates `passed`.
    pub fn push(&mut self, outcome: CheckOutcome) {
        self.passed &= outcome.passed;
        self.checks.push(outcome);
    }

    /// The outcome of a check by name.
    pub fn get(&self, name: &str) -> Option<&CheckOutcome> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The checks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &CheckOutcome> {
        self.checks.iter().filter(|c| !c.passed)
    }
}
