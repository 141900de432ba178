//! `host = true` cases: whether this host can provide the case's topology
//! and scheduler, and running the body on the host in a child process (the
//! test binary again, for exactly this case).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::case::Case;
use super::child::RESULT_ENV;
use super::failure::CaseRun;
use super::outcome::CaseResult;
use crate::topology::{TopoSpec, Topology};

/// Temporary directories of host cases (result file, output).
const CASE_DIR_PREFIX: &str = "runq-case";

/// Why a case cannot run here. Under `CI=true` only `topology_too_large`
/// is an acceptable reason to skip: CI provides schedulers and kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub reason: String,
    pub topology_too_large: bool,
}

/// Whether the host lacks what a `host = true` case needs.
pub fn skip_reason(case: &Case, host: &Topology) -> Option<Skip> {
    if let Some(why) = topology_shortfall(&case.topology, host) {
        return Some(Skip {
            reason: why,
            topology_too_large: true,
        });
    }
    let scheduler = case.def.scheduler?;
    if !Path::new("/sys/kernel/sched_ext").is_dir() {
        return Some(Skip {
            reason: format!(
                "the host kernel {} has no sched_ext (/sys/kernel/sched_ext is missing), so \
                 {scheduler} cannot attach; boot a kernel with CONFIG_SCHED_CLASS_EXT=y or drop \
                 `host = true` to run it in a VM",
                crate::report::kernel_release()
            ),
            topology_too_large: false,
        });
    }
    if let Err(err) = find_scheduler(scheduler) {
        return Some(Skip {
            reason: format!("{err:#}"),
            topology_too_large: false,
        });
    }
    None
}

/// Why `host` cannot provide `wanted`, if it cannot: fewer NUMA nodes,
/// LLCs, cores, CPUs or SMT siblings than the case asks for.
pub fn topology_shortfall(wanted: &TopoSpec, host: &Topology) -> Option<String> {
    let have = host.spec();
    let cores_per_llc_max = have.cores_per_llc;
    let shortfalls = [
        ("NUMA nodes", host.nodes().len(), wanted.nodes),
        ("LLCs", host.llcs().len(), wanted.total_llcs()),
        ("cores", host.cores().len(), wanted.total_cores()),
        ("CPUs", host.num_cpus(), wanted.total_cpus()),
        (
            "threads per core",
            have.threads_per_core,
            wanted.threads_per_core,
        ),
        ("cores per LLC", cores_per_llc_max, wanted.cores_per_llc),
    ];
    let missing: Vec<String> = shortfalls
        .iter()
        .filter(|(_, have, want)| have < want)
        .map(|(what, have, want)| format!("{want} {what} (it has {have})"))
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "topology {wanted} is larger than this host ({}): the case needs {}",
            have,
            missing.join(", ")
        ))
    }
}

/// Finds a scheduler binary as the run will ([`crate::scheduler::find_binary`]).
pub fn find_scheduler(name: &str) -> anyhow::Result<PathBuf> {
    crate::scheduler::find_binary(name)
}

/// Runs the case's body on the host in a child process and collects its
/// result and output. A child that hangs past the case's timeout is
/// killed.
pub fn run_on_host(case: &Case) -> anyhow::Result<CaseRun> {
    crate::scratch::reap(&std::env::temp_dir(), CASE_DIR_PREFIX);
    let dir = crate::scratch::dir_in(&std::env::temp_dir(), CASE_DIR_PREFIX)?;
    let result_path = dir.path().join("result.json");
    let output_path = dir.path().join("output.log");
    let output = std::fs::File::create(&output_path)?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args([case.name.as_str(), "--exact", "--quiet", "--test-threads=1"])
        .env(RESULT_ENV, &result_path)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output);
    let started = Instant::now();
    let mut child = crate::vm::qemu::spawn_tied_to_parent(&mut command)?;
    let deadline = started + case.timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output =
        String::from_utf8_lossy(&std::fs::read(&output_path).unwrap_or_default()).into_owned();
    let result = std::fs::read_to_string(&result_path)
        .ok()
        .map(|text| CaseResult::from_json(&text))
        .transpose()?;
    let error = match (&result, status) {
        (Some(_), _) => None,
        (None, None) => Some(format!(
            "the body did not finish within {:.0}s and was killed",
            case.timeout.as_secs_f64()
        )),
        (None, Some(status)) => Some(format!(
            "the case's process ended ({status}) without a result"
        )),
    };
    Ok(CaseRun {
        result,
        output,
        error,
        console_tail: None,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(spec: &str) -> Topology {
        Topology::from_spec_str(spec).unwrap()
    }

    #[test]
    fn a_host_provides_every_topology_no_larger_in_any_dimension() {
        let big = host("2n2l4c2t");
        for fits in ["1n1l1c1t", "2n2l4c2t", "1n2l2c1t", "2n1l4c2t"] {
            assert_eq!(
                topology_shortfall(&fits.parse().unwrap(), &big),
                None,
                "{fits}"
            );
        }
    }

    #[test]
    fn the_shortfall_names_each_missing_dimension() {
        let small = host("1n1l2c1t");
        let why = topology_shortfall(&"2n1l2c2t".parse().unwrap(), &small).unwrap();
        assert!(why.contains("larger than this host (1n1l2c1t)"), "{why}");
        assert!(why.contains("2 NUMA nodes (it has 1)"), "{why}");
        assert!(why.contains("2 threads per core (it has 1)"), "{why}");
        assert!(why.contains("8 CPUs (it has 2)"), "{why}");
        // Same CPU count, other shape: two LLCs are not one.
        let why = topology_shortfall(&"1n2l1c1t".parse().unwrap(), &small).unwrap();
        assert!(why.contains("2 LLCs (it has 1)"), "{why}");
    }
}
