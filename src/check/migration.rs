//! `migration_ratio`: no worker migrated more often than
//! `max_migration_ratio` per work unit or `max_migrations_per_sec`
//! (skipped without a bound).

use super::input::CheckInput;
use super::outcome::CheckOutcome;
use super::thresholds::Thresholds;
use super::workers::{unreported_note, Entry};

pub(super) const NAME: &str = "migration_ratio";

pub(super) fn check(input: &CheckInput, entries: &[Entry], t: &Thresholds) -> CheckOutcome {
    let total: u64 = entries
        .iter()
        .filter(|e| e.reported)
        .map(|e| e.report.migrations)
        .sum();
    if t.max_migration_ratio.is_none() && t.max_migrations_per_sec.is_none() {
        return CheckOutcome::skipped(
            NAME,
            format!(
                "no bound set (thresholds.max_migration_ratio, max_migrations_per_sec); {total} migrations in all"
            ),
        );
    }
    let mut offenders = Vec::new();
    let mut worst_ratio: f64 = 0.0;
    let mut worst_rate: f64 = 0.0;
    for e in entries.iter().filter(|e| e.reported) {
        let cg = &input.cgroups[e.cgroup];
        let m = e.report.migrations as f64;
        let ratio = m / e.report.work_units.max(1) as f64;
        let secs = e.wall_ns(cg) / 1e9;
        let rate = if secs > 0.0 { m / secs } else { 0.0 };
        worst_ratio = worst_ratio.max(ratio);
        worst_rate = worst_rate.max(rate);
        if let Some(max) = t.max_migration_ratio {
            if ratio > max {
                offenders.push(format!(
                    "{}: {} migrations over {} work units = {ratio:.4} per unit (max {max})",
                    e.label, e.report.migrations, e.report.work_units
                ));
            }
        }
        if let Some(max) = t.max_migrations_per_sec {
            if rate > max {
                offenders.push(format!(
                    "{}: {} migrations in {secs:.2} s = {rate:.1}/s (max {max}/s)",
                    e.label, e.report.migrations
                ));
            }
        }
    }
    let mut out = CheckOutcome::new(
        NAME,
        offenders.is_empty(),
        format!("{total} migrations; worst {worst_ratio:.4} per work unit, {worst_rate:.1}/s"),
    );
    out.details = offenders;
    out.details.extend(unreported_note(entries));
    let (value, limit) = match t.max_migration_ratio {
        Some(max) => (worst_ratio, max),
        None => (worst_rate, t.max_migrations_per_sec.unwrap_or_default()),
    };
    out.measured(Some(value), Some(limit))
}
