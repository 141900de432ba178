//! Canned scenarios, by family. Each passes on a healthy kernel on a
//! 2-CPU host that also runs other work: thresholds are the documented
//! defaults unless a scenario says why it changes one.

use std::time::Duration;

use super::dsl::{CgroupDef, CpusetSpec, HoldSpec, Op, Scenario, Step, WorkSpec};
use crate::check::Thresholds;
use crate::workload::{AffinityIntent, SchedPolicy, WorkType};

/// Families, in `runq list` order.
pub const FAMILIES: &[&str] = &[
    "basic",
    "cpuset",
    "dynamic",
    "affinity",
    "stress",
    "nested",
    "interaction",
    "performance",
];

/// Every canned scenario, family by family.
pub fn all() -> Vec<Scenario> {
    let mut out = Vec::new();
    out.extend(basic());
    out.extend(cpuset());
    out.extend(dynamic());
    out.extend(affinity());
    out.extend(stress());
    out.extend(nested());
    out.extend(interaction());
    out.extend(performance());
    out
}

/// The canned scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

/// Names of every canned scenario.
pub fn names() -> Vec<String> {
    all().into_iter().map(|s| s.name).collect()
}

fn scenario(name: &str, family: &str, description: &str) -> Scenario {
    Scenario::named(name)
        .family(family)
        .description(description)
}

/// The bound of the nice and weight scenarios: each CPU-bound worker within
/// a quarter of the share the kernel's weight tables give it. The kernel's
/// own scheduler lands within a few percent; a scheduler that ignores nice
/// values or cgroup weights misses by half or more.
fn share_bound() -> Thresholds {
    Thresholds {
        max_share_error: Some(0.25),
        ..Default::default()
    }
}

/// The wake latency bound of the latency scenarios: a p99 of 50 ms is far
/// above a healthy kernel's on a loaded 2-CPU host, far below a stall.
fn wake_bound_50ms() -> Thresholds {
    Thresholds {
        max_wake_p99_us: Some(50_000.0),
        ..Default::default()
    }
}

fn spin(workers: usize) -> WorkSpec {
    WorkSpec::new(WorkType::CpuSpin, workers)
}

fn work(text: &str, workers: usize) -> WorkSpec {
    WorkSpec::new(
        WorkType::parse_cli(text).unwrap_or_else(|e| panic!("catalog work type {text}: {e:#}")),
        workers,
    )
}

fn cg(name: &str, works: Vec<WorkSpec>) -> CgroupDef {
    CgroupDef::new(name, works)
}

fn half(index: usize) -> CpusetSpec {
    CpusetSpec::Disjoint { index, of: 2 }
}

fn frac(f: f64) -> HoldSpec {
    HoldSpec::Fraction(f)
}

fn name(s: &str) -> String {
    s.to_owned()
}

fn basic() -> Vec<Scenario> {
    vec![
        scenario(
            "steady",
            "basic",
            "one cgroup of CPU spinners on every CPU: progress, fairness, no stalls",
        )
        .cgroup(cg("cg0", vec![spin(4)])),
        scenario(
            "two_cgroups",
            "basic",
            "two cgroups of spinners sharing all CPUs get comparable CPU",
        )
        .cgroup(cg("cg0", vec![spin(2)]))
        .cgroup(cg("cg1", vec![spin(2)])),
        scenario(
            "mixed_work",
            "basic",
            "spinners, mixed spin/yield/sleep workers and bursty sleepers in one cgroup all progress",
        )
        .cgroup(cg(
            "cg0",
            vec![
                spin(2),
                work("mixed", 2),
                work("bursty:burst_ms=5,sleep_ms=5", 2),
            ],
        )),
        scenario(
            "yielders",
            "basic",
            "workers that yield constantly share the CPUs evenly among themselves",
        )
        .cgroup(cg("cg0", vec![work("yield_heavy", 4)])),
        scenario(
            "thread_workers",
            "basic",
            "thread-mode spinners (one host process per work) behave like forked ones",
        )
        .cgroup(cg("cg0", vec![spin(2).threads()]))
        .cgroup(cg("cg1", vec![spin(2)])),
    ]
}

