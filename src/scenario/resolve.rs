//! Resolution of cpuset specs and affinity intents against a topology.
//!
//! CPUs are ordered by (node, LLC, core, CPU) before any split, so that
//! `disjoint`/`overlapping`/`range` chunks follow the cache hierarchy even
//! when the kernel numbers SMT siblings far apart.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::RngCore;

use super::dsl::CpusetSpec;
use crate::topology::{format_cpu_list, Topology};
use crate::workload::AffinityIntent;

/// CPUs of `topo` in topology order: node, LLC, core, CPU number.
pub fn ordered_cpus(topo: &Topology) -> Vec<usize> {
    let mut infos: Vec<_> = topo.cpus.iter().collect();
    infos.sort_by_key(|c| (c.node, c.llc, c.core, c.cpu));
    infos.iter().map(|c| c.cpu).collect()
}

/// Splits `cpus` into `of` contiguous chunks whose sizes differ by at most
/// one (earlier chunks get the extra CPUs). Requires `of <= cpus.len()`.
fn chunk(cpus: &[usize], index: usize, of: usize) -> Vec<usize> {
    let base = cpus.len() / of;
    let extra = cpus.len() % of;
    let start = index * base + index.min(extra);
    let len = base + usize::from(index < extra);
    cpus[start..start + len].to_vec()
}

