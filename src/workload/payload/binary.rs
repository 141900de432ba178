//! Finding a payload's program: PATH lookup, and the Debian package to
//! install when it is missing.

use std::path::{Path, PathBuf};

/// The Debian package that ships a binary runq knows about.
pub fn debian_package_for(binary: &str) -> Option<&'static str> {
    let base = Path::new(binary).file_name()?.to_str()?;
    Some(match base {
        "stress-ng" => "stress-ng",
        "hackbench" | "cyclictest" | "cyclicdeadline" | "pi_stress" | "signaltest"
        | "deadline_test" => "rt-tests",
        "perf" => "linux-perf",
        "busybox" => "busybox-static",
        "gcc" | "cc" => "gcc",
        _ => return None,
    })
}

/// Finds `binary` in PATH (or checks the path it gives).
pub fn resolve_binary(binary: &str) -> std::result::Result<PathBuf, String> {
    if binary.is_empty() {
        return Err("binary must not be empty; name the program to run".into());
    }
    if binary.contains('\0') {
        return Err("binary contains a NUL byte".into());
    }
    let install_hint = || match debian_package_for(binary) {
        Some(package) => {
            format!("install the Debian package {package} (apt-get install {package})")
        }
        None => "install it, or give its absolute path".to_string(),
    };
    if binary.contains('/') {
        let path = PathBuf::from(binary);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "binary \"{binary}\" does not exist or is not executable; {}",
                install_hint()
            ))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path_var) {
        let candidate = dir.join(binary);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "binary \"{binary}\" not found in PATH; {}",
        install_hint()
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
