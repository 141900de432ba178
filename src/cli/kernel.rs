//! `runq kernel fetch|list`: kernels runq can boot.

use std::path::Path;

use runq::error::EXIT_OK;
use runq::kernel::{self, FetchRequest, Fetched, Flavour};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: KernelCommand,
}

#[derive(clap::Subcommand, Debug)]
enum KernelCommand {
    /// Download a Debian kernel into runq's cache (private apt configuration,
    /// signatures checked against debian-archive-keyring).
    Fetch(FetchArgs),
    /// List cached kernels and /boot's, with sched_ext, BTF and PVH.
    List(ListArgs),
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example: runq kernel fetch && runq vm --kernel sched_ext -- topo\n\
Exit codes: 0 fetched or already cached; 2 bad input (unknown suite); \
3 no network, apt/dpkg missing, or Debian's packaging changed."
)]
struct FetchArgs {
    /// Debian suite whose current kernel to fetch (sid's kernels have sched_ext).
    #[arg(long, default_value = "sid")]
    suite: String,
    /// Kernel flavour.
    #[arg(long, value_enum, default_value = "amd64")]
    flavour: Flavour,
    /// Debian mirror.
    #[arg(long, value_name = "URL", default_value = kernel::apt::DEFAULT_MIRROR)]
    mirror: String,
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    match args.command {
        KernelCommand::Fetch(a) => fetch(a),
        KernelCommand::List(a) => list(a),
    }
}

fn fetch(args: FetchArgs) -> anyhow::Result<i32> {
    let root = runq::cache::kernels_dir()?;
    let request = FetchRequest {
        suite: args.suite,
        flavour: args.flavour,
        mirror: args.mirror,
    };
    let (cached, verb) = match kernel::fetch(&request, &root)? {
        Fetched::New(cached) => (cached, "fetched"),
        Fetched::AlreadyCached(cached) => (cached, "already cached"),
    };
    let caps = cached.metadata.capabilities;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!(
        "{verb} {} in {}\nsched_ext {}, BTF {}, PVH {}",
        cached.metadata.release,
        cached.dir.display(),
        yes_no(caps.sched_ext),
        yes_no(caps.btf),
        yes_no(caps.pvh)
    );
    if !caps.sched_ext {
        println!(
            "note: this kernel is built without CONFIG_SCHED_CLASS_EXT: it is kept, but \
             `--kernel sched_ext` will not pick it (sid's kernels have sched_ext)"
        );
    }
    Ok(EXIT_OK)
}

fn list(args: ListArgs) -> anyhow::Result<i32> {
    let listing = kernel::list(&runq::cache::kernels_dir()?, Path::new("/boot"));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        print!("{}", kernel::list::render_table(&listing));
    }
    Ok(EXIT_OK)
}
