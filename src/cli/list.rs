//! `runq list`: the canned scenarios, by family.

use runq::scenario::{catalog, toml};

#[derive(clap::Args)]
pub struct Args {
    /// Only this family (basic, cpuset, dynamic, affinity, stress, nested,
    /// interaction, performance).
    #[arg(long)]
    family: Option<String>,
    /// Print this scenario as a TOML file instead (a starting point to edit).
    #[arg(long, value_name = "NAME")]
    toml: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    if let Some(name) = &args.toml {
        let scenario = catalog::find(name).ok_or_else(|| {
            runq::error::RunqError::bad_input(format!(
                "unknown scenario {name:?}: pick a name from `runq list`"
            ))
        })?;
        print!("{}", toml::to_toml_string(&scenario)?);
        return Ok(runq::error::EXIT_OK);
    }
    if let Some(family) = &args.family {
        if !catalog::FAMILIES.contains(&family.as_str()) {
            return Err(runq::error::RunqError::bad_input(format!(
                "--family {family:?} is unknown; use one of: {}",
                catalog::FAMILIES.join(", ")
            )));
        }
    }
    let all = catalog::all();
    let width = all.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for family in catalog::FAMILIES {
        if args.family.as_deref().is_some_and(|f| f != *family) {
            continue;
        }
        for s in all.iter().filter(|s| s.family == *family) {
            println!("{:<width$}  {:<12} {}", s.name, s.family, s.description);
        }
    }
    Ok(runq::error::EXIT_OK)
}
