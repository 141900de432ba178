//! Property tests of every text runq parses: work-type strings, durations,
//! topology specs, recipes, scenario TOML and report files.
//!
//! For any input: no panic. For invalid input: a bad-input error (exit 2)
//! whose message names the field or flag. For valid input: printing and
//! parsing again gives the same value.

use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use runq::error::{exit_code_for, EXIT_BAD_INPUT};
use runq::explore::Recipe;
use runq::report::RunReport;
use runq::scenario::catalog;
use runq::scenario::dsl::work_to_text;
use runq::scenario::toml::{from_toml_str, to_toml_string};
use runq::topology::TopoSpec;
use runq::workload::WorkType;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");

fn assert_bad_input(err: &anyhow::Error, names: &[&str]) {
    assert_eq!(exit_code_for(err), EXIT_BAD_INPUT, "not bad input: {err:#}");
    let text = format!("{err:#}");
    assert!(
        names.iter().any(|n| text.contains(n)),
        "{text:?} names none of {names:?}"
    );
}

/// Work types with every parameter, values within the accepted ranges.
fn valid_work() -> impl Strategy<Value = String> {
    let n = || 1u64..100_000;
    prop_oneof![
        Just("cpu_spin".to_string()),
        Just("yield_heavy".to_string()),
        Just("mixed".to_string()),
        (n(), n()).prop_map(|(a, b)| format!("bursty:burst_ms={a},sleep_ms={b}")),
        n().prop_map(|a| format!("pipe_io:burst_iters={a}")),
        n().prop_map(|a| format!("futex_ping_pong:spin_iters={a}")),
        (1u64..8, n()).prop_map(|(f, s)| format!("futex_fan_out:fan_out={f},spin_iters={s}")),
        (1u64..8, 1u64..4096, n(), n()).prop_map(|(f, k, o, s)| format!(
            "fan_out_compute:fan_out={f},footprint_kb={k},ops={o},sleep_us={s}"
        )),
        (1u64..4096, 1u64..1024)
            .prop_map(|(k, s)| format!("cache_pressure:size_kb={k},stride={s}")),
        prop::collection::vec(("spin|sleep|yield|io", 1u64..500), 1..5).prop_map(|phases| {
            let parts: Vec<String> = phases.iter().map(|(k, ms)| format!("{k}{ms}")).collect();
            format!("sequence:phases={}", parts.join("/"))
        }),
        (1u64..4096, 1u64..512, n()).prop_map(|(r, t, s)| format!(
            "page_fault_churn:region_kb={r},touches={t},spin_iters={s}"
        )),
        (2u64..8, n(), n()).prop_map(|(c, h, w)| format!(
            "mutex_contention:contenders={c},hold_iters={h},work_iters={w}"
        )),
        (2u64..8).prop_map(|d| format!("wake_chain:depth={d}")),
    ]
}