fn sorted(mut cpus: Vec<usize>) -> Vec<usize> {
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// Resolves a cpuset spec to a sorted, non-empty CPU list. The error says
/// what is wrong and how to fix it, without the field path (callers add it).
pub fn resolve_cpuset(spec: &CpusetSpec, topo: &Topology) -> Result<Vec<usize>, String> {
    let cpus = ordered_cpus(topo);
    let n = cpus.len();
    let host = format_cpu_list(&topo.cpu_ids());
    match spec {
        CpusetSpec::LlcAligned { index } => {
            let llcs = topo.llcs();
            match llcs.get(*index) {
                Some(set) if !set.is_empty() => Ok(sorted(set.clone())),
                _ => Err(format!(
                    "LLC index {index} does not exist: this host has {} LLC(s) (0..{}); see `runq topo`",
                    llcs.len(),
                    llcs.len().saturating_sub(1)
                )),
            }
        }
        CpusetSpec::Disjoint { index, of } => {
            check_split(*index, *of, n)?;
            Ok(sorted(chunk(&cpus, *index, *of)))
        }
        CpusetSpec::Overlapping { index, of, overlap } => {
            check_split(*index, *of, n)?;
            if !(*overlap > 0.0 && *overlap <= 1.0) {
                return Err(format!(
                    "overlap {overlap} must be in (0, 1]: the share of a chunk that extends into the next one"
                ));
            }
            let own = chunk(&cpus, *index, *of);
            let next = chunk(&cpus, (*index + 1) % *of, *of);
            let borrow = ((own.len() as f64) * overlap).ceil() as usize;
            let mut set = own;
            set.extend(next.iter().take(borrow.max(1)));
            Ok(sorted(set))
        }
        CpusetSpec::Range { from_frac, to_frac } => {
            if !((0.0..1.0).contains(from_frac) && *to_frac > *from_frac && *to_frac <= 1.0) {
                return Err(format!(
                    "range {from_frac}..{to_frac} must satisfy 0 <= from_frac < to_frac <= 1"
                ));
            }
            let start = ((*from_frac * n as f64).floor() as usize).min(n - 1);
            let end = ((*to_frac * n as f64).ceil() as usize).clamp(start + 1, n);
            Ok(sorted(cpus[start..end].to_vec()))
        }
        CpusetSpec::Exact(list) => {
            if list.is_empty() {
                return Err("an exact cpuset needs at least one CPU".into());
            }
            if let Some(bad) = list.iter().find(|c| !topo.contains(**c)) {
                return Err(format!(
                    "CPU {bad} is outside this host's CPUs {host}; use CPUs listed by `runq topo`"
                ));
            }
            Ok(sorted(list.clone()))
        }
    }
}

fn check_split(index: usize, of: usize, n: usize) -> Result<(), String> {
    if of == 0 {
        return Err("`of` must be at least 1".into());
    }
    if of > n {
        return Err(format!(
            "cannot split {n} CPU(s) into {of} non-empty parts; use of <= {n}"
        ));
    }
    if index >= of {
        return Err(format!("index {index} must be below of = {of}"));
    }
    Ok(())
}

/// Static checks of an affinity intent (independent of any cgroup).
pub fn check_affinity(intent: &AffinityIntent, topo: &Topology) -> Result<(), String> {
    match intent {
        AffinityIntent::Exact(list) => {
            if list.is_empty() {
                return Err("an exact affinity needs at least one CPU".into());
            }
            if let Some(bad) = list.iter().find(|c| !topo.contains(**c)) {
                return Err(format!(
                    "CPU {bad} is outside this host's CPUs {}; use CPUs listed by `runq topo`",
                    format_cpu_list(&topo.cpu_ids())
                ));
            }
            Ok(())
        }
        AffinityIntent::RandomSubset { count } if *count == 0 => {
            Err("random_subset count must be at least 1".into())
        }
        _ => Ok(()),
    }
}

/// Per-worker CPU masks for an intent, given the CPUs the worker's cgroup
/// allows (`allowed`, never empty). `None` means "leave the inherited mask".
/// Random choices come from `rng` so that explored runs replay.
pub fn resolve_affinity(
    intent: &AffinityIntent,
    workers: usize,
    allowed: &[usize],
    topo: &Topology,
    rng: &mut dyn RngCore,
) -> Result<Option<Vec<Vec<usize>>>, String> {
    let allowed_set: BTreeSet<usize> = allowed.iter().copied().collect();
    let masks = match intent {
        AffinityIntent::Inherit => return Ok(None),
        AffinityIntent::Exact(list) => {
            let mask: Vec<usize> = sorted(list.clone());
            if !mask.iter().any(|c| allowed_set.contains(c)) {
                return Err(format!(
                    "exact affinity {} has no CPU in the cgroup's CPUs {}",
                    format_cpu_list(&mask),
                    format_cpu_list(allowed)
                ));
            }
            vec![mask; workers]
        }
        // Same meaning as in the workload engine, within the cgroup's CPUs:
        // every worker on the lowest allowed CPU.
        AffinityIntent::SingleCpu => vec![vec![allowed[0]]; workers],
        // Worker i on the allowed CPUs of the i-th LLC (mod) that has any.
        AffinityIntent::LlcAligned => {
            let llcs: Vec<Vec<usize>> = topo
                .llcs()
                .into_iter()
                .map(|llc| {
                    llc.into_iter()
                        .filter(|c| allowed_set.contains(c))
                        .collect()
                })
                .filter(|llc: &Vec<usize>| !llc.is_empty())
                .collect();
            if llcs.is_empty() {
                vec![allowed.to_vec(); workers]
            } else {
                (0..workers).map(|i| llcs[i % llcs.len()].clone()).collect()
            }
        }
        AffinityIntent::RandomSubset { count } => {
            let take = (*count).clamp(1, allowed.len());
            let mut pool = allowed.to_vec();
            (0..workers)
                .map(|_| {
                    pool.shuffle(&mut RngAdapter(rng));
                    sorted(pool[..take].to_vec())
                })
                .collect()
        }
        // Every CPU of the machine: the mask spans the other cgroups'
        // cpusets, and the kernel intersects it with this cgroup's cpuset.
        AffinityIntent::CrossCgroup => vec![topo.cpu_ids(); workers],
    };
    Ok(Some(masks))
}

/// Lets `&mut dyn RngCore` drive `rand` helpers that want `Rng + Sized`.
pub struct RngAdapter<'a>(pub &'a mut dyn RngCore);

