//! The accelerator: KVM when `/dev/kvm` is a usable hardware KVM, else TCG
//! with a loud warning (see the module docs of `qemu` for why `kvm_pvm`
//! counts as unusable).
//!
//! Separate because it asks the host, not the run: tests and benchmarks
//! call [`kvm_unusable_reason`] to size their budgets without booting.

use std::path::Path;

use crate::error::RunqError;

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM if usable, else TCG with a warning.
    Auto,
    /// KVM, or fail.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// The accelerator actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The `-accel` argument (see the module docs for single-threaded TCG).
    pub(super) fn qemu_accel_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=single",
        }
    }

    /// The default `-cpu` model for this accelerator (see module docs).
    pub fn default_cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host,host-cache-info=off,l3-cache=on",
            Accel::Tcg => "max,vendor=GenuineIntel",
        }
    }
}

/// Why KVM cannot be used here, or `None` if it can.
pub fn kvm_unusable_reason() -> Option<String> {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Some(format!("cannot open /dev/kvm: {e}"));
    }
    let hardware = ["kvm_intel", "kvm_amd"]
        .iter()
        .any(|m| Path::new("/sys/module").join(m).exists());
    if Path::new("/sys/module/kvm_pvm").exists() && !hardware {
        return Some(
            "/dev/kvm is provided by kvm_pvm (software virtualization that runs only \
             PVM-enabled guest kernels at speed)"
                .to_string(),
        );
    }
    None
}

/// Picks the accelerator, warning loudly on a fallback to TCG.
pub fn choose_accel(choice: AccelChoice) -> anyhow::Result<Accel> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => match kvm_unusable_reason() {
            None => Ok(Accel::Kvm),
            Some(why) => Err(RunqError::environment(format!(
                "--accel kvm: {why}; use --accel tcg (slow) or enable KVM \
                 (load kvm_intel/kvm_amd, add yourself to the kvm group)"
            ))),
        },
        AccelChoice::Auto => match kvm_unusable_reason() {
            None => Ok(Accel::Kvm),
            Some(why) => {
                // Once per process: a test harness boots many guests.
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    eprintln!(
                        "runq: WARNING: KVM is not usable ({why}); falling back to TCG software \
                         emulation, which is many times slower. Pass --accel tcg to silence this."
                    )
                });
                Ok(Accel::Tcg)
            }
        },
    }
}