proptest! {
    #[test]
    fn work_strings_never_panic_and_errors_name_the_flag(text in "\\PC{0,60}") {
        if let Err(err) = WorkType::parse_cli(&text) {
            assert_bad_input(&err, &["--work"]);
        }
    }

    #[test]
    fn work_strings_near_the_grammar_never_panic(
        text in "[a-z_]{1,20}(:([a-z_]{1,12}=[0-9a-z/]{0,22},?){0,4})?"
    ) {
        if let Err(err) = WorkType::parse_cli(&text) {
            assert_bad_input(&err, &["--work"]);
        }
    }

    #[test]
    fn valid_work_strings_round_trip(text in valid_work()) {
        let work = WorkType::parse_cli(&text).unwrap();
        let printed = work_to_text(&work);
        prop_assert_eq!(WorkType::parse_cli(&printed).unwrap(), work);
    }

    #[test]
    fn huge_sizes_name_the_parameter_and_the_limit(
        which in 0usize..3,
        kb in (1u64 << 40)..u64::MAX,
    ) {
        let (text, field) = match which {
            0 => (format!("page_fault_churn:region_kb={kb}"), "region_kb"),
            1 => (format!("cache_pressure:size_kb={kb}"), "size_kb"),
            _ => (format!("fan_out_compute:footprint_kb={kb}"), "footprint_kb"),
        };
        let err = WorkType::parse_cli(&text).unwrap_err();
        assert_bad_input(&err, &[field]);
        prop_assert!(format!("{err:#}").contains("MemTotal"), "{err:#}");
    }

    #[test]
    fn a_repeated_parameter_is_called_duplicated(text in valid_work()) {
        let Some((_, params)) = text.split_once(':') else { return Ok(()) };
        let first = params.split(',').next().unwrap();
        let err = WorkType::parse_cli(&format!("{text},{first}")).unwrap_err();
        assert_bad_input(&err, &["duplicated"]);
    }

    #[test]
    fn durations_never_panic(text in "\\PC{0,30}") {
        let _ = runq::duration::parse(&text);
    }

    #[test]
    fn durations_near_the_grammar_never_panic(
        text in " ?[-+]?[0-9]{0,25}(\\.[0-9]{0,12})?([eE][-+]?[0-9]{0,4})? ?(ns|us|ms|s|sec|m|min|h|x|)"
    ) {
        if let Ok(d) = runq::duration::parse(&text) {
            // Whatever parses prints back to itself.
            prop_assert_eq!(runq::duration::parse(&runq::duration::format(d)).unwrap(), d);
        }
    }

    #[test]
    fn durations_round_trip(secs in 0u64..10_000_000, nanos in 0u32..1_000_000_000) {
        let d = Duration::new(secs, nanos);
        let printed = runq::duration::format(d);
        prop_assert_eq!(runq::duration::parse(&printed).unwrap(), d);
    }

    #[test]
    fn durations_with_units_round_trip(value in 0u64..100_000, unit in 0usize..6) {
        let text = format!("{value}{}", ["ns", "us", "ms", "s", "m", "h"][unit]);
        let d = runq::duration::parse(&text).unwrap();
        prop_assert_eq!(runq::duration::parse(&runq::duration::format(d)).unwrap(), d);
    }

    #[test]
    fn topology_specs_never_panic_and_errors_name_the_spec(text in "\\PC{0,24}") {
        if let Err(err) = text.parse::<TopoSpec>() {
            assert_bad_input(&err, &["topology spec"]);
        }
    }

    #[test]
    fn topology_specs_round_trip(n in 1usize..4, l in 1usize..4, c in 1usize..8, t in 1usize..3) {
        let spec: TopoSpec = format!("{n}n{l}l{c}c{t}t").parse().unwrap();
        prop_assert_eq!(spec.to_string().parse::<TopoSpec>().unwrap(), spec);
        // Documented: letters in either case, whitespace around ignored.
        let loose = format!(" {n}N{l}L{c}C{t}T\t");
        prop_assert_eq!(loose.parse::<TopoSpec>().unwrap(), spec);
    }

    #[test]
    fn recipes_never_panic_and_errors_name_the_recipe(text in "\\PC{0,60}") {
        if let Err(err) = Recipe::parse(&text) {
            assert_bad_input(&err, &["recipe"]);
        }
    }

    #[test]
    fn recipes_near_the_grammar_never_panic(text in "seed=[0-9x]{0,6}(;{1,2}(fork=)?[0-9]{0,4}@?(0x)?[0-9a-f]{0,17}){0,4};?") {
        if let Err(err) = Recipe::parse(&text) {
            assert_bad_input(&err, &["recipe"]);
        }
    }

    #[test]
    fn recipes_round_trip(seed: u64, mut forks in prop::collection::vec((0u64..1_000_000, any::<u64>()), 0..8)) {
        // Forks are listed in the order they happened: call counts never decrease.
        forks.sort_by_key(|(calls, _)| *calls);
        let mut text = format!("seed={seed}");
        for (calls, child) in &forks {
            text.push_str(&format!(";fork={calls}@{child:#x}"));
        }
        let recipe = Recipe::parse(&text).unwrap();
        prop_assert_eq!(Recipe::parse(&recipe.to_string()).unwrap(), recipe);
    }

    #[test]
    fn scenario_toml_never_panics_and_errors_are_bad_input(text in "\\PC{0,200}") {
        if let Err(err) = from_toml_str(&text, "fuzz.toml") {
            assert_bad_input(&err, &["fuzz.toml"]);
        }
    }
}

