//! Host noise: how much of the run's CPUs other processes took while the
//! run held.
//!
//! During every hold the executor ticks a [`NoiseSampler`] (at most every
//! `NOISE_INTERVAL`). Each tick reads the per-CPU busy time of the run's
//! CPUs from `/proc/stat` (user, nice, system, irq, softirq and steal:
//! steal is time a hypervisor gave this CPU to someone else) and the CPU
//! time and run delay of every worker and of runq itself from
//! `/proc/<tid>/schedstat` (nanoseconds). Busy time the run's own tasks do
//! not account for is *foreign*: other processes, interrupts, a noisy
//! neighbour VM. Between holds nothing is counted.
//!
//! Each sample also keeps every worker's own run delay, so a stall can be
//! checked against it: a worker that was runnable but waiting for most of
//! a stall was held off by others; one that was stopped or asleep was not.
//!
//! The run is *host-busy* when foreign work took at least
//! [`BUSY_FOREIGN_SHARE`] of the run's CPU capacity over all holds, or at
//! least [`BUSY_PEAK_SHARE`] within some second of them (a one-second
//! burst is enough to stall a worker). `/proc/stat` counts in ticks (10 ms
//! at USER_HZ 100), so a figure below about 2% is within its resolution.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use procfs::{Current, CurrentSI};
use serde::{Deserialize, Serialize};

/// Least time between two noise samples.
pub const NOISE_INTERVAL: Duration = Duration::from_millis(100);

/// Foreign CPU time over all holds, as a share of the run CPUs' capacity,
/// from which a run counts as host-busy.
pub const BUSY_FOREIGN_SHARE: f64 = 0.25;

/// Foreign share within any one-second window from which a run counts as
/// host-busy.
pub const BUSY_PEAK_SHARE: f64 = 0.5;

/// How long after a stall the wait that caused it may be credited (the
/// task runs, then the next sample reads it).
pub const WAIT_CREDIT_SLACK_MS: f64 = 2.0 * 100.0;

/// The window [`BUSY_PEAK_SHARE`] is measured over.
const PEAK_WINDOW_MS: f64 = 1000.0;

/// One interval between two noise ticks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NoiseSample {
    /// End of the interval, ms since the run's start.
    pub at_ms: f64,
    /// Length of the interval.
    pub interval_ms: f64,
    /// Busy time of the run's CPUs during the interval.
    pub busy_ms: f64,
    /// CPU time of the run's own tasks during the interval.
    pub run_ms: f64,
    /// Time the workers waited on a run queue during the interval, summed.
    pub run_delay_ms: f64,
    /// 1-minute load average at the tick.
    pub load1: f64,
    /// (tid, ms) each worker waited runnable during the interval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits: Vec<(i32, f64)>,
}

impl NoiseSample {
    /// Busy time not accounted for by the run, in ms (never negative).
    pub fn foreign_ms(&self) -> f64 {
        (self.busy_ms - self.run_ms).max(0.0)
    }
}

/// What the sampler saw over all holds of a run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HostNoise {
    /// The CPUs watched: those the run's workers were allowed on.
    pub cpus: Vec<usize>,
    /// Hold time covered by samples.
    pub held_ms: f64,
    /// `held_ms` times the number of CPUs watched.
    pub capacity_ms: f64,
    pub busy_ms: f64,
    pub run_cpu_ms: f64,
    /// CPU time taken on the watched CPUs by anything outside the run.
    pub foreign_cpu_ms: f64,
    /// `foreign_cpu_ms / capacity_ms`.
    pub foreign_share: f64,
    /// The largest foreign share within one second of holding.
    pub peak_foreign_share: f64,
    /// Time the workers spent runnable but waiting, summed over workers.
    pub workers_run_delay_ms: f64,
    /// Largest 1-minute load average seen.
    pub max_load1: f64,
    /// Foreign load was high enough to explain a failure (see the module
    /// docs for the thresholds).
    pub busy: bool,
    pub samples: Vec<NoiseSample>,
}

