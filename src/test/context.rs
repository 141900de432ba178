//! [`Context`]: what a test body receives. It knows the case (topology,
//! profile, scheduler arguments), runs scenarios on the kernel the body
//! runs on (the guest's, or the host's for `host = true`), with the case's
//! scheduler attached, and keeps every report for the verdict and the
//! failure message.

use std::time::Duration;

use super::case::Case;
use crate::report::RunReport;
use crate::scenario::{RunOptions, Scenario};
use crate::scheduler::SchedulerSpec;
use crate::topology::{TopoSpec, Topology};

pub struct Context {
    case: Case,
    topology: Topology,
    reports: Vec<RunReport>,
}

impl Context {
    /// A context for `case` on the machine this process runs on.
    pub(crate) fn new(case: Case) -> anyhow::Result<Context> {
        Ok(Context {
            case,
            topology: Topology::host()?,
            reports: Vec::new(),
        })
    }

    /// The case's full test name (`fn::1n2l2c1t::profile`).
    pub fn name(&self) -> &str {
        &self.case.name
    }

    /// The topology the case asked for.
    pub fn topology_spec(&self) -> TopoSpec {
        self.case.topology
    }

    /// The topology the body runs on, as read from sysfs (in a VM, the
    /// requested one; on the host, the host's).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The scheduler profile's name (`default` without `profiles`).
    pub fn profile(&self) -> &str {
        self.case.profile
    }

    /// The scheduler under test, if any.
    pub fn scheduler(&self) -> Option<&str> {
        self.case.def.scheduler
    }

    /// The profile's scheduler arguments.
    pub fn scheduler_args(&self) -> &[String] {
        &self.case.args
    }

    /// `duration = ...`, if given (it replaces each scenario's duration).
    pub fn duration(&self) -> Option<Duration> {
        self.case.duration
    }

    /// The options [`Context::run`] uses: the case's duration and its
    /// scheduler with the profile's arguments (started before the run's
    /// cgroups and workers, stopped after them; see [`crate::scheduler`]).
    pub fn options(&self) -> RunOptions {
        RunOptions {
            duration: self.case.duration,
            scheduler: self
                .case
                .def
                .scheduler
                .map(|binary| SchedulerSpec::new(binary).args(self.case.args.iter().cloned())),
            ..RunOptions::default()
        }
    }

    /// Runs a scenario with [`Context::options`] and returns its report
    /// (also kept for the failure message). Bad input and environment
    /// problems are errors; failed checks are in the report.
    pub fn run(&mut self, scenario: &Scenario) -> anyhow::Result<RunReport> {
        let options = self.options();
        self.run_with(scenario, &options)
    }

    /// Like [`Context::run`] with options of the body's choosing.
    pub fn run_with(
        &mut self,
        scenario: &Scenario,
        options: &RunOptions,
    ) -> anyhow::Result<RunReport> {
        let report = crate::scenario::run_scenario(scenario, options)?;
        self.reports.push(report.clone());
        Ok(report)
    }

    /// Every report so far, oldest first.
    pub fn reports(&self) -> &[RunReport] {
        &self.reports
    }

    pub(crate) fn into_reports(self) -> Vec<RunReport> {
        self.reports
    }
}
