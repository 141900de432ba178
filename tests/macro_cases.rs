//! Fixture test binary for tests/runq_test.rs: `#[runq::test]` functions
//! covering the attribute's forms, run through runq's own harness. It is a
//! `test = false` target: tests/runq_test.rs builds it and drives it with
//! libtest's command line (`--list`, `--exact`), checking names, skips,
//! host runs and a VM run.

use runq::report::RunReport;
use runq::scenario::catalog;
use runq::test::Context;

/// Names: 4 topologies x 2 profiles = 8 cases (listed, never run here).
#[runq::test(
    gauntlet = "small",
    scheduler = "scx_bpfland",
    profiles = { default = [], lowlat = ["--lowlatency"] },
    kernel = "sched_ext",
    duration = "1s"
)]
fn listed_only(ctx: &mut Context) -> anyhow::Result<RunReport> {
    ctx.run(&catalog::find("steady").expect("the catalog has steady"))
}

/// Runs on the host, on any host with 1 CPU; the default checks decide.
#[runq::test(host = true, topology = "1n1l1c1t", duration = "500ms")]
fn host_steady(ctx: &mut Context) -> anyhow::Result<RunReport> {
    ctx.run(&catalog::find("steady").expect("the catalog has steady"))
}

/// Asks for more than any CI machine here has: skipped with its reason.
#[runq::test(host = true, topology = "4n2l4c2t")]
fn host_too_large(_ctx: &mut Context) -> anyhow::Result<()> {
    anyhow::bail!("a case that is skipped must never run")
}

/// A body that asserts on the topology it runs on.
#[runq::test(host = true, topology = "1n1l1c1t")]
fn host_asserts(ctx: &mut Context) {
    assert!(ctx.topology().num_cpus() >= 1);
    assert_eq!(ctx.profile(), "default");
}

/// A body that fails: the harness must print its message and the rerun line.
#[runq::test(host = true, topology = "1n1l1c1t")]
fn host_fails(_ctx: &mut Context) -> anyhow::Result<()> {
    anyhow::bail!("this body fails on purpose")
}

/// In a VM (no scheduler): the body sees the requested topology.
#[runq::test(topology = "1n2l1c1t", duration = "500ms")]
fn vm_topology(ctx: &mut Context) -> anyhow::Result<RunReport> {
    let spec = ctx.topology().spec();
    anyhow::ensure!(
        spec == ctx.topology_spec(),
        "the guest sees {spec}, the case asked for {}",
        ctx.topology_spec()
    );
    ctx.run(&catalog::find("steady").expect("the catalog has steady"))
}

/// Shared boots: this case runs first in the group (cases run by name)
/// and leaves state behind on purpose: a process, a cgroup, a file in /tmp.
#[runq::test(topology = "1n2l1c1t")]
fn vm_a_leaves_state(_ctx: &mut Context) -> anyhow::Result<()> {
    std::process::Command::new("/bin/busybox")
        .args(["sleep", "1000"])
        .spawn()?;
    std::fs::create_dir("/sys/fs/cgroup/leaked")?;
    std::fs::write("/tmp/leaked", "state of an earlier case")?;
    Ok(())
}

/// ... and this one, in the same boot, must find none of it.
#[runq::test(topology = "1n2l1c1t")]
fn vm_b_finds_a_clean_guest(_ctx: &mut Context) -> anyhow::Result<()> {
    anyhow::ensure!(
        !std::path::Path::new("/sys/fs/cgroup/leaked").exists(),
        "a cgroup of an earlier case is still there"
    );
    anyhow::ensure!(
        !std::path::Path::new("/tmp/leaked").exists(),
        "a file of an earlier case is still in /tmp"
    );
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path().join("cmdline");
        let cmdline = std::fs::read(&path).unwrap_or_default();
        anyhow::ensure!(
            !cmdline.starts_with(b"/bin/busybox\0sleep"),
            "a process of an earlier case is still running ({})",
            path.display()
        );
    }
    Ok(())
}

/// Every preset expands to its topologies (listed, never run here).
#[runq::test(gauntlet = "small")]
fn preset_small(_ctx: &mut Context) {}

#[runq::test(gauntlet = "medium")]
fn preset_medium(_ctx: &mut Context) {}

#[runq::test(gauntlet = "smt")]
fn preset_smt(_ctx: &mut Context) {}

#[runq::test(gauntlet = "numa")]
fn preset_numa(_ctx: &mut Context) {}

fn main() {
    runq::test::main()
}
