//! scx_bpfland under runq: each test runs on the four topologies of the
//! `small` gauntlet (one LLC, two LLCs, SMT, two NUMA nodes) with two
//! argument sets, in a VM booted for it, with the scheduler attached.
//!
//! ```sh
//! cargo nextest run --release -p scx-tests                      # every case
//! cargo nextest run --release -p scx-tests -E 'test(/::2n1l2c1t::/)'   # one topology
//! cargo nextest run --release -p scx-tests --partition count:1/4       # a CI shard
//! RUNQ_SHARED_BOOT=1 cargo test --release -p scx-tests         # one boot per topology x profile
//! RUNQ_BUDGET=10m cargo test --release -p scx-tests            # a subset covering every topology and profile
//! ```

use std::time::Duration;

use runq::prelude::*;
use runq::test::Context;
use runq::workload::payload::PayloadSpec;

/// Two CPU-bound workers per CPU in one cgroup: nobody starves, CPU time
/// is shared evenly.
#[runq::test(
    gauntlet = "small",
    scheduler = "scx_bpfland",
    profiles = { default = [], lowlat = ["--slice-us", "500", "--slice-us-lag", "0"] },
    kernel = "sched_ext",
    duration = "2s"
)]
fn cpu_hogs_share_evenly(ctx: &mut Context) -> anyhow::Result<RunReport> {
    let workers = ctx.topology().num_cpus() * 2;
    ctx.run(
        &Scenario::named("cpu_hogs")
            .cgroup(
                CgroupDef::named("hogs")
                    .workers(workers)
                    .work(WorkType::CpuSpin),
            )
            .step(Step::hold(HoldSpec::Fraction(1.0))),
    )
}

/// Two cgroups of CPU hogs with weights 100 and 300: each gets at least
/// its share of its fair part (the default checks weigh cgroups).
#[runq::test(
    gauntlet = "small",
    scheduler = "scx_bpfland",
    profiles = { default = [], lowlat = ["--slice-us", "500", "--slice-us-lag", "0"] },
    kernel = "sched_ext",
    duration = "2s"
)]
fn weighted_cgroups(ctx: &mut Context) -> anyhow::Result<RunReport> {
    let cpus = ctx.topology().num_cpus();
    ctx.run(
        &Scenario::named("weighted")
            .cgroup(
                CgroupDef::named("light")
                    .weight(100)
                    .workers(cpus)
                    .work(WorkType::CpuSpin),
            )
            .cgroup(
                CgroupDef::named("heavy")
                    .weight(300)
                    .workers(cpus)
                    .work(WorkType::CpuSpin),
            )
            .step(Step::hold(HoldSpec::Fraction(1.0))),
    )
}

/// Wakeup-heavy work beside CPU hogs: the interactive workers keep making
/// progress and the scheduler stays attached; the body asserts both.
#[runq::test(
    gauntlet = "small",
    scheduler = "scx_bpfland",
    profiles = { default = [], lowlat = ["--slice-us", "500", "--slice-us-lag", "0"] },
    kernel = "sched_ext",
    duration = "2s"
)]
fn wakeups_beside_hogs(ctx: &mut Context) -> anyhow::Result<()> {
    let cpus = ctx.topology().num_cpus();
    let report = ctx.run(
        &Scenario::named("wakeups")
            .cgroup(
                CgroupDef::named("hogs")
                    .workers(cpus)
                    .work(WorkType::CpuSpin),
            )
            .cgroup(
                CgroupDef::named("interactive")
                    .workers(2)
                    .work(WorkType::FutexPingPong { spin_iters: 100 }),
            )
            .step(Step::hold(HoldSpec::Fraction(1.0))),
    )?;
    anyhow::ensure!(
        report.checks.passed,
        "checks failed:\n{}",
        report.render_text()
    );
    let scheduler = report
        .scheduler
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the report has no scheduler section"))?;
    anyhow::ensure!(
        scheduler.ejection.is_none(),
        "scx_bpfland was ejected: {:?}",
        scheduler.ejection
    );
    Ok(())
}

