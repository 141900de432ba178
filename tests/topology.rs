//! Topology: the real host's sysfs, fake sysfs trees of other shapes, spec
//! strings and `runq topo`.

use std::fs;
use std::path::Path;
use std::process::Command;

use runq::error::{exit_code_for, EXIT_BAD_INPUT};
use runq::topology::{format_cpu_list, parse_cpu_list, TopoSpec, Topology};

/// One fake CPU: (cpu, package, core_id, siblings, LLC shared list, node).
type FakeCpu<'a> = (usize, usize, usize, &'a str, Option<&'a str>, Option<usize>);

/// Builds a fake sysfs tree. `cpus` holds (cpu, package, core_id, siblings,
/// llc shared list, node).
fn fake_sysfs(root: &Path, online: &str, cpus: &[FakeCpu]) {
    let cpu_dir = root.join("devices/system/cpu");
    fs::create_dir_all(&cpu_dir).unwrap();
    fs::write(cpu_dir.join("online"), format!("{online}\n")).unwrap();
    for &(cpu, package, core_id, siblings, llc, node) in cpus {
        let topo = cpu_dir.join(format!("cpu{cpu}/topology"));
        fs::create_dir_all(&topo).unwrap();
        fs::write(topo.join("physical_package_id"), format!("{package}\n")).unwrap();
        fs::write(topo.join("core_id"), format!("{core_id}\n")).unwrap();
        fs::write(topo.join("thread_siblings_list"), format!("{siblings}\n")).unwrap();
        let cache = cpu_dir.join(format!("cpu{cpu}/cache"));
        // L1 private (data and instruction), L2 private to the core.
        for (index, level, kind, shared) in [
            (0, 1, "Data", siblings),
            (1, 1, "Instruction", siblings),
            (2, 2, "Unified", siblings),
        ] {
            let dir = cache.join(format!("index{index}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("level"), format!("{level}\n")).unwrap();
            fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
            fs::write(dir.join("shared_cpu_list"), format!("{shared}\n")).unwrap();
        }
        if let Some(llc) = llc {
            let dir = cache.join("index3");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("level"), "3\n").unwrap();
            fs::write(dir.join("type"), "Unified\n").unwrap();
            fs::write(dir.join("shared_cpu_list"), format!("{llc}\n")).unwrap();
        }
        if let Some(node) = node {
            let dir = root.join(format!("devices/system/node/node{node}"));
            fs::create_dir_all(&dir).unwrap();
            let list = dir.join("cpulist");
            let mut members = fs::read_to_string(&list)
                .map(|t| parse_cpu_list(&t).unwrap())
                .unwrap_or_default();
            members.push(cpu);
            fs::write(list, format!("{}\n", format_cpu_list(&members))).unwrap();
        }
    }
}

/// Expected shape of the host, computed independently from the raw sysfs
/// files rather than by the code under test.
#[test]
fn host_topology_matches_sysfs() {
    let topo = Topology::host().unwrap();
    let online =
        parse_cpu_list(&fs::read_to_string("/sys/devices/system/cpu/online").unwrap()).unwrap();
    assert_eq!(topo.cpu_ids(), online);
    let mut core_sets: Vec<String> = online
        .iter()
        .map(|c| {
            fs::read_to_string(format!(
                "/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list"
            ))
            .unwrap()
            .trim()
            .to_string()
        })
        .collect();
    core_sets.sort();
    core_sets.dedup();
    assert_eq!(topo.cores().len(), core_sets.len());
    for cpu in &online {
        let siblings = parse_cpu_list(
            &fs::read_to_string(format!(
                "/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list"
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(topo.siblings(*cpu), siblings, "siblings of cpu{cpu}");
        let l3 = format!("/sys/devices/system/cpu/cpu{cpu}/cache/index3/shared_cpu_list");
        if let Ok(text) = fs::read_to_string(&l3) {
            let llc = topo.cpu(*cpu).unwrap().llc;
            assert_eq!(topo.llc_cpus(llc), parse_cpu_list(&text).unwrap(), "{l3}");
        }
    }
    // The spec string round-trips and describes the host's CPU count.
    let spec = topo.spec();
    assert_eq!(spec.to_string().parse::<TopoSpec>().unwrap(), spec);
    if topo.is_uniform() {
        assert_eq!(spec.total_cpus(), online.len());
    }
}

#[test]
fn smt_single_llc() {
    let dir = tempfile::tempdir().unwrap();
    // 4 cores x 2 threads, Linux-style numbering: sibling of N is N+4.
    let cpus: Vec<(usize, usize, usize, String)> = (0..8)
        .map(|c| (c, 0, c % 4, format!("{},{}", c % 4, c % 4 + 4)))
        .collect();
    let rows: Vec<_> = cpus
        .iter()
        .map(|(c, p, core, sib)| (*c, *p, *core, sib.as_str(), Some("0-7"), Some(0)))
        .collect();
    fake_sysfs(dir.path(), "0-7", &rows);
    let topo = Topology::from_sysfs(dir.path()).unwrap();
    assert_eq!(topo.spec().to_string(), "1n1l4c2t");
    assert!(topo.is_uniform());
    assert_eq!(topo.siblings(1), vec![1, 5]);
    assert_eq!(topo.siblings(6), vec![2, 6]);
    assert_eq!(topo.cores().len(), 4);
    assert_eq!(topo.llcs(), vec![(0..8).collect::<Vec<_>>()]);
}

#[test]
fn multi_llc_multi_node_with_offline_cpu() {
    let dir = tempfile::tempdir().unwrap();
    // 2 nodes x 2 LLCs x 2 cores, no SMT; cpu 7 is offline.
    let llc_lists = ["0-1", "2-3", "4-5", "6-7"];
    let rows: Vec<_> = (0..8)
        .map(|c| {
            let sib: &'static str = Box::leak(c.to_string().into_boxed_str());
            (c, c / 4, c % 4, sib, Some(llc_lists[c / 2]), Some(c / 4))
        })
        .collect();
    fake_sysfs(dir.path(), "0-6", &rows);
    let topo = Topology::from_sysfs(dir.path()).unwrap();
    assert_eq!(topo.num_cpus(), 7);
    assert_eq!(topo.nodes(), vec![vec![0, 1, 2, 3], vec![4, 5, 6]]);
    assert_eq!(
        topo.llcs(),
        vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6]]
    );
    assert_eq!(topo.llcs_of_node(1), vec![2, 3]);
    assert_eq!(topo.spec().to_string(), "2n2l2c1t");
    assert!(
        !topo.is_uniform(),
        "an offline CPU makes the shape non-uniform"
    );
    assert!(!topo.contains(7));
}

#[test]
fn no_cache_no_numa_falls_back_to_package() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        (0, 0, 0, "0", None, None),
        (1, 0, 1, "1", None, None),
        (2, 1, 0, "2", None, None),
        (3, 1, 1, "3", None, None),
    ];
    fake_sysfs(dir.path(), "0-3", &rows);
    // Remove the private caches too so only packages remain.
    for cpu in 0..4 {
        fs::remove_dir_all(
            dir.path()
                .join(format!("devices/system/cpu/cpu{cpu}/cache")),
        )
        .unwrap();
    }
    let topo = Topology::from_sysfs(dir.path()).unwrap();
    assert_eq!(topo.llcs(), vec![vec![0, 1], vec![2, 3]]);
    assert_eq!(topo.nodes(), vec![vec![0, 1, 2, 3]]);
    assert_eq!(topo.spec().to_string(), "1n2l2c1t");
}

