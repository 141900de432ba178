//! Booting a VM for cases (host side): the test binary is the guest's
//! init, the plan names the cases to run in this boot, and each case's
//! output, verdict file and exit code come back framed on the report
//! channel (see [`crate::vm::guest_cases`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::case::Case;
use super::failure::CaseRun;
use super::outcome::CaseResult;
use crate::vm::channel::Frame;
use crate::vm::kernel::{self, KERNEL_ENV};
use crate::vm::qemu::{self, FrameSink};
use crate::vm::{GuestTask, VmConfig};

/// Temporary directories of case boots (the console log).
const BOOT_DIR_PREFIX: &str = "runq-cases";
/// Console lines shown with a failed case.
const CONSOLE_TAIL_LINES: usize = 30;

/// Timing of one boot, for the harness's summary and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct BootStats {
    pub cases: usize,
    pub boot_to_init: Option<Duration>,
    pub total: Duration,
}

/// Runs `cases` (all with one [`Case::boot_key`]) in one boot. Cases the
/// guest never started (it died during an earlier one) are `None`.
pub fn run_boot(cases: &[&Case]) -> (Vec<Option<CaseRun>>, BootStats) {
    let started = Instant::now();
    let mut stats = BootStats {
        cases: cases.len(),
        ..BootStats::default()
    };
    crate::scratch::reap(&std::env::temp_dir(), BOOT_DIR_PREFIX);
    let dir = match crate::scratch::dir_in(&std::env::temp_dir(), BOOT_DIR_PREFIX) {
        Ok(dir) => dir,
        Err(e) => {
            return (
                fail_all(cases, format!("creating a temporary directory: {e}")),
                stats,
            )
        }
    };
    let console = dir.path().join("console.log");
    let config = match config_for(cases, &console) {
        Ok(config) => config,
        Err(e) => return (fail_all(cases, format!("{e:#}")), stats),
    };
    let mut sink = CaseSink::new(cases.len(), console.clone());
    let outcome =
        qemu::prepare(&config).and_then(|boot| qemu::run_prepared_with(&config, &boot, &mut sink));
    stats.total = started.elapsed();
    let boot_error = match outcome {
        Ok(outcome) => {
            stats.boot_to_init = outcome.boot_to_init;
            None
        }
        Err(e) => Some(format!("{e:#}")),
    };
    let runs = sink.finish(cases, boot_error, &console);
    (runs, stats)
}

fn fail_all(cases: &[&Case], error: String) -> Vec<Option<CaseRun>> {
    cases
        .iter()
        .map(|_| Some(CaseRun::failed_to_start(error.clone())))
        .collect()
}

/// The VM for a group of cases: their topology, memory, kernel, and a
/// timeout covering all of them.
fn config_for(cases: &[&Case], console: &Path) -> anyhow::Result<VmConfig> {
    let first = cases
        .first()
        .ok_or_else(|| anyhow::anyhow!("no cases to run"))?;
    let mut config = VmConfig::new(GuestTask::Cases(
        cases.iter().map(|c| c.name.clone()).collect(),
    ));
    config.topology = first.topology;
    config.memory_mib = first
        .memory_mib
        .max(crate::vm::qemu::MIN_NODE_MEMORY_MIB * first.topology.nodes as u64);
    config.kernel = kernel_for(first);
    config.timeout = cases.iter().map(|c| c.timeout).sum();
    config.console = Some(console.to_path_buf());
    config.runq_exe = Some(std::env::current_exe()?);
    if let Some(scheduler) = first.def.scheduler {
        // In the guest at /usr/local/bin/<name>, on init's PATH.
        config.executables = vec![super::host::find_scheduler(scheduler)?];
    }
    Ok(config)
}

/// `RUNQ_KERNEL` overrides the attribute's `kernel`; without either the
/// VM runner's default applies.
fn kernel_for(case: &Case) -> Option<String> {
    let from_env = std::env::var_os(KERNEL_ENV).is_some_and(|v| !v.is_empty());
    if from_env {
        None
    } else {
        case.def.kernel.map(str::to_string)
    }
}

/// Collects the frames of each case.
struct CaseSink {
    current: Option<usize>,
    output: Vec<Vec<u8>>,
    results: Vec<Option<Vec<u8>>>,
    codes: Vec<Option<i32>>,
    started: Vec<Option<Instant>>,
    elapsed: Vec<Duration>,
    /// Console file offsets where each case started and ended.
    console_span: Vec<(u64, Option<u64>)>,
    console: PathBuf,
}

impl CaseSink {
    fn new(count: usize, console: PathBuf) -> CaseSink {
        CaseSink {
            current: None,
            output: vec![Vec::new(); count],
            results: vec![None; count],
            codes: vec![None; count],
            started: vec![None; count],
            elapsed: vec![Duration::ZERO; count],
            console_span: vec![(0, None); count],
            console,
        }
    }