/// Two cgroups on disjoint halves of the CPUs: no worker runs outside its
/// cpuset.
#[runq::test(
    gauntlet = "small",
    scheduler = "scx_bpfland",
    profiles = { default = [], lowlat = ["--slice-us", "500", "--slice-us-lag", "0"] },
    kernel = "sched_ext",
    duration = "2s"
)]
fn disjoint_cpusets(ctx: &mut Context) -> anyhow::Result<RunReport> {
    let half = (ctx.topology().num_cpus() / 2).max(1);
    ctx.run(
        &Scenario::named("disjoint")
            .cgroup(
                CgroupDef::named("left")
                    .cpuset(CpusetSpec::Disjoint { index: 0, of: 2 })
                    .workers(half * 2)
                    .work(WorkType::CpuSpin),
            )
            .cgroup(
                CgroupDef::named("right")
                    .cpuset(CpusetSpec::Disjoint { index: 1, of: 2 })
                    .workers(half * 2)
                    .work(WorkType::Bursty {
                        burst_ms: 5,
                        sleep_ms: 5,
                    }),
            )
            .step(Step::hold(HoldSpec::Fraction(1.0))),
    )
}

/// The cpusets of two loaded cgroups are swapped halfway: workers follow
/// their cgroup's new CPUs and keep running.
#[runq::test(
    gauntlet = "small",
    scheduler = "scx_bpfland",
    profiles = { default = [], lowlat = ["--slice-us", "500", "--slice-us-lag", "0"] },
    kernel = "sched_ext",
    duration = "2s"
)]
fn cpuset_swap_under_load(ctx: &mut Context) -> anyhow::Result<RunReport> {
    ctx.run(
        &Scenario::named("swap")
            .cgroup(
                CgroupDef::named("a")
                    .cpuset(CpusetSpec::Disjoint { index: 0, of: 2 })
                    .workers(2)
                    .work(WorkType::CpuSpin),
            )
            .cgroup(
                CgroupDef::named("b")
                    .cpuset(CpusetSpec::Disjoint { index: 1, of: 2 })
                    .workers(2)
                    .work(WorkType::YieldHeavy),
            )
            .step(Step::hold(HoldSpec::Fraction(0.5)))
            .step(Step::hold(HoldSpec::Fraction(0.5)).op(Op::swap_cpusets("a", "b"))),
    )
}

/// Pipe ping-pong and yielding workers: blocking and yielding paths of the
/// scheduler, judged by the default checks.
#[runq::test(
    gauntlet = "small",
    scheduler = "scx_bpfland",
    profiles = { default = [], lowlat = ["--slice-us", "500", "--slice-us-lag", "0"] },
    kernel = "sched_ext",
    duration = "2s"
)]
fn pipes_and_yields(ctx: &mut Context) -> anyhow::Result<RunReport> {
    ctx.run(
        &Scenario::named("pipes_and_yields")
            .cgroup(
                CgroupDef::named("pipes")
                    .workers(2)
                    .work(WorkType::PipeIo { burst_iters: 64 }),
            )
            .cgroup(
                CgroupDef::named("yielders")
                    .workers(2)
                    .work(WorkType::YieldHeavy),
            )
            .step(Step::hold(HoldSpec::Fraction(1.0))),
    )
}

/// Must fail: a second into the run, SysRq-S ejects the BPF scheduler
/// (`echo S > /proc/sysrq-trigger`). The run completes and the scheduler
/// check fails with the kernel's reason; that failure is expected.
#[runq::test(
    gauntlet = "small",
    scheduler = "scx_bpfland",
    profiles = { default = [], lowlat = ["--slice-us", "500", "--slice-us-lag", "0"] },
    kernel = "sched_ext",
    duration = "3s",
    expect_fail = "SysRq-S ejects scx_bpfland mid-run"
)]
fn forced_ejection(ctx: &mut Context) -> anyhow::Result<RunReport> {
    let mut sysrq = PayloadSpec::new("sysrq_s", "sh");
    sysrq.args = vec![
        "-c".to_string(),
        "sleep 1; echo S > /proc/sysrq-trigger".to_string(),
    ];
    sysrq.timeout = Duration::from_secs(20);
    ctx.run(
        &Scenario::named("forced_ejection")
            .cgroup(CgroupDef::named("hogs").workers(2).work(WorkType::CpuSpin))
            .payload(sysrq)
            .step(Step::hold(HoldSpec::Fraction(1.0))),
    )
}

fn main() {
    runq::test::main()
}