fn cpuset() -> Vec<Scenario> {
    vec![
        scenario(
            "cpuset_disjoint",
            "cpuset",
            "two cgroups on disjoint halves of the CPUs never leave their cpuset",
        )
        .cgroup(cg("cg0", vec![spin(2)]).cpuset(half(0)))
        .cgroup(cg("cg1", vec![spin(2)]).cpuset(half(1))),
        scenario(
            "cpuset_overlap",
            "cpuset",
            "overlapping cpusets: workers stay inside their own, shared CPUs are split",
        )
        .cgroup(cg("cg0", vec![spin(2)]).cpuset(CpusetSpec::Overlapping {
            index: 0,
            of: 2,
            overlap: 0.5,
        }))
        .cgroup(cg("cg1", vec![spin(2)]).cpuset(half(1))),
        scenario(
            "cpuset_swap",
            "cpuset",
            "two cgroups exchange disjoint cpusets halfway through",
        )
        .cgroup(cg("cg0", vec![spin(2)]).cpuset(half(0)))
        .cgroup(cg("cg1", vec![spin(2)]).cpuset(half(1)))
        .step(Step::hold(frac(0.5)))
        .step(Step::new(
            vec![Op::SwapCpusets {
                a: name("cg0"),
                b: name("cg1"),
            }],
            frac(0.5),
        )),
        scenario(
            "cpuset_shrink_grow",
            "cpuset",
            "a cgroup's cpuset shrinks to the first CPUs, then is cleared",
        )
        .cgroup(cg("cg0", vec![spin(3)]))
        .step(Step::hold(frac(0.3)))
        .step(Step::new(
            vec![Op::SetCpuset {
                cgroup: name("cg0"),
                cpuset: CpusetSpec::Range {
                    from_frac: 0.0,
                    to_frac: 0.5,
                },
            }],
            frac(0.35),
        ))
        .step(Step::new(
            vec![Op::ClearCpuset {
                cgroup: name("cg0"),
            }],
            frac(0.35),
        )),
        scenario(
            "cpuset_llc",
            "cpuset",
            "a cgroup confined to the first last-level cache",
        )
        .cgroup(cg("cg0", vec![spin(2)]).cpuset(CpusetSpec::LlcAligned { index: 0 })),
    ]
}