/// Catalog scenarios with a changed duration and worker count: printed as
/// TOML and read back, they are the same scenario.
#[test]
fn scenario_toml_round_trips() {
    let scenarios = catalog::all();
    proptest!(|(index in 0..scenarios.len(), ms in 1u64..600_000, workers in 1usize..64)| {
        let mut scenario = scenarios[index].clone();
        scenario.duration = Duration::from_millis(ms);
        for cgroup in &mut scenario.cgroups {
            for work in &mut cgroup.works {
                let set = work.work.set_size();
                work.workers = workers.div_ceil(set) * set;
            }
        }
        let text = to_toml_string(&scenario).unwrap();
        let back = from_toml_str(&text, "printed.toml").unwrap();
        prop_assert_eq!(to_toml_string(&back).unwrap(), text);
    });
}

/// Field values replaced by arbitrary TOML values in a real scenario file:
/// no panic, and errors name the file (and the field path when serde has
/// one).
#[test]
fn scenario_toml_with_wrong_values_never_panics() {
    let text = to_toml_string(&catalog::all()[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    proptest!(|(line in 0..lines.len(), value in "(-?[0-9]{1,22}|\"\\PC{0,12}\"|true|\\[\\]|\\{\\}|[0-9]+\\.[0-9]+)")| {
        let Some((key, _)) = lines[line].split_once(" = ") else { return Ok(()) };
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        edited[line] = format!("{key} = {value}");
        let edited = edited.join("\n");
        match from_toml_str(&edited, "edited.toml") {
            Err(err) => assert_bad_input(&err, &["edited.toml"]),
            Ok(scenario) => {
                let topology = runq::topology::Topology::from_spec_str("1n2l2c1t").unwrap();
                if let Err(err) = runq::scenario::validate(&scenario, &topology) {
                    prop_assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{:#}", err);
                }
            }
        }
    });
}

/// A real report, from a short real run.
fn real_report_json() -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.json");
    let status = Command::new(RUNQ)
        .args(["run", "steady", "--duration", "200ms", "--quiet", "--json"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.code().is_some_and(|c| c <= 1), "runq run: {status}");
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn report_files_round_trip_and_damaged_ones_are_bad_input() {
    let json = real_report_json();
    let report = RunReport::from_json(&json).unwrap();
    assert_eq!(RunReport::from_json(&report.to_json()).unwrap(), report);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let paths = leaf_paths(&value, String::new());
    proptest!(|(which in 0..paths.len(), replacement in json_value())| {
        let mut damaged = value.clone();
        *damaged.pointer_mut(&paths[which]).unwrap() = replacement;
        if let Err(err) = RunReport::from_json(&damaged.to_string()) {
            assert_bad_input(&err, &["report"]);
        }
    });
    proptest!(|(cut in 0..json.len())| {
        let Some(prefix) = json.get(..cut) else { return Ok(()) };
        let err = RunReport::from_json(prefix).unwrap_err();
        assert_bad_input(&err, &["report"]);
    });
}

#[test]
fn report_schema_versions_are_described_as_they_are() {
    let mut value: serde_json::Value = serde_json::from_str(&real_report_json()).unwrap();
    for (version, says) in [
        (serde_json::json!(-1), "-1 is not a version"),
        (serde_json::json!("1"), "the string \"1\""),
        (serde_json::Value::Null, "is null"),
        (serde_json::json!(99), "99 is not supported"),
    ] {
        value["schema_version"] = version;
        let err = RunReport::from_json(&value.to_string()).unwrap_err();
        assert_bad_input(&err, &["schema_version"]);
        assert!(format!("{err:#}").contains(says), "{err:#} lacks {says}");
    }
    value.as_object_mut().unwrap().remove("schema_version");
    let err = RunReport::from_json(&value.to_string()).unwrap_err();
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,16}".prop_map(serde_json::Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
    ]
}

/// JSON pointers to every leaf of `value`.
fn leaf_paths(value: &serde_json::Value, at: String) -> Vec<String> {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| {
                leaf_paths(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                )
            })
            .collect(),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .flat_map(|(i, v)| leaf_paths(v, format!("{at}/{i}")))
            .collect(),
        _ => vec![at],
    }
}
