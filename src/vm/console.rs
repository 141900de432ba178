//! Reading the guest's kernel console after a failed run: the kernel's own
//! report of a panic or oops (from its first line through the call trace),
//! else the last lines; and keeping the whole console in a file for later.

use std::path::{Path, PathBuf};

/// Lines that open a kernel report.
const REPORT_STARTS: &[&str] = &["BUG:", "Oops:", "general protection fault", "Kernel panic"];
/// The longest report shown (a runaway trace is cut here).
const REPORT_MAX_LINES: usize = 150;
/// Lines of console shown when there is no kernel report.
pub const TAIL_LINES: usize = 30;
/// How many kept consoles the cache holds.
const KEPT_CONSOLES: usize = 20;

/// The console text, lossy UTF-8, without carriage returns.
pub fn read(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&data).replace('\r', "")
}

/// The kernel's report in `console`: from the first line that opens one
/// (`BUG:`, `Oops:`, `general protection fault`, `Kernel panic`) through
/// the end of the panic (`---[ end Kernel panic`), else through the end of
/// the first trace (`---[ end trace`), else to the end of the console.
pub fn kernel_report(console: &str) -> Option<String> {
    let lines: Vec<&str> = console.lines().collect();
    let start = lines
        .iter()
        .position(|l| REPORT_STARTS.iter().any(|m| l.contains(m)))?;
    let after = &lines[start..];
    let end_of = |marker: &str| after.iter().position(|l| l.contains(marker));
    let end = end_of("---[ end Kernel panic")
        .or_else(|| end_of("---[ end trace"))
        .map_or(after.len(), |i| i + 1);
    let shown = &after[..end.min(REPORT_MAX_LINES)];
    let mut report = shown.join("\n");
    if end > REPORT_MAX_LINES {
        report.push_str(&format!(
            "\n[... {} more lines in the console file]",
            end - REPORT_MAX_LINES
        ));
    }
    Some(report)
}

/// The last `count` lines of `console`.
pub fn tail(console: &str, count: usize) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Whether the guest kernel panicked.
pub fn panicked(console: &str) -> bool {
    console.contains("Kernel panic")
}

/// The part of the console worth showing after a failure: the kernel's
/// report if there is one, else the last lines.
pub fn excerpt(console: &str) -> String {
    match kernel_report(console) {
        Some(report) => format!("--- the guest kernel's report ---\n{report}"),
        None if console.trim().is_empty() => "(the console is empty)".to_string(),
        None => format!(
            "--- last lines of the guest console ---\n{}",
            tail(console, TAIL_LINES)
        ),
    }
}

/// Copies the console at `path` into `dir` as `console-<unix seconds>-<pid>.log`
/// (keeping the newest `KEPT_CONSOLES`) and returns the copy's path.
pub fn keep(path: &Path, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let kept = dir.join(format!("console-{seconds}-{}.log", std::process::id()));
    std::fs::copy(path, &kept)?;
    trim(dir);
    Ok(kept)
}

fn trim(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut consoles: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("console-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    consoles.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in consoles.into_iter().skip(KEPT_CONSOLES) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OOPS: &str = "\
[    1.0] booting
[    2.0] Oops: int3: 0000 [#1] SMP NOPTI
[    2.0] CPU: 1 PID: 0 Comm: swapper/1
[    2.0] RIP: 0010:__schedule+0x1/0x2
[    2.0] Call Trace:
[    2.0]  <TASK>
[    2.0]  schedule_idle+0x2/0x3
[    2.0]  </TASK>
[    2.0] ---[ end trace 0000000000000000 ]---
[    2.1] Kernel panic - not syncing: Fatal exception in interrupt
[    2.1] ---[ end Kernel panic - not syncing: Fatal exception in interrupt ]---
";

    #[test]
    fn the_report_runs_from_the_oops_through_the_panic() {
        let report = kernel_report(OOPS).unwrap();
        assert!(report.starts_with("[    2.0] Oops: int3"), "{report}");
        assert!(report.contains("schedule_idle"), "{report}");
        assert!(
            report.ends_with("Fatal exception in interrupt ]---"),
            "{report}"
        );
        assert!(!report.contains("booting"));
        assert!(panicked(OOPS));
    }

    #[test]
    fn without_a_report_the_tail_is_shown() {
        assert_eq!(kernel_report("a\nb\n"), None);
        assert!(excerpt("a\nb\n").contains("last lines"));
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }

    #[test]
    fn an_oops_without_a_panic_ends_with_its_trace() {
        let text = "x\nBUG: kernel NULL pointer dereference\nCall Trace:\n f+0x1\n---[ end trace 1 ]---\nlater\n";
        let report = kernel_report(text).unwrap();
        assert!(report.starts_with("BUG:"));
        assert!(report.ends_with("---[ end trace 1 ]---"), "{report}");
    }
}