// long: it is data, one declaration per scenario of the family.
fn dynamic() -> Vec<Scenario> {
    vec![
        scenario(
            "cgroup_add_remove",
            "dynamic",
            "a second cgroup appears mid-run and is removed again",
        )
        .cgroup(cg("cg0", vec![spin(2)]))
        .cgroup(cg("cg1", vec![spin(2)]).deferred())
        .step(Step::hold(frac(0.3)))
        .step(Step::new(
            vec![Op::AddCgroup {
                cgroup: name("cg1"),
            }],
            frac(0.4),
        ))
        .step(Step::new(
            vec![Op::RemoveCgroup {
                cgroup: name("cg1"),
            }],
            frac(0.3),
        )),
        scenario(
            "spawn_stop",
            "dynamic",
            "extra workers join a running cgroup, then the first ones stop",
        )
        .cgroup(cg("cg0", vec![spin(2)]))
        .cgroup(cg("cg1", vec![]))
        .step(Step::hold(frac(0.3)))
        .step(Step::new(
            vec![Op::Spawn {
                cgroup: name("cg1"),
                works: vec![spin(2), work("bursty:burst_ms=5,sleep_ms=5", 1)],
            }],
            frac(0.4),
        ))
        .step(Step::new(
            vec![Op::Stop {
                cgroup: name("cg0"),
            }],
            frac(0.3),
        )),
        scenario(
            "move_tasks",
            "dynamic",
            "workers move from one cpuset cgroup to another mid-run",
        )
        .cgroup(cg("cg0", vec![spin(2)]).cpuset(half(0)))
        .cgroup(cg("cg1", vec![spin(1)]).cpuset(half(1)))
        .step(Step::hold(frac(0.5)))
        .step(Step::new(
            vec![Op::MoveTasks {
                from: name("cg0"),
                to: name("cg1"),
            }],
            frac(0.5),
        )),
        scenario(
            "cpuset_churn",
            "dynamic",
            "cpusets of two cgroups are swapped every 50 ms",
        )
        .cgroup(cg("cg0", vec![spin(2)]).cpuset(half(0)))
        .cgroup(cg("cg1", vec![spin(2)]).cpuset(half(1)))
        .step(Step::new(
            vec![Op::SwapCpusets {
                a: name("cg0"),
                b: name("cg1"),
            }],
            HoldSpec::Loop {
                every: Duration::from_millis(50),
                fraction: 1.0,
            },
        )),
        scenario(
            "staged_snapshots",
            "dynamic",
            "tagged captures around a load change, plus periodic captures",
        )
        .cgroup(cg("cg0", vec![spin(1)]))
        .step(Step::new(
            vec![Op::CaptureSnapshot { tag: name("light") }],
            frac(0.5),
        ))
        .step(Step::new(
            vec![
                Op::Spawn {
                    cgroup: name("cg0"),
                    works: vec![spin(3)],
                },
                Op::CaptureSnapshot { tag: name("heavy") },
            ],
            frac(0.5),
        ))
        .periodic_capture(Duration::from_millis(250)),
    ]
}

fn affinity() -> Vec<Scenario> {
    vec![
        scenario(
            "affinity_churn",
            "affinity",
            "workers are re-pinned to random CPU subsets every 20 ms",
        )
        .cgroup(cg("cg0", vec![spin(3)]))
        .step(Step::new(
            vec![Op::SetAffinity {
                cgroup: name("cg0"),
                affinity: AffinityIntent::RandomSubset { count: 1 },
            }],
            HoldSpec::Loop {
                every: Duration::from_millis(20),
                fraction: 1.0,
            },
        ))
        // Random single-CPU pins may stack several workers on one CPU.
        .thresholds(Thresholds {
            max_spread: 6.0,
            ..Default::default()
        }),
        scenario(
            "affinity_single_cpu",
            "affinity",
            "every worker of a cgroup pinned to one CPU shares it fairly",
        )
        .cgroup(cg("cg0", vec![spin(3).affinity(AffinityIntent::SingleCpu)])),
        scenario(
            "affinity_llc",
            "affinity",
            "workers pinned to the CPUs of their last-level cache",
        )
        .cgroup(cg(
            "cg0",
            vec![spin(2).affinity(AffinityIntent::LlcAligned)],
        )),
        scenario(
            "affinity_cross_cgroup",
            "affinity",
            "masks spanning other cgroups' CPUs are clipped to the cgroup's cpuset",
        )
        .cgroup(cg("cg0", vec![spin(2).affinity(AffinityIntent::CrossCgroup)]).cpuset(half(0)))
        .cgroup(cg("cg1", vec![spin(2)]).cpuset(half(1))),
        scenario(
            "affinity_self_churn",
            "affinity",
            "workers that move themselves between CPUs keep progressing",
        )
        .cgroup(cg("cg0", vec![work("affinity_churn:spin_iters=20000", 2)])),
    ]
}

