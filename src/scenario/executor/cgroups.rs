//! The run's cgroups: opening and tearing down the [`CgroupManager`] (the
//! run root), creating a declared cgroup with its cpuset and weight, and
//! the CPUs a cgroup allows through its own or an ancestor's cpuset.
//!
//! Separate because every other part (workers, ops, revival after a
//! quiescent boundary) asks these questions of the live cgroups.

use anyhow::Context;

use super::Executor;
use crate::cgroup::CgroupManager;
use crate::scenario::dsl::CgroupDef;
use crate::scenario::resolve::resolve_cpuset;
use crate::scenario::validate::parent_of;

pub(super) struct LiveCgroup {
    pub(super) def: CgroupDef,
    /// The cpuset written to the cgroup, if any.
    pub(super) cpus: Option<Vec<usize>>,
}

impl Executor<'_> {
    pub(super) fn open_manager(&mut self) -> anyhow::Result<()> {
        let manager = CgroupManager::detect()?;
        self.cgroup_root = manager.root_name().to_owned();
        self.manager = Some(manager);
        Ok(())
    }

    pub(super) fn close_manager(&mut self) -> anyhow::Result<()> {
        if let Some(mut manager) = self.manager.take() {
            manager.teardown().context("removing the run's cgroups")?;
        }
        Ok(())
    }

    pub(super) fn manager(&self) -> anyhow::Result<&CgroupManager> {
        self.manager
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no cgroup manager at this point of the run"))
    }

    /// CPUs a cgroup allows: its cpuset, else its parent's, else all.
    pub(super) fn allowed(&self, name: &str) -> Vec<usize> {
        let mut cur = Some(name);
        while let Some(n) = cur {
            if let Some(cpus) = self.cgroups.get(n).and_then(|c| c.cpus.clone()) {
                return cpus;
            }
            cur = parent_of(n);
        }
        self.topology.cpu_ids()
    }

    pub(super) fn restricted(&self, name: &str) -> Option<Vec<usize>> {
        let mut cur = Some(name);
        while let Some(n) = cur {
            if let Some(cpus) = self.cgroups.get(n).and_then(|c| c.cpus.clone()) {
                return Some(cpus);
            }
            cur = parent_of(n);
        }
        None
    }

    /// Creates a cgroup (cpuset, weight) and spawns its works.
    pub(super) fn add_cgroup(&mut self, def: CgroupDef, with_works: bool) -> anyhow::Result<()> {
        let cpus = match &def.cpuset {
            Some(spec) => Some(
                resolve_cpuset(spec, &self.topology)
                    .map_err(|m| anyhow::anyhow!("cgroup {}: {m}", def.name))?,
            ),
            None => None,
        };
        {
            let backend = self.manager()?.backend();
            backend
                .create(&def.name)
                .with_context(|| format!("creating cgroup {}", def.name))?;
            if let Some(cpus) = &cpus {
                backend
                    .set_cpuset(&def.name, cpus, None)
                    .with_context(|| format!("setting the cpuset of {}", def.name))?;
            }
            if let Some(weight) = def.weight {
                backend
                    .set_weight(&def.name, weight)
                    .with_context(|| format!("setting the weight of {}", def.name))?;
            }
        }
        let name = def.name.clone();
        let works = def.works.clone();
        self.cgroups.insert(name.clone(), LiveCgroup { def, cpus });
        if with_works && !works.is_empty() {
            self.spawn_batch(&name, name.clone(), &works)?;
        }
        Ok(())
    }

    pub(super) fn weight_of(&self, name: &str) -> Option<u32> {
        self.cgroups.get(name).and_then(|c| c.def.weight)
    }

    pub(super) fn declared(&self, name: &str) -> Option<CgroupDef> {
        self.declared.get(name).cloned()
    }
}