impl HostNoise {
    /// Builds the summary from the samples of a run.
    pub fn from_samples(cpus: Vec<usize>, samples: Vec<NoiseSample>) -> HostNoise {
        let held_ms: f64 = samples.iter().map(|s| s.interval_ms).sum();
        let capacity_ms = held_ms * cpus.len().max(1) as f64;
        let busy_ms: f64 = samples.iter().map(|s| s.busy_ms).sum();
        let run_cpu_ms: f64 = samples.iter().map(|s| s.run_ms).sum();
        let foreign_cpu_ms: f64 = samples.iter().map(NoiseSample::foreign_ms).sum();
        let foreign_share = if capacity_ms > 0.0 {
            foreign_cpu_ms / capacity_ms
        } else {
            0.0
        };
        let peak_foreign_share = peak_share(&samples, cpus.len().max(1) as f64);
        HostNoise {
            held_ms,
            capacity_ms,
            busy_ms,
            run_cpu_ms,
            foreign_cpu_ms,
            foreign_share,
            peak_foreign_share,
            workers_run_delay_ms: samples.iter().map(|s| s.run_delay_ms).sum(),
            max_load1: samples.iter().map(|s| s.load1).fold(0.0, f64::max),
            busy: foreign_share >= BUSY_FOREIGN_SHARE || peak_foreign_share >= BUSY_PEAK_SHARE,
            cpus,
            samples,
        }
    }

    /// How long worker `tid` waited runnable during a stall from `from_ms`
    /// to `to_ms` (ms since the run's start), and how much of the span
    /// samples covered (only holds are sampled): `(waited_ms, covered_ms)`.
    /// The kernel adds a wait to `run_delay` when the task next runs, so
    /// waits credited up to `WAIT_CREDIT_SLACK_MS` after the stall count.
    pub fn waited_ms(&self, tid: i32, from_ms: f64, to_ms: f64) -> (f64, f64) {
        let mut waited = 0.0;
        let mut covered = 0.0;
        for s in self.samples.iter().filter(|s| s.interval_ms > 0.0) {
            let start = s.at_ms - s.interval_ms;
            covered += (s.at_ms.min(to_ms) - start.max(from_ms)).max(0.0);
            if s.at_ms > from_ms && s.at_ms <= to_ms + WAIT_CREDIT_SLACK_MS {
                waited += s.waits.iter().find(|w| w.0 == tid).map_or(0.0, |w| w.1);
            }
        }
        (waited, covered)
    }

    /// One line for a failure: the figures that make the host busy.
    pub fn describe(&self) -> String {
        format!(
            "foreign processes took {:.0}% of CPUs {} during the holds ({:.0} of {:.0} ms CPU; peak {:.0}% within a second), load average up to {:.1}",
            self.foreign_share * 100.0,
            crate::topology::format_cpu_list(&self.cpus),
            self.foreign_cpu_ms,
            self.capacity_ms,
            self.peak_foreign_share * 100.0,
            self.max_load1
        )
    }
}

/// The largest foreign share over windows of consecutive samples at least
/// [`PEAK_WINDOW_MS`] long (the whole run when it is shorter).
fn peak_share(samples: &[NoiseSample], cpus: f64) -> f64 {
    let window = PEAK_WINDOW_MS.min(samples.iter().map(|s| s.interval_ms).sum());
    let mut peak: f64 = 0.0;
    let mut start = 0;
    let (mut foreign, mut held) = (0.0, 0.0);
    for s in samples {
        foreign += s.foreign_ms();
        held += s.interval_ms;
        while held - samples[start].interval_ms >= window {
            foreign -= samples[start].foreign_ms();
            held -= samples[start].interval_ms;
            start += 1;
        }
        if held > 0.0 && held >= window - 1e-9 {
            peak = peak.max(foreign / (held * cpus));
        }
    }
    peak
}

