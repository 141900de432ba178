//! Randomized scenarios: real cgroups and workers, every choice drawn from
//! the timeline RNG, properties checked at step boundaries.
//!
//! Each scenario runs through the scenario executor in
//! [`BoundaryMode::Quiescent`]: at every step boundary after the first, all
//! workers were collected and all cgroups removed, so a discovery there can
//! fork safely; the child re-creates the cgroups under its own run root and
//! continues with different choices. At each boundary the hook first judges
//! the step that just ended (`always` over measured results, `sometimes`
//! over the configuration that ran), then plans the next step from the RNG:
//! which cgroups, which cpusets, which work types, how many workers, in
//! which order the ops run and how long the step holds. Choices never
//! depend on measurements, so a recipe replays the same plan.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::RngCore;

use super::{always, declare_sometimes, no_split, sometimes, sometimes_greater};
use crate::check::{run_checks, CgroupRun, CheckInput, Thresholds, WorkerSetup};
use crate::scenario::{
    Boundary, BoundaryMode, CgroupDef, CpusetSpec, ExecutorHooks, HoldSpec, Op, RunOptions,
    Scenario, Step, StepResult, WorkSpec,
};
use crate::topology::{format_cpu_list, Topology};
use crate::workload::{SchedPolicy, WorkType};

/// A scenario `runq explore` can explore.
#[derive(Clone, Copy, Debug)]
pub struct ExplorableScenario {
    /// Name on the command line.
    pub name: &'static str,
    /// One line: what it varies and checks.
    pub description: &'static str,
    /// Steps per timeline.
    pub steps: usize,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cpusets,
    Policies,
}

/// Every explorable scenario.
pub fn catalog() -> Vec<ExplorableScenario> {
    vec![
        ExplorableScenario {
            name: "explore_cpusets",
            description: "1-3 cgroups with random cpusets, work types, worker counts, op order \
                          and holds; workers must complete and stay in their cpusets",
            steps: 4,
            kind: Kind::Cpusets,
        },
        ExplorableScenario {
            name: "explore_policies",
            description: "two workers with random policy and nice on one random CPU beside \
                          random heavy/light cgroups; more weight must mean more CPU",
            steps: 3,
            kind: Kind::Policies,
        },
    ]
}

/// The explorable scenario called `name`.
pub fn find(name: &str) -> Option<ExplorableScenario> {
    catalog().into_iter().find(|s| s.name == name)
}

const SET_NAMES: [&str; 3] = ["a", "b", "c"];
const HEAVY: &str = "heavy";
const LIGHT: &str = "light";
const SHARED: &str = "shared";

impl ExplorableScenario {
    /// The scenario the executor runs: deferred cgroups and placeholder
    /// steps that the hook replaces one by one.
    pub fn base(&self) -> Scenario {
        let cgroups = match self.kind {
            Kind::Cpusets => SET_NAMES
                .iter()
                .map(|n| CgroupDef::new(n, Vec::new()).deferred())
                .collect(),
            Kind::Policies => vec![
                CgroupDef::new(SHARED, Vec::new()).deferred(),
                CgroupDef::new(HEAVY, Vec::new()).weight(400).deferred(),
                CgroupDef::new(LIGHT, Vec::new()).weight(25).deferred(),
            ],
        };
        let step = Step::hold(Duration::from_millis(100));
        let mut scenario = Scenario::named(self.name)
            .family("explore")
            .description(self.description)
            .duration(Duration::from_secs(1));
        scenario.cgroups = cgroups;
        scenario.steps = vec![step; self.steps];
        scenario
    }

    /// Run one timeline of the scenario; `plan` receives one line per step.
    pub fn run(&self, plan: &mut Vec<String>) -> anyhow::Result<()> {
        let cpus = Topology::host()?.cpu_ids();
        let opts = RunOptions {
            seed: Some(0),
            boundary_mode: BoundaryMode::Quiescent,
            ..Default::default()
        };
        let mut hooks = Hooks {
            scenario: *self,
            cpus,
            plan,
            live: BTreeSet::new(),
            planned: Vec::new(),
        };
        for name in hooks.sometimes_names() {
            declare_sometimes(name);
        }
        let mut rng = super::rng();
        crate::scenario::run_scenario_with(&self.base(), &opts, 0, &mut rng, &mut hooks)?;
        Ok(())
    }
}

/// One cgroup as planned for a step.
#[derive(Clone, Debug)]
struct Planned {
    cgroup: &'static str,
    cpus: Option<Vec<usize>>,
    workers: usize,
    /// The cpuset was written before the workers were spawned, so they
    /// never ran outside it.
    confined_from_start: bool,
}