#[test]
fn highest_shared_level_without_l3() {
    let dir = tempfile::tempdir().unwrap();
    // Only L1/L2; L2 shared by pairs of cores acts as the LLC.
    let rows = [
        (0, 0, 0, "0-1", None, Some(0)),
        (1, 0, 0, "0-1", None, Some(0)),
        (2, 0, 1, "2-3", None, Some(0)),
        (3, 0, 1, "2-3", None, Some(0)),
    ];
    fake_sysfs(dir.path(), "0-3", &rows);
    let topo = Topology::from_sysfs(dir.path()).unwrap();
    assert_eq!(topo.llcs(), vec![vec![0, 1], vec![2, 3]]);
    assert_eq!(topo.spec().to_string(), "1n2l1c2t");
}

#[test]
fn from_spec_shapes_and_matching() {
    let topo = Topology::from_spec_str("2n1l2c2t").unwrap();
    assert_eq!(topo.num_cpus(), 8);
    assert_eq!(topo.siblings(2), vec![2, 3]);
    assert_eq!(topo.nodes(), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
    assert!(topo.matches_spec(&"2n1l2c2t".parse().unwrap()));
    assert!(!topo.matches_spec(&"1n2l2c2t".parse().unwrap()));
    let json = serde_json::to_string(&topo).unwrap();
    assert_eq!(serde_json::from_str::<Topology>(&json).unwrap(), topo);
    let spec: TopoSpec = serde_json::from_str("\"1n2l4c1t\"").unwrap();
    assert_eq!(spec.total_cpus(), 8);
}

#[test]
fn spec_errors_name_the_bad_part() {
    let cases = [
        ("", "empty"),
        ("1n1l2c", "threads per core"),
        ("0n1l1c1t", "NUMA nodes must be at least 1"),
        ("1n1x2c1t", "expected 'l'"),
        ("1nl2c1t", "LLCs per node"),
        ("1n1l2c1t9", "trailing"),
        ("99999999999999999999999n1l1c1t", "too large"),
        ("64n64l64c64t", "at most"),
    ];
    for (text, expected) in cases {
        let err = text.parse::<TopoSpec>().unwrap_err();
        assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{text:?}");
        assert!(err.to_string().contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn topo_command_prints_spec_and_json() {
    let runq = env!("CARGO_BIN_EXE_runq");
    let host = Topology::host().unwrap();
    let text = Command::new(runq).arg("topo").output().unwrap();
    assert!(text.status.success());
    let stdout = String::from_utf8(text.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!("spec: {}", host.spec())),
        "{stdout}"
    );
    let json = Command::new(runq)
        .args(["topo", "--json"])
        .output()
        .unwrap();
    assert!(json.status.success());
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["spec"], host.spec().to_string());
    assert_eq!(value["cpus"].as_array().unwrap().len(), host.num_cpus());
}