/// Busy milliseconds of each CPU since boot.
fn busy_ms_per_cpu() -> HashMap<usize, f64> {
    let Ok(stat) = procfs::KernelStats::current() else {
        return HashMap::new();
    };
    let tick_ms = 1e3 / procfs::ticks_per_second() as f64;
    stat.cpu_time
        .iter()
        .enumerate()
        .map(|(cpu, t)| {
            let ticks = t.user
                + t.nice
                + t.system
                + t.irq.unwrap_or(0)
                + t.softirq.unwrap_or(0)
                + t.steal.unwrap_or(0);
            (cpu, ticks as f64 * tick_ms)
        })
        .collect()
}

/// (CPU time, run delay) of a task in ns, from `/proc/<tid>/schedstat`.
fn schedstat(tid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    Some((it.next()??, it.next()??))
}

fn load1() -> f64 {
    procfs::LoadAverage::current()
        .map(|l| l.one as f64)
        .unwrap_or(0.0)
}

/// Reading at one tick.
struct Reading {
    at: Instant,
    busy_ms: f64,
}

/// Samples host noise during holds; see the module docs.
pub struct NoiseSampler {
    run_start: Instant,
    cpus: Vec<usize>,
    last: Option<Reading>,
    /// tid -> (CPU ns, run delay ns) at the previous tick.
    tasks: HashMap<i32, (u64, u64)>,
    samples: Vec<NoiseSample>,
}

impl NoiseSampler {
    /// A sampler for a run that started at `run_start`.
    pub fn new(run_start: Instant) -> Self {
        NoiseSampler {
            run_start,
            cpus: Vec::new(),
            last: None,
            tasks: HashMap::new(),
            samples: Vec::new(),
        }
    }

    fn busy_of(&self, per_cpu: &HashMap<usize, f64>) -> f64 {
        self.cpus.iter().filter_map(|c| per_cpu.get(c)).sum::<f64>()
    }

    /// A hold starts: the run's CPUs and its tasks (worker tids; runq
    /// itself is added) are the baseline.
    pub fn begin(&mut self, cpus: &[usize], tids: &[i32]) {
        for c in cpus {
            if !self.cpus.contains(c) {
                self.cpus.push(*c);
            }
        }
        self.cpus.sort_unstable();
        self.tasks.clear();
        let _ = self.delta_tasks(tids);
        let busy_ms = self.busy_of(&busy_ms_per_cpu());
        self.last = Some(Reading {
            at: Instant::now(),
            busy_ms,
        });
    }

    /// CPU time and run delay (ms) the tasks accrued since the last tick;
    /// a task seen for the first time only sets its baseline.
    fn delta_tasks(&mut self, tids: &[i32]) -> (f64, f64, Vec<(i32, f64)>) {
        let me = std::process::id() as i32;
        let mut run_ns = 0u64;
        let mut delay_ns = 0u64;
        let mut waits = Vec::new();
        let mut seen = HashMap::new();
        for &tid in tids.iter().chain(std::iter::once(&me)) {
            let Some((cpu, delay)) = schedstat(tid) else {
                continue;
            };
            if let Some((c0, d0)) = self.tasks.get(&tid) {
                run_ns += cpu.saturating_sub(*c0);
                if tid != me {
                    let waited = delay.saturating_sub(*d0);
                    delay_ns += waited;
                    waits.push((tid, waited as f64 / 1e6));
                }
            }
            seen.insert(tid, (cpu, delay));
        }
        self.tasks = seen;
        (run_ns as f64 / 1e6, delay_ns as f64 / 1e6, waits)
    }

