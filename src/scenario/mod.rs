//! Scenarios: CgroupDef, Step, Op, HoldSpec, CpusetSpec; executor; catalog; TOML.
