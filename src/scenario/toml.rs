//! The scenario file format: TOML with exactly the fields of
//! [`super::dsl::Scenario`]. See `scenarios/example.toml` for a commented
//! example and the README for the reference.
//!
//! Parse errors name the field path (`steps[1].ops[0].op`), the line, and
//! serde's own explanation (unknown field or variant with the accepted
//! ones, missing field, wrong type).

use std::path::Path;

use super::dsl::Scenario;
use crate::error::RunqError;

/// Parses a scenario from TOML text; `origin` (a file name) prefixes errors.
pub fn from_toml_str(text: &str, origin: &str) -> anyhow::Result<Scenario> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let line = inner
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let message = inner.message().trim().to_owned();
        let location = match line {
            Some(line) => format!("{origin}:{line}"),
            None => origin.to_owned(),
        };
        let field = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        RunqError::bad_input(format!("{location}: {field}{message}"))
    })
}

/// Reads and parses a scenario file.
pub fn from_toml_file(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        RunqError::bad_input(format!(
            "cannot read scenario file {}: {err}; give a readable .toml file or a name from `runq list`",
            path.display()
        ))
    })?;
    from_toml_str(&text, &path.display().to_string())
}

/// TOML text of a scenario (catalog entries can be dumped and edited).
pub fn to_toml_string(scenario: &Scenario) -> anyhow::Result<String> {
    Ok(toml::to_string_pretty(scenario)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::dsl::{CpusetSpec, HoldSpec, Op};
    use crate::workload::{AffinityIntent, CloneMode, SchedPolicy};

    const GOOD: &str = r#"
name = "t"
duration = "1s"
[[cgroups]]
name = "a"
cpuset = { exact = [0] }
[[cgroups.works]]
work = "bursty:burst_ms=5,sleep_ms=5"
workers = 2
clone_mode = "thread"
affinity = { random_subset = { count = 1 } }
policy = "fifo:10"
[[steps]]
hold = { loop = { every = "50ms", fraction = 0.5 } }
[[steps.ops]]
op = "set_affinity"
cgroup = "a"
affinity = "single_cpu"
"#;

    /// Files written before the policy had one text spelling still read.
    #[test]
    fn reads_the_older_policy_tables() {
        for (table, policy) in [
            ("{ fifo = 10 }", SchedPolicy::Fifo(10)),
            ("{ round_robin = 3 }", SchedPolicy::RoundRobin(3)),
        ] {
            let text = GOOD.replace(r#""fifo:10""#, table);
            let s = from_toml_str(&text, "t.toml").unwrap();
            assert_eq!(s.cgroups[0].works[0].policy, policy, "{table}");
        }
        let err =
            from_toml_str(&GOOD.replace(r#""fifo:10""#, r#""fifo(10)""#), "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("fifo:PRIO"), "{err:#}");
    }

    #[test]
    fn parses_every_form() {
        let s = from_toml_str(GOOD, "t.toml").unwrap();
        assert_eq!(s.duration, std::time::Duration::from_secs(1));
        let w = &s.cgroups[0].works[0];
        assert_eq!(w.clone_mode, CloneMode::Thread);
        assert_eq!(w.affinity, AffinityIntent::RandomSubset { count: 1 });
        assert_eq!(w.policy, SchedPolicy::Fifo(10));
        assert_eq!(s.cgroups[0].cpuset, Some(CpusetSpec::Exact(vec![0])));
        assert!(matches!(s.steps[0].hold, HoldSpec::Loop { .. }));
        assert_eq!(
            s.steps[0].ops[0],
            Op::SetAffinity {
                cgroup: "a".into(),
                affinity: AffinityIntent::SingleCpu
            }
        );
    }

    #[test]
    fn round_trips_through_text() {
        let s = from_toml_str(GOOD, "t.toml").unwrap();
        let text = to_toml_string(&s).unwrap();
        let back = from_toml_str(&text, "again.toml").unwrap();
        assert_same(&back, &s, "GOOD");
    }

    /// The whole scenario, every field, compared through its serialized form.
    fn assert_same(back: &Scenario, original: &Scenario, what: &str) {
        assert_eq!(
            serde_json::to_value(back).unwrap(),
            serde_json::to_value(original).unwrap(),
            "{what} changed through TOML"
        );
    }

    #[test]
    fn catalog_round_trips_through_text() {
        for s in crate::scenario::catalog::all() {
            let text = to_toml_string(&s).unwrap();
            let back = from_toml_str(&text, &s.name).unwrap_or_else(|e| panic!("{text}\n{e:#}"));
            assert_same(&back, &s, &s.name);
        }
    }

    fn err(text: &str) -> String {
        let e = from_toml_str(text, "bad.toml").unwrap_err();
        assert_eq!(
            crate::error::exit_code_for(&e),
            crate::error::EXIT_BAD_INPUT
        );
        format!("{e:#}")
    }

    #[test]
    fn unknown_op_names_the_path() {
        let e = err("name = \"t\"\n[[steps]]\nhold = { fraction = 1.0 }\n[[steps.ops]]\nop = \"frobnicate\"\n");
        assert!(e.contains("steps[0].ops[0]"), "{e}");
        assert!(e.contains("frobnicate") && e.contains("add_cgroup"), "{e}");
    }

    #[test]
    fn unknown_and_missing_fields_name_the_path() {
        let e = err("name = \"t\"\n[[cgroups]]\nname = \"a\"\ncolour = 1\n");
        assert!(e.contains("cgroups[0]") && e.contains("colour"), "{e}");
        let e = err(
            "name = \"t\"\n[[cgroups]]\nname = \"a\"\n[[cgroups.works]]\nwork = \"cpu_spin\"\n",
        );
        assert!(
            e.contains("cgroups[0].works[0]") && e.contains("workers"),
            "{e}"
        );
        let e = err("name = \"t\"\n[[cgroups]]\nname = \"a\"\n[[cgroups.works]]\nwork = \"warp_drive\"\nworkers = 1\n");
        assert!(
            e.contains("cgroups[0].works[0].work") && e.contains("warp_drive"),
            "{e}"
        );
        let e = err("name = \"t\"\nduration = \"5 parsecs\"\n");
        assert!(e.contains("duration"), "{e}");
    }

    #[test]
    fn example_file_parses_and_validates_on_two_cpus() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/example.toml");
        let s = from_toml_file(&path).unwrap();
        let topo = crate::topology::Topology::from_spec_str("1n1l2c1t").unwrap();
        crate::scenario::validate(&s, &topo).unwrap();
    }
}