fn stress() -> Vec<Scenario> {
    vec![
        scenario(
            "fork_storm",
            "stress",
            "workers fork and reap short-lived children as fast as they can beside spinners",
        )
        .cgroup(cg("cg0", vec![work("fork_exit", 2)]))
        .cgroup(cg("cg1", vec![spin(2)])),
        scenario(
            "oversubscribed",
            "stress",
            "many more spinners than CPUs: nobody starves",
        )
        .cgroup(cg("cg0", vec![spin(12)]))
        // 12 workers on 2 CPUs: slices are long relative to each share.
        .thresholds(Thresholds {
            max_gap_ms: 500.0,
            max_spread: 4.0,
            ..Default::default()
        }),
        scenario(
            "page_fault_churn",
            "stress",
            "page-fault heavy workers beside spinners",
        )
        .cgroup(cg(
            "cg0",
            vec![work(
                "page_fault_churn:region_kb=2048,touches=128,spin_iters=1000",
                2,
            )],
        ))
        .cgroup(cg("cg1", vec![spin(2)])),
        scenario(
            "mutex_contention",
            "stress",
            "sets of workers contending on one futex mutex all make progress",
        )
        .cgroup(cg(
            "cg0",
            vec![work(
                "mutex_contention:contenders=4,hold_iters=1000,work_iters=1000",
                4,
            )],
        )),
        scenario(
            "policy_churn",
            "stress",
            "workers switching among normal, batch and idle policies",
        )
        .cgroup(cg("cg0", vec![work("policy_churn:spin_iters=100000", 2)])),
    ]
}

fn nested() -> Vec<Scenario> {
    vec![
        scenario(
            "nested_cpusets",
            "nested",
            "children of one parent cgroup on disjoint parts of its cpuset",
        )
        .cgroup(cg("outer", vec![]))
        .cgroup(cg("outer/a", vec![spin(2)]).cpuset(half(0)))
        .cgroup(cg("outer/b", vec![spin(2)]).cpuset(half(1))),
        scenario(
            "nested_add_remove",
            "nested",
            "a nested child appears and disappears under a running parent",
        )
        .cgroup(cg("outer", vec![spin(2)]))
        .cgroup(cg("outer/inner", vec![spin(2)]).deferred())
        .step(Step::hold(frac(0.3)))
        .step(Step::new(
            vec![Op::AddCgroup {
                cgroup: name("outer/inner"),
            }],
            frac(0.4),
        ))
        .step(Step::new(
            vec![Op::RemoveCgroup {
                cgroup: name("outer/inner"),
            }],
            frac(0.3),
        )),
        scenario(
            "nested_weights",
            "nested",
            "sibling cgroups with different weights under one parent",
        )
        .cgroup(cg("outer", vec![]))
        .cgroup(cg("outer/heavy", vec![spin(2)]).weight(200))
        .cgroup(cg("outer/light", vec![spin(2)]).weight(100)),
    ]
}

fn interaction() -> Vec<Scenario> {
    vec![
        scenario(
            "mixed_policies",
            "interaction",
            "normal, batch and idle workers: idle ones run only on spare CPU",
        )
        .cgroup(cg("cg0", vec![spin(1), spin(1).policy(SchedPolicy::Batch)]))
        .cgroup(cg("cg1", vec![spin(1).policy(SchedPolicy::Idle)])),
        scenario(
            "nice_fairness",
            "interaction",
            "nice 0 and nice 5 spinners in separate cgroups both progress",
        )
        .cgroup(cg("nice0", vec![spin(2)]))
        .cgroup(cg("nice5", vec![spin(2).nice(5)]))
        .thresholds(share_bound()),
        scenario(
            "nice_shares",
            "interaction",
            "nice 0 and nice 5 spinners on one CPU in one cgroup get CPU in the kernel's weight ratio (about 3:1)",
        )
        .cgroup(cg(
            "cg0",
            vec![
                spin(1).affinity(AffinityIntent::SingleCpu),
                spin(1).nice(5).affinity(AffinityIntent::SingleCpu),
            ],
        ))
        .thresholds(share_bound()),
        scenario(
            "weighted_cgroups",
            "interaction",
            "a weight-400 cgroup beside a weight-100 one",
        )
        .cgroup(cg("heavy", vec![spin(2)]).weight(400))
        .cgroup(cg("light", vec![spin(2)]).weight(100))
        .thresholds(share_bound()),
        scenario(
            "rt_beside_fair",
            "interaction",
            "a SCHED_FIFO bursty worker beside fair spinners: RT throttling leaves them CPU",
        )
        .cgroup(cg(
            "rt",
            vec![work("bursty:burst_ms=1,sleep_ms=19", 1).policy(SchedPolicy::Fifo(10))],
        ))
        .cgroup(cg("fair", vec![spin(2)])),
        scenario(
            "sleepers_and_hogs",
            "interaction",
            "bursty sleepers keep a bounded resume latency beside CPU hogs",
        )
        .cgroup(cg("hogs", vec![spin(2)]))
        .cgroup(cg(
            "sleepers",
            vec![work("bursty:burst_ms=2,sleep_ms=8", 2)],
        ))
        .thresholds(wake_bound_50ms()),
    ]
}