    /// Takes a sample if `NOISE_INTERVAL` passed since the last one (or
    /// `force`). Does nothing outside a hold.
    pub fn tick(&mut self, tids: &[i32], force: bool) {
        let Some(last) = &self.last else {
            return;
        };
        let now = Instant::now();
        if !force && now.duration_since(last.at) < NOISE_INTERVAL {
            return;
        }
        let interval_ms = now.duration_since(last.at).as_secs_f64() * 1e3;
        let last_busy = last.busy_ms;
        let busy_ms = self.busy_of(&busy_ms_per_cpu());
        let (run_ms, run_delay_ms, waits) = self.delta_tasks(tids);
        self.samples.push(NoiseSample {
            at_ms: now.duration_since(self.run_start).as_secs_f64() * 1e3,
            interval_ms,
            busy_ms: (busy_ms - last_busy).max(0.0),
            run_ms,
            run_delay_ms,
            load1: load1(),
            waits,
        });
        self.last = Some(Reading { at: now, busy_ms });
    }

    /// The hold ends: a last sample, then nothing counts until the next
    /// [`NoiseSampler::begin`].
    pub fn end(&mut self, tids: &[i32]) {
        self.tick(tids, true);
        self.last = None;
    }

    /// The figures of every hold so far.
    pub fn finish(self) -> HostNoise {
        HostNoise::from_samples(self.cpus, self.samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: f64, busy_ms: f64, run_ms: f64) -> NoiseSample {
        NoiseSample {
            at_ms,
            interval_ms: 100.0,
            busy_ms,
            run_ms,
            run_delay_ms: 0.0,
            load1: 1.0,
            waits: vec![(7, 50.0)],
        }
    }

    #[test]
    fn foreign_time_is_busy_time_the_run_did_not_use() {
        // 2 CPUs, 2 s: the run used 150 of 200 ms busy per 100 ms.
        let samples: Vec<_> = (1..=20)
            .map(|i| sample(i as f64 * 100.0, 200.0, 150.0))
            .collect();
        let n = HostNoise::from_samples(vec![0, 1], samples);
        assert!((n.capacity_ms - 4000.0).abs() < 1e-9);
        assert!((n.foreign_cpu_ms - 1000.0).abs() < 1e-9);
        assert!((n.foreign_share - 0.25).abs() < 1e-9);
        assert!(n.busy);
    }

    #[test]
    fn a_one_second_burst_makes_the_host_busy_even_when_the_average_is_low() {
        let mut samples: Vec<_> = (1..=50)
            .map(|i| sample(i as f64 * 100.0, 100.0, 100.0))
            .collect();
        for s in &mut samples[10..20] {
            s.busy_ms = 200.0; // a foreign task takes one of two CPUs for 1 s
            s.run_ms = 80.0;
        }
        let n = HostNoise::from_samples(vec![0, 1], samples);
        assert!(n.foreign_share < BUSY_FOREIGN_SHARE, "{}", n.foreign_share);
        assert!((n.peak_foreign_share - 0.6).abs() < 1e-9, "{n:?}");
        assert!(n.busy);
    }

    #[test]
    fn a_worker_s_wait_is_prorated_over_a_span() {
        let samples: Vec<_> = (1..=10)
            .map(|i| sample(i as f64 * 100.0, 200.0, 150.0))
            .collect();
        let n = HostNoise::from_samples(vec![0, 1], samples);
        // 50 ms per 100 ms interval; 250..550 is 300 ms covered; waits
        // credited at 300..=700 ms (the slack) count: 5 samples.
        let (waited, covered) = n.waited_ms(7, 250.0, 550.0);
        assert!((waited - 250.0).abs() < 1e-9 && (covered - 300.0).abs() < 1e-9);
        assert_eq!(n.waited_ms(8, 0.0, 1000.0), (0.0, 1000.0));
        assert_eq!(n.waited_ms(7, 2000.0, 3000.0), (0.0, 0.0));
    }

    #[test]
    fn a_quiet_host_is_not_busy() {
        let samples: Vec<_> = (1..=20)
            .map(|i| sample(i as f64 * 100.0, 200.0, 195.0))
            .collect();
        let n = HostNoise::from_samples(vec![0, 1], samples);
        assert!(!n.busy, "{n:?}");
    }
}