struct Hooks<'p> {
    scenario: ExplorableScenario,
    cpus: Vec<usize>,
    plan: &'p mut Vec<String>,
    live: BTreeSet<&'static str>,
    planned: Vec<Planned>,
}

fn pick<T: Clone>(rng: &mut dyn RngCore, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize].clone()
}

fn shuffle<T>(rng: &mut dyn RngCore, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// CFS weight of a worker (kernel's nice table; SCHED_IDLE is 3).
fn weight(setup: &WorkerSetup) -> u64 {
    if setup.policy == SchedPolicy::Idle {
        return 3;
    }
    match setup.nice {
        n if n <= 0 => 1024,
        5 => 335,
        10 => 110,
        19 => 15,
        n => (1024.0 / 1.25f64.powi(n)) as u64,
    }
}

fn work_label(work: &WorkType) -> String {
    crate::scenario::dsl::work_to_text(work)
}

impl ExecutorHooks for Hooks<'_> {
    fn at_boundary(&mut self, boundary: &mut Boundary<'_>) -> anyhow::Result<()> {
        if boundary.index > 0 {
            if let Some(previous) = boundary.previous {
                // After the last step, children would have nothing to run.
                if boundary.index >= self.scenario.steps {
                    no_split(|| self.judge(previous));
                } else {
                    self.judge(previous);
                }
            }
        }
        if boundary.index < self.scenario.steps && boundary.index < boundary.steps.len() {
            let step = match self.scenario.kind {
                Kind::Cpusets => self.plan_cpusets(boundary.index, &mut *boundary.rng),
                Kind::Policies => self.plan_policies(boundary.index, &mut *boundary.rng),
            };
            boundary.steps[boundary.index] = step;
        }
        Ok(())
    }
}