fn performance() -> Vec<Scenario> {
    vec![
        scenario(
            "wake_chain_latency",
            "performance",
            "a ring of workers passing a token: p99 wake latency stays bounded",
        )
        .cgroup(cg("cg0", vec![work("wake_chain:depth=4", 4)]))
        .thresholds(wake_bound_50ms()),
        scenario(
            "futex_ping_pong",
            "performance",
            "pairs handing a futex word back and forth: wake latency bound",
        )
        .cgroup(cg("cg0", vec![work("futex_ping_pong:spin_iters=1000", 2)]))
        .thresholds(wake_bound_50ms()),
        scenario(
            "pipe_ping_pong",
            "performance",
            "pairs bouncing a timestamp over pipes: wake latency bound",
        )
        .cgroup(cg("cg0", vec![work("pipe_io:burst_iters=1000", 2)]))
        .thresholds(wake_bound_50ms()),
        scenario(
            "cache_pressure",
            "performance",
            "cache-walking workers on separate cpusets",
        )
        .cgroup(
            cg(
                "cg0",
                vec![work("cache_pressure:size_kb=2048,stride=64", 1)],
            )
            .cpuset(half(0)),
        )
        .cgroup(
            cg(
                "cg1",
                vec![work("cache_pressure:size_kb=2048,stride=64", 1)],
            )
            .cpuset(half(1)),
        ),
        scenario(
            "fan_out_compute",
            "performance",
            "one waker fanning work out to three compute wakees",
        )
        .cgroup(cg(
            "cg0",
            vec![work(
                "fan_out_compute:fan_out=3,footprint_kb=64,ops=2000,sleep_us=1000",
                4,
            )],
        ))
        .thresholds(wake_bound_50ms()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    #[test]
    fn catalog_is_large_unique_and_covers_every_family() {
        let all = all();
        // Exactly the size the README states ("(N scenarios; `runq list`)").
        let readme = include_str!("../../README.md");
        let stated = readme
            .split(" scenarios; `runq list`)")
            .next()
            .and_then(|head| head.rsplit(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<usize>().ok())
            .expect("the README states the catalog size");
        assert_eq!(all.len(), stated, "the README says {stated} scenarios");
        let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "duplicate names");
        for family in FAMILIES {
            assert!(
                all.iter().filter(|s| s.family == *family).count() >= 2,
                "family {family} has fewer than 2 scenarios"
            );
        }
        for s in &all {
            assert!(FAMILIES.contains(&s.family.as_str()), "{}", s.name);
            assert!(!s.description.is_empty(), "{}", s.name);
        }
    }

    #[test]
    fn every_scenario_validates_on_two_and_eight_cpus() {
        for spec in ["1n1l2c1t", "1n2l2c2t"] {
            let topo = Topology::from_spec_str(spec).unwrap();
            for s in all() {
                let problems = super::super::validate::problems(&s, &topo);
                assert!(problems.is_empty(), "{} on {spec}: {problems:?}", s.name);
            }
        }
    }
}
