//! Kernel boot benchmark with Debian sid's sched_ext kernel from runq's
//! cache (fetched first if missing), all measured in this run:
//!
//! 1. Boot to guest init, the compressed `vmlinuz` against the
//!    uncompressed `vmlinux` through qemu's PVH entry: the very same
//!    prepared boot (initramfs, topology, accelerator), only `-kernel`
//!    differs; 5 interleaved rounds, medians, and their ratio.
//! 2. The whole `runq vm --kernel sched_ext -- topo` wall time, median of 5.
//!
//! Target: PVH boot to init at most half of vmlinuz's under TCG.
//!
//! Run: `cargo bench --bench kernel`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runq::kernel::store;
use runq::vm::qemu::{prepare, run_prepared, GuestTask, VmConfig};
use runq::vm::AccelChoice;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");
const RUNS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn millis(samples: &[Duration]) -> Vec<u128> {
    samples.iter().map(Duration::as_millis).collect()
}

/// The newest cached sched_ext kernel, fetching sid's if there is none.
fn sched_ext_kernel() -> store::CachedKernel {
    let root = runq::cache::kernels_dir().expect("cache directory");
    let find = || {
        store::entries(&root)
            .into_iter()
            .find(|k| k.metadata.capabilities.sched_ext && k.metadata.capabilities.pvh)
    };
    if let Some(found) = find() {
        return found;
    }
    let status = Command::new(RUNQ)
        .args(["kernel", "fetch", "--suite", "sid"])
        .status()
        .expect("running runq kernel fetch");
    assert!(status.success(), "runq kernel fetch failed");
    find().expect("sid's kernel has sched_ext and PVH")
}

fn main() {
    let kernel = sched_ext_kernel();
    let accel = match runq::vm::qemu::kvm_unusable_reason() {
        None => AccelChoice::Kvm,
        Some(why) => {
            println!("KVM not usable ({why}): measuring TCG");
            AccelChoice::Tcg
        }
    };
    println!(
        "kernel {} from {}",
        kernel.metadata.release,
        kernel.dir.display()
    );

    // 1. Same prepared boot, two kernel images.
    let mut config = VmConfig::new(GuestTask::Script("true".to_string()));
    config.accel = accel;
    config.kernel = Some(kernel.metadata.release.clone());
    config.runq_exe = Some(PathBuf::from(RUNQ));
    let mut boot = prepare(&config).expect("preparing the boot");
    let images = [
        ("vmlinuz", kernel.file(store::VMLINUZ)),
        ("vmlinux (PVH)", kernel.file(store::VMLINUX)),
    ];
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..RUNS {
        for (i, (name, image)) in images.iter().enumerate() {
            boot.kernel = image.clone();
            let outcome = run_prepared(&config, &boot).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(outcome.exit_code, 0, "{name}: the guest script failed");
            samples[i].push(outcome.boot_to_init.expect("init reported in"));
        }
    }
    let medians = [median(samples[0].clone()), median(samples[1].clone())];
    for (i, (name, _)) in images.iter().enumerate() {
        println!(
            "boot to init, {name}: median {} ms (samples {:?})",
            medians[i].as_millis(),
            millis(&samples[i])
        );
    }
    let ratio = medians[1].as_secs_f64() / medians[0].as_secs_f64();
    println!(
        "PVH / vmlinuz boot-to-init ratio: {ratio:.2} (target <= 0.50 under TCG: {})",
        if ratio <= 0.5 { "met" } else { "MISSED" }
    );

    // 2. The whole command a user types.
    let mut walls = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let output = Command::new(RUNQ)
            .args(["vm", "--kernel", "sched_ext", "--", "topo"])
            .stdin(Stdio::null())
            .output()
            .expect("starting runq vm");
        walls.push(started.elapsed());
        assert!(
            output.status.success(),
            "runq vm failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    println!(
        "runq vm --kernel sched_ext -- topo, whole wall time: median {} ms (samples {:?})",
        median(walls.clone()).as_millis(),
        millis(&walls)
    );
}
