//! One case: a registered function on one topology with one scheduler
//! profile, named `fn_name::1n2l2c1t::profile` (prefixed by the module path
//! below the crate root, as libtest names tests).

use std::time::Duration;

use anyhow::Context as _;

use super::TestDef;
use crate::topology::TopoSpec;

/// Run time assumed for a case whose attribute gives no `duration` (a
/// scenario's default length).
pub const DEFAULT_RUN_ESTIMATE: Duration = Duration::from_secs(2);
/// Memory of a case's VM unless `memory = ...` says otherwise.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// What a case's default timeout allows for boot, scheduler attach and
/// shutdown under TCG, on top of ten times its run time.
const TIMEOUT_ALLOWANCE: Duration = Duration::from_secs(150);

#[derive(Debug, Clone)]
pub struct Case {
    /// The test's name as `--list` prints it.
    pub name: String,
    pub def: &'static TestDef,
    pub topology: TopoSpec,
    /// The profile's name and the scheduler arguments it stands for.
    pub profile: &'static str,
    pub args: Vec<String>,
    /// `duration = ...`: replaces the scenario's own duration.
    pub duration: Option<Duration>,
    pub memory_mib: u64,
    pub timeout: Duration,
}

impl Case {
    /// The function's name with its module path, without topology and
    /// profile (`spread`, or `sub::spread`).
    pub fn function(&self) -> String {
        qualified(self.def)
    }

    /// How long the scenario part is expected to take.
    pub fn run_estimate(&self) -> Duration {
        self.duration.unwrap_or(DEFAULT_RUN_ESTIMATE)
    }

    /// Cases with equal keys can share one boot: the same kernel, topology,
    /// memory, scheduler and scheduler arguments.
    pub fn boot_key(&self) -> String {
        format!(
            "kernel={} topology={} memory={} scheduler={} args={:?}",
            self.def.kernel.unwrap_or("-"),
            self.topology,
            self.memory_mib,
            self.def.scheduler.unwrap_or("-"),
            self.args
        )
    }
}

fn qualified(def: &TestDef) -> String {
    match def.module.split_once("::") {
        Some((_, below_root)) => format!("{below_root}::{}", def.name),
        None => def.name.to_string(),
    }
}

/// Expands every definition into its cases, sorted by name. The attribute
/// checked every value at compile time; an error here means the runtime
/// and compile-time grammars disagree, and names the test.
pub fn expand_all(defs: &[&'static TestDef]) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for def in defs {
        cases.extend(
            expand(def)
                .with_context(|| format!("{} ({}:{})", qualified(def), def.file, def.line))?,
        );
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(pair) = cases.windows(2).find(|w| w[0].name == w[1].name) {
        anyhow::bail!("two tests are named {:?}; rename one", pair[0].name);
    }
    Ok(cases)
}

/// The cases of one definition, topology-major.
pub fn expand(def: &'static TestDef) -> anyhow::Result<Vec<Case>> {
    let duration = def
        .duration
        .map(|text| crate::vm::parse_duration(text, "duration"))
        .transpose()?;
    let memory_mib = def
        .memory
        .map(crate::vm::parse_memory_mib)
        .transpose()?
        .unwrap_or(DEFAULT_MEMORY_MIB);
    let timeout = match def.timeout {
        Some(text) => crate::vm::parse_duration(text, "timeout")?,
        None => TIMEOUT_ALLOWANCE + duration.unwrap_or(DEFAULT_RUN_ESTIMATE) * 10,
    };
    let mut cases = Vec::new();
    for topology_text in def.topologies {
        let topology: TopoSpec = topology_text.parse()?;
        for (profile, args) in def.profiles {
            cases.push(Case {
                name: format!("{}::{topology_text}::{profile}", qualified(def)),
                def,
                topology,
                profile,
                args: args.iter().map(|a| a.to_string()).collect(),
                duration,
                memory_mib,
                timeout,
            });
        }
    }
    Ok(cases)
}
