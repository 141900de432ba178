//! VM-mode benchmark, all measured in this run on this machine.
//!
//! 1. Boot to guest init: `runq vm --timings -- topo`, the host-side time
//!    from starting qemu to init's first message on the report channel
//!    (and the guest's own uptime then); median of 5.
//! 2. A whole `runq vm -- <guest command>` (default `run steady --duration
//!    1s`; set RUNQ_BENCH_VM_CMD to change it) against booting the very
//!    same kernel and initramfs with a plain qemu command line, which runs
//!    the same guest command and powers off: wall-time medians over 5
//!    interleaved rounds, and runq's overhead ratio.
//!
//! Targets: boot to init <= 1.5 s with KVM; runq's overhead over plain
//! qemu <= 10%. Under TCG (no usable KVM) the boot target does not apply;
//! the accelerator used is printed.
//!
//! Run: `cargo bench --bench vm`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runq::vm::qemu::{prepare, GuestTask, VmConfig};
use runq::vm::AccelChoice;

const RUNQ: &str = env!("CARGO_BIN_EXE_runq");
const RUNS: usize = 5;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Parses "boot to init N ms (guest uptime M ms)" from `runq vm --timings`.
fn parse_timings(stderr: &str) -> Option<(Duration, Duration)> {
    let line = stderr.lines().find(|l| l.contains("boot to init"))?;
    let number_after = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((
        Duration::from_millis(number_after("boot to init")?),
        Duration::from_millis(number_after("guest uptime")?),
    ))
}

fn runq_vm(accel: &str, guest: &[String]) -> (Duration, String, i32) {
    let start = Instant::now();
    let output = Command::new(RUNQ)
        .args(["vm", "--timings", "--accel", accel, "--"])
        .args(guest)
        .stdin(Stdio::null())
        .output()
        .expect("starting runq vm");
    let elapsed = start.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (elapsed, stderr, output.status.code().unwrap_or(-1))
}

fn main() {
    let guest: Vec<String> = std::env::var("RUNQ_BENCH_VM_CMD")
        .unwrap_or_else(|_| "run steady --duration 1s".to_string())
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let accel = match runq::vm::qemu::kvm_unusable_reason() {
        None => "kvm",
        Some(why) => {
            println!("KVM not usable ({why}): measuring TCG");
            "tcg"
        }
    };

    // Warm the caches (base image, extracted kernel) outside the timings.
    let (_, stderr, _) = runq_vm(accel, &["topo".to_string()]);
    if parse_timings(&stderr).is_none() {
        panic!("runq vm does not boot here:\n{stderr}");
    }

    // 1. Boot to init.
    let mut boots = Vec::new();
    let mut uptimes = Vec::new();
    for _ in 0..RUNS {
        let (_, stderr, code) = runq_vm(accel, &["topo".to_string()]);
        assert_eq!(code, 0, "runq vm -- topo failed:\n{stderr}");
        let (boot, uptime) = parse_timings(&stderr).expect("timings line");
        boots.push(boot);
        uptimes.push(uptime);
    }
    let boot = median(boots.clone());
    println!(
        "boot to init ({accel}, 1n1l2c1t, 512M): median {} over {RUNS} (samples {:?}); guest uptime at init median {}",
        ms(boot),
        boots.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        ms(median(uptimes))
    );
    if accel == "kvm" {
        println!(
            "  target <= 1500 ms: {}",
            if boot <= Duration::from_millis(1500) {
                "met"
            } else {
                "MISSED"
            }
        );
    } else {
        println!("  target <= 1500 ms applies to KVM only");
    }

    // 2. Whole run vs plain qemu booting the same kernel and initramfs.
    let mut config = VmConfig::new(GuestTask::Command {
        args: guest.clone(),
        outputs: Vec::new(),
    });
    config.accel = if accel == "kvm" {
        AccelChoice::Kvm
    } else {
        AccelChoice::Tcg
    };
    config.runq_exe = Some(PathBuf::from(RUNQ));
    let boot_files = prepare(&config).expect("preparing the plain qemu boot");
    let plain_dir = tempfile::tempdir().unwrap();
    let console = plain_dir.path().join("console.log");
    let channel = plain_dir.path().join("channel.bin");
    let plain_args = boot_files.qemu_args(
        &format!("file:{}", console.display()),
        &format!("file:{}", channel.display()),
    );
    let mut runq_times = Vec::new();
    let mut plain_times = Vec::new();
    let mut guest_codes = Vec::new();
    for _ in 0..RUNS {
        let (elapsed, stderr, code) = runq_vm(accel, &guest);
        assert!(
            parse_timings(&stderr).is_some(),
            "runq vm -- {} did not finish:\n{stderr}",
            guest.join(" ")
        );
        guest_codes.push(code);
        runq_times.push(elapsed);

        let start = Instant::now();
        let status = Command::new("qemu-system-x86_64")
            .args(&plain_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("starting qemu");
        plain_times.push(start.elapsed());
        assert!(status.success(), "plain qemu failed: {status}");
        let report = std::fs::read(&channel).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&report).contains("@runq:exit:"),
            "plain qemu boot did not run the guest command"
        );
    }
    let runq_median = median(runq_times.clone());
    let plain_median = median(plain_times.clone());
    let overhead = runq_median.as_secs_f64() / plain_median.as_secs_f64() - 1.0;
    println!(
        "runq vm -- {} ({accel}): median {} (samples {:?}, guest exit codes {:?})",
        guest.join(" "),
        ms(runq_median),
        runq_times.iter().map(|d| d.as_millis()).collect::<Vec<_>>(),
        guest_codes
    );
    println!(
        "plain qemu, same kernel + initramfs: median {} (samples {:?})",
        ms(plain_median),
        plain_times
            .iter()
            .map(|d| d.as_millis())
            .collect::<Vec<_>>()
    );
    println!(
        "runq overhead over plain qemu: {:+.1}% (target <= 10%: {})",
        overhead * 100.0,
        if overhead <= 0.10 { "met" } else { "MISSED" }
    );
}