impl Hooks<'_> {
    fn sometimes_names(&self) -> Vec<&'static str> {
        match self.scenario.kind {
            Kind::Cpusets => vec![
                "two cgroups share one CPU",
                "three cgroups run at once",
                "a lone cgroup holds one CPU with 3 workers",
            ],
            Kind::Policies => vec![
                "SCHED_IDLE beside a normal worker on one CPU",
                "nice 19 beside nice 0 on one CPU",
                "heavy and light cgroups share a CPU",
                "three cgroups on one CPU",
            ],
        }
    }

    /// Stop what a live cgroup still runs, or create it.
    fn enter(&mut self, cgroup: &'static str, ops: &mut Vec<Op>) {
        let name = cgroup.to_string();
        if self.live.insert(cgroup) {
            ops.push(Op::AddCgroup { cgroup: name });
        } else {
            ops.push(Op::Stop { cgroup: name });
        }
    }

    fn leave(&mut self, cgroup: &'static str, ops: &mut Vec<Op>) {
        if self.live.remove(cgroup) {
            ops.push(Op::RemoveCgroup {
                cgroup: cgroup.to_string(),
            });
        }
    }

    fn plan_cpusets(&mut self, index: usize, rng: &mut dyn RngCore) -> Step {
        let drawn = super::rng_calls();
        let hold_ms = 100 + 50 * (rng.next_u64() % 4);
        let mut active: Vec<&'static str> = SET_NAMES
            .iter()
            .copied()
            .filter(|_| rng.next_u64().is_multiple_of(2))
            .collect();
        if active.is_empty() {
            active.push(pick(rng, &SET_NAMES));
        }
        let mut order = SET_NAMES;
        shuffle(rng, &mut order);
        let works = [
            WorkType::CpuSpin,
            WorkType::YieldHeavy,
            WorkType::Mixed,
            WorkType::Bursty {
                burst_ms: 5,
                sleep_ms: 5,
            },
        ];
        let half = self.cpus[..self.cpus.len().div_ceil(2)].to_vec();
        let cpu_choices = [
            None,
            Some(vec![self.cpus[0]]),
            Some(vec![*self.cpus.last().unwrap_or(&0)]),
            Some(half),
        ];
        let mut ops = Vec::new();
        let mut text = Vec::new();
        self.planned.clear();
        for cgroup in order {
            if !active.contains(&cgroup) {
                self.leave(cgroup, &mut ops);
                continue;
            }
            self.enter(cgroup, &mut ops);
            text.push(self.plan_confined_spawn(cgroup, &cpu_choices, &works, rng, &mut ops));
        }
        self.plan.push(format!(
            "step {index} (after {drawn} draws): hold {hold_ms} ms; {}",
            text.join("; ")
        ));
        Step::new(ops, HoldSpec::Fixed(Duration::from_millis(hold_ms)))
    }

    /// Draws, for a live `cgroup`, its CPUs, workers and work type, and plans
    /// setting its cpuset and spawning into it, in a drawn order. Returns
    /// the plan's line for the cgroup.
    fn plan_confined_spawn(
        &mut self,
        cgroup: &'static str,
        cpu_choices: &[Option<Vec<usize>>; 4],
        works: &[WorkType],
        rng: &mut dyn RngCore,
        ops: &mut Vec<Op>,
    ) -> String {
        let cpus = cpu_choices[(rng.next_u64() % 4) as usize].clone();
        let workers = 1 + (rng.next_u64() % 3) as usize;
        let work = pick(rng, works);
        let set = match &cpus {
            Some(c) => Op::SetCpuset {
                cgroup: cgroup.to_string(),
                cpuset: CpusetSpec::Exact(c.clone()),
            },
            None => Op::ClearCpuset {
                cgroup: cgroup.to_string(),
            },
        };
        let spawn = Op::Spawn {
            cgroup: cgroup.to_string(),
            works: vec![WorkSpec::new(work.clone(), workers)],
        };
        let set_first = rng.next_u64().is_multiple_of(2);
        if set_first {
            ops.extend([set, spawn]);
        } else {
            ops.extend([spawn, set]);
        }
        let line = format!(
            "{cgroup}: {workers}x {} on {}{}",
            work_label(&work),
            cpus.as_deref()
                .map(format_cpu_list)
                .unwrap_or_else(|| "all CPUs".to_string()),
            if set_first { "" } else { " (spawned first)" }
        );
        self.planned.push(Planned {
            cgroup,
            cpus,
            workers,
            confined_from_start: set_first,
        });
        line
    }

    fn plan_policies(&mut self, index: usize, rng: &mut dyn RngCore) -> Step {
        let drawn = super::rng_calls();
        let hold_ms = 100 + 50 * (rng.next_u64() % 3);
        let cpu = pick(rng, &self.cpus);
        let policies = [SchedPolicy::Normal, SchedPolicy::Batch, SchedPolicy::Idle];
        let nices = [0, 5, 10, 19];
        let mut pair = Vec::new();
        for _ in 0..2 {
            let policy = pick(rng, &policies);
            let nice = pick(rng, &nices);
            pair.push(
                WorkSpec::new(WorkType::CpuSpin, 1)
                    .policy(policy)
                    .nice(nice),
            );
        }
        let rivals: &[&'static str] = match rng.next_u64() % 4 {
            0 => &[],
            1 => &[HEAVY],
            2 => &[LIGHT],
            _ => &[HEAVY, LIGHT],
        };
        let mut order = [SHARED, HEAVY, LIGHT];
        shuffle(rng, &mut order);
        let mut ops = Vec::new();
        self.planned.clear();
        for cgroup in order {
            if cgroup != SHARED && !rivals.contains(&cgroup) {
                self.leave(cgroup, &mut ops);
                continue;
            }
            self.enter(cgroup, &mut ops);
            let works = if cgroup == SHARED {
                pair.clone()
            } else {
                vec![WorkSpec::new(WorkType::CpuSpin, 1)]
            };
            let set = Op::SetCpuset {
                cgroup: cgroup.to_string(),
                cpuset: CpusetSpec::Exact(vec![cpu]),
            };
            let spawn = Op::Spawn {
                cgroup: cgroup.to_string(),
                works,
            };
            let set_first = rng.next_u64().is_multiple_of(2);
            if set_first {
                ops.extend([set, spawn]);
            } else {
                ops.extend([spawn, set]);
            }
            self.planned.push(Planned {
                cgroup,
                cpus: Some(vec![cpu]),
                workers: if cgroup == SHARED { 2 } else { 1 },
                confined_from_start: set_first,
            });
        }
        let describe = |w: &WorkSpec| format!("{:?} nice {}", w.policy, w.nice);
        self.plan.push(format!(
            "step {index} (after {drawn} draws): hold {hold_ms} ms on CPU {cpu}; shared: {} + \
             {}; rivals: {}",
            describe(&pair[0]),
            describe(&pair[1]),
            if rivals.is_empty() {
                "none".to_string()
            } else {
                rivals.join(", ")
            }
        ));
        Step::new(ops, HoldSpec::Fixed(Duration::from_millis(hold_ms)))
    }

    /// Properties of the step that just ended.
    fn judge(&mut self, previous: &StepResult) {
        // Batches started in this step (a revived batch of an earlier step
        // that was stopped at once keeps its old label).
        let suffix = format!("@step{}", previous.index);
        let runs: Vec<&CgroupRun> = previous
            .collected
            .iter()
            .filter(|r| r.name.ends_with(&suffix))
            .collect();
        match self.scenario.kind {
            Kind::Cpusets => self.judge_cpusets(previous, &runs),
            Kind::Policies => self.judge_policies(previous, &runs),
        }
    }

    fn judge_cpusets(&self, previous: &StepResult, runs: &[&CgroupRun]) {
        let input = CheckInput {
            cgroups: runs.iter().map(|r| (*r).clone()).collect(),
            num_cpus: self.cpus.len(),
            duration_ms: previous.elapsed_ms,
        };
        let result = run_checks(&input, &Thresholds::default());
        for name in ["workers_completed", "cpuset_isolation"] {
            let passed = result
                .checks
                .iter()
                .find(|c| c.name == name)
                .is_none_or(|c| c.passed);
            always(&format!("every step passes {name}"), passed);
        }
        let mut per_cpu: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for p in &self.planned {
            if let Some([cpu]) = p.cpus.as_deref() {
                let e = per_cpu.entry(*cpu).or_default();
                e.0 += 1;
                e.1 += p.workers;
            }
        }
        sometimes(
            "two cgroups share one CPU",
            per_cpu.values().any(|(n, _)| *n >= 2),
        );
        sometimes("three cgroups run at once", self.planned.len() == 3);
        sometimes(
            "a lone cgroup holds one CPU with 3 workers",
            self.planned.len() == 1
                && self.planned[0].workers == 3
                && self.planned[0].cpus.as_ref().is_some_and(|c| c.len() == 1),
        );
        let crowd = per_cpu.values().map(|(_, w)| *w).max().unwrap_or(0);
        sometimes_greater("workers crowded onto one CPU", crowd as i64, 6);
    }

    fn judge_policies(&self, previous: &StepResult, runs: &[&CgroupRun]) {
        let of = |cgroup: &str| {
            runs.iter()
                .find(|r| r.name.starts_with(&format!("{cgroup}@")))
        };
        // Weight only decides shares between workers that competed for the
        // one CPU all along: spawned after their cpuset was written and
        // together given a real part of the hold (a loaded host can leave
        // the CPU to others for most of a short step).
        let confined = |cgroup: &str| {
            self.planned
                .iter()
                .any(|p| p.cgroup == cgroup && p.confined_from_start)
        };
        let competed = |cpu_ns: u64| cpu_ns as f64 >= previous.elapsed_ms * 1e6 / 4.0;
        let cpu = |r: &CgroupRun| r.workers.iter().map(|w| w.cpu_time_ns).sum::<u64>();
        if let Some(shared) = of(SHARED) {
            if shared.workers.len() == 2 && shared.setups.len() == 2 {
                let (w0, w1) = (weight(&shared.setups[0]), weight(&shared.setups[1]));
                let (c0, c1) = (shared.workers[0].cpu_time_ns, shared.workers[1].cpu_time_ns);
                let (hi, lo, chi, clo) = if w0 >= w1 {
                    (w0, w1, c0, c1)
                } else {
                    (w1, w0, c1, c0)
                };
                if hi >= 3 * lo && confined(SHARED) && competed(c0 + c1) {
                    always(
                        "on one CPU the worker with 3x the weight gets more CPU",
                        chi > clo,
                    );
                }
                let idle = |s: &WorkerSetup| s.policy == SchedPolicy::Idle;
                sometimes(
                    "SCHED_IDLE beside a normal worker on one CPU",
                    idle(&shared.setups[0]) != idle(&shared.setups[1]),
                );
                let nices = [shared.setups[0].nice, shared.setups[1].nice];
                sometimes(
                    "nice 19 beside nice 0 on one CPU",
                    !idle(&shared.setups[0])
                        && !idle(&shared.setups[1])
                        && nices.contains(&0)
                        && nices.contains(&19),
                );
            }
        }
        let (heavy, light) = (of(HEAVY), of(LIGHT));
        if let (Some(h), Some(l)) = (heavy, light) {
            let judged = confined(HEAVY) && confined(LIGHT) && competed(cpu(h) + cpu(l));
            if judged {
                always(
                    "on one CPU the heavier cgroup gets more CPU",
                    cpu(h) > cpu(l),
                );
            }
        }
        sometimes(
            "heavy and light cgroups share a CPU",
            heavy.is_some() && light.is_some(),
        );
        sometimes("three cgroups on one CPU", self.planned.len() == 3);
    }
}