impl RngCore for RngAdapter<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn topo(spec: &str) -> Topology {
        Topology::from_spec_str(spec).unwrap()
    }

    #[test]
    fn disjoint_chunks_cover_all_cpus_once() {
        let t = topo("1n2l3c1t");
        let mut all = Vec::new();
        for i in 0..4 {
            let part = resolve_cpuset(&CpusetSpec::Disjoint { index: i, of: 4 }, &t).unwrap();
            assert!(!part.is_empty());
            all.extend(part);
        }
        all.sort_unstable();
        assert_eq!(all, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn disjoint_more_parts_than_cpus_is_an_error() {
        let err = resolve_cpuset(&CpusetSpec::Disjoint { index: 0, of: 3 }, &topo("1n1l2c1t"))
            .unwrap_err();
        assert!(err.contains("of <= 2"), "{err}");
    }

    #[test]
    fn llc_aligned_follows_llcs() {
        let t = topo("1n2l2c1t");
        assert_eq!(
            resolve_cpuset(&CpusetSpec::LlcAligned { index: 1 }, &t).unwrap(),
            vec![2, 3]
        );
        assert!(resolve_cpuset(&CpusetSpec::LlcAligned { index: 2 }, &t)
            .unwrap_err()
            .contains("2 LLC"));
    }

    #[test]
    fn overlapping_sets_share_cpus() {
        let t = topo("1n1l4c1t");
        let a = resolve_cpuset(
            &CpusetSpec::Overlapping {
                index: 0,
                of: 2,
                overlap: 0.5,
            },
            &t,
        )
        .unwrap();
        let b = resolve_cpuset(
            &CpusetSpec::Overlapping {
                index: 1,
                of: 2,
                overlap: 0.5,
            },
            &t,
        )
        .unwrap();
        assert_eq!(a, vec![0, 1, 2]);
        assert_eq!(b, vec![0, 2, 3]);
    }

    #[test]
    fn range_and_exact() {
        let t = topo("1n1l4c1t");
        assert_eq!(
            resolve_cpuset(
                &CpusetSpec::Range {
                    from_frac: 0.5,
                    to_frac: 1.0
                },
                &t
            )
            .unwrap(),
            vec![2, 3]
        );
        assert_eq!(
            resolve_cpuset(&CpusetSpec::Exact(vec![3, 1, 1]), &t).unwrap(),
            vec![1, 3]
        );
        let err = resolve_cpuset(&CpusetSpec::Exact(vec![9]), &t).unwrap_err();
        assert!(err.contains("CPU 9 is outside"), "{err}");
        assert!(resolve_cpuset(
            &CpusetSpec::Range {
                from_frac: 0.8,
                to_frac: 0.2
            },
            &t
        )
        .is_err());
    }

    #[test]
    fn affinity_intents_stay_inside_the_allowed_cpus() {
        let t = topo("1n2l2c1t");
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let allowed = [1, 2, 3];
        for intent in [
            AffinityIntent::SingleCpu,
            AffinityIntent::LlcAligned,
            AffinityIntent::RandomSubset { count: 2 },
        ] {
            let masks = resolve_affinity(&intent, 5, &allowed, &t, &mut rng)
                .unwrap()
                .unwrap();
            assert_eq!(masks.len(), 5);
            for mask in masks {
                assert!(!mask.is_empty());
                assert!(mask.iter().all(|c| allowed.contains(c)), "{intent:?}");
            }
        }
        assert!(
            resolve_affinity(&AffinityIntent::Exact(vec![0]), 1, &allowed, &t, &mut rng).is_err()
        );
    }

    #[test]
    fn random_subsets_replay_with_the_same_seed() {
        let t = topo("1n1l8c1t");
        let allowed: Vec<usize> = (0..8).collect();
        let draw = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            resolve_affinity(
                &AffinityIntent::RandomSubset { count: 3 },
                4,
                &allowed,
                &t,
                &mut rng,
            )
            .unwrap()
        };
        assert_eq!(draw(11), draw(11));
        assert_ne!(draw(11), draw(12));
    }
}