    fn console_len(&self) -> u64 {
        std::fs::metadata(&self.console)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// One [`CaseRun`] per case: a verdict when its file arrived, the boot
    /// error for the case that was running when the boot failed, `None`
    /// for cases never started.
    fn finish(
        self,
        cases: &[&Case],
        boot_error: Option<String>,
        console: &Path,
    ) -> Vec<Option<CaseRun>> {
        let console_text = std::fs::read(console).unwrap_or_default();
        // A boot that failed before its first case fails every case.
        let none_started = self.started.iter().all(Option::is_none);
        if none_started {
            let error = boot_error.unwrap_or_else(|| "the guest ran none of the cases".to_string());
            let tail = tail(&String::from_utf8_lossy(&console_text), CONSOLE_TAIL_LINES);
            return cases
                .iter()
                .map(|_| {
                    let mut run = CaseRun::failed_to_start(error.clone());
                    run.console_tail = Some(tail.clone());
                    Some(run)
                })
                .collect();
        }
        let mut runs = Vec::with_capacity(cases.len());
        for index in 0..cases.len() {
            if self.started[index].is_none() {
                runs.push(None);
                continue;
            }
            let result = self.results[index]
                .as_ref()
                .map(|data| CaseResult::from_json(&String::from_utf8_lossy(data)));
            let (result, parse_error) = match result {
                Some(Ok(result)) => (Some(result), None),
                Some(Err(e)) => (None, Some(format!("{e:#}"))),
                None => (None, None),
            };
            let (from, to) = self.console_span[index];
            let to = to.unwrap_or(console_text.len() as u64) as usize;
            let slice = console_text
                .get(from as usize..to.min(console_text.len()))
                .unwrap_or(&[]);
            let console_tail = tail(&String::from_utf8_lossy(slice), CONSOLE_TAIL_LINES);
            let error = match (&result, self.codes[index]) {
                (Some(_), _) => None,
                (None, Some(code)) => Some(parse_error.unwrap_or_else(|| {
                    format!("the case's process exited with {code} without writing a verdict")
                })),
                (None, None) => Some(boot_error.clone().unwrap_or_else(|| {
                    "the guest stopped while this case was running".to_string()
                })),
            };
            runs.push(Some(CaseRun {
                result,
                output: String::from_utf8_lossy(&self.output[index]).into_owned(),
                error,
                console_tail: Some(console_tail),
                elapsed: self.elapsed[index],
            }));
        }
        runs
    }
}

impl FrameSink for CaseSink {
    fn frame(&mut self, frame: Frame) -> anyhow::Result<()> {
        match frame {
            Frame::CaseStart { index } if index < self.results.len() => {
                self.current = Some(index);
                self.started[index] = Some(Instant::now());
                self.console_span[index].0 = self.console_len();
            }
            Frame::CaseEnd { index, code } if index < self.results.len() => {
                self.codes[index] = Some(code);
                self.console_span[index].1 = Some(self.console_len());
                if let Some(started) = self.started[index] {
                    self.elapsed[index] = started.elapsed();
                }
                self.current = None;
            }
            Frame::File { index, data } if index < self.results.len() => {
                self.results[index] = Some(data);
            }
            Frame::Stdout(data) | Frame::Stderr(data) => {
                if let Some(index) = self.current {
                    self.output[index].extend_from_slice(&data);
                }
            }
            other => anyhow::bail!("unexpected frame from the guest: {other:?}"),
        }
        Ok(())
    }
}

fn tail(text: &str, lines: usize) -> String {
    let text = text.replace('\r', "");
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What this machine lacks to boot a case: qemu, the kernel, the
/// scheduler binary (checked on the host, before anything is built).
pub fn missing_for_vm(case: &Case) -> Option<super::host::Skip> {
    let missing = |reason: String| {
        Some(super::host::Skip {
            reason,
            topology_too_large: false,
        })
    };
    if let Err(e) = qemu::which_qemu() {
        return missing(format!("{e:#}"));
    }
    let places = match kernel::Places::standard() {
        Ok(places) => places,
        Err(e) => return missing(format!("{e:#}")),
    };
    let from_env = std::env::var(KERNEL_ENV).ok();
    if let Err(e) = kernel::choose(kernel_for(case).as_deref(), from_env.as_deref(), &places) {
        return missing(format!("no kernel to boot: {e:#}"));
    }
    if let Some(scheduler) = case.def.scheduler {
        if let Err(e) = super::host::find_scheduler(scheduler) {
            return missing(format!("{e:#}"));
        }
    }
    None
}
