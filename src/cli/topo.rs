//! `runq topo`: print the CPU topology and its spec string.

use std::path::PathBuf;

use runq::topology::Topology;

#[derive(clap::Args)]
pub struct Args {
    /// Print the topology as JSON (spec, uniform flag and per-CPU info).
    #[arg(long)]
    json: bool,
    /// Read this sysfs tree instead of /sys (for inspecting captured trees).
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    sysfs: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let topology = Topology::from_sysfs(&args.sysfs)?;
    if args.json {
        let value = serde_json::json!({
            "spec": topology.spec(),
            "uniform": topology.is_uniform(),
            "cpus": topology.cpus,
            "llcs": topology.llcs(),
            "nodes": topology.nodes(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", topology.describe());
    }
    Ok(runq::error::EXIT_OK)
}
