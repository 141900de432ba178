//! Host noise and verdicts: a check that failed while foreign load on the
//! run's CPUs was high ([`HostNoise::busy`]) is marked with the figures,
//! so its line says the host, not the scheduler, may be the cause. The
//! verdict itself stays a failure; `runq run --strict-host` turns such a
//! run's exit code into 3 (inconclusive). A failure on a quiet host is
//! never marked.
//!
//! For `longest_gap` the details also name a stall the stalled worker did
//! not spend waiting runnable (its schedstat run delay under
//! [`EXPLAINED_WAIT_SHARE`] of it): a hint that it was stopped or asleep,
//! not held off. It does not change the marking yet (see `annotate`).

use super::input::CheckInput;
use super::outcome::CheckOutcome;
use super::thresholds::Thresholds;
use super::workers::Entry;
use crate::host::HostNoise;

/// Share of a stall a worker must have spent runnable but waiting for the
/// stall to count as caused by contention.
pub const EXPLAINED_WAIT_SHARE: f64 = 0.5;

/// A stall needs this much of it sampled to be judged by its wait.
const MIN_COVERED_MS: f64 = 100.0;

/// Marks the failed checks the busy host may explain.
pub(super) fn annotate(
    checks: &mut [CheckOutcome],
    noise: Option<&HostNoise>,
    input: &CheckInput,
    entries: &[Entry],
    t: &Thresholds,
) {
    let Some(noise) = noise.filter(|n| n.busy) else {
        return;
    };
    let why = noise.describe();
    for c in checks.iter_mut().filter(|c| !c.passed) {
        if c.name == super::progress::NAME {
            // Said, not yet judged by: run delay is credited when a task
            // next runs, and under real-time hogs it was seen to cover
            // only part of a starved worker's stall.
            if let Some(stall) = unexplained_stall(noise, input, entries, t) {
                c.details.push(format!("while the host was busy, {stall}"));
            }
        }
        c.host_busy = Some(why.clone());
    }
}

/// The first counted stall the stalled worker did not spend waiting.
fn unexplained_stall(
    noise: &HostNoise,
    input: &CheckInput,
    entries: &[Entry],
    t: &Thresholds,
) -> Option<String> {
    super::progress::stalls(input, entries, t)
        .into_iter()
        .filter(|s| s.others_advanced)
        .find_map(|s| {
            // Only the sampled part of the stall (holds) can be judged.
            let (waited, covered) = noise.waited_ms(s.tid, s.from_ms, s.to_ms);
            (covered >= MIN_COVERED_MS && waited < EXPLAINED_WAIT_SHARE * covered).then(|| {
                format!(
                    "{} waited runnable only {waited:.0} ms of the {covered:.0} ms of its stall the holds sampled",
                    s.label
                )
            })
        })
}
