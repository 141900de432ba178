//! The kernel's view of sched_ext, from `/sys/kernel/sched_ext`: `state`
//! (disabled, enabling, enabled, disabling), `enable_seq` (attachments
//! since boot), `switch_all`, `nr_rejected`, and while a scheduler is
//! attached `root/ops` (its name) and `root/events` (`NAME VALUE` counter
//! lines).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the kernel publishes sched_ext.
pub const SCHED_EXT_DIR: &str = "/sys/kernel/sched_ext";

/// The value of `state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScxState {
    Disabled,
    Enabling,
    Enabled,
    Disabling,
    /// A value this runq does not know (a newer kernel).
    Other(String),
}

impl ScxState {
    pub fn parse(text: &str) -> ScxState {
        match text.trim() {
            "disabled" => ScxState::Disabled,
            "enabling" => ScxState::Enabling,
            "enabled" => ScxState::Enabled,
            "disabling" => ScxState::Disabling,
            other => ScxState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ScxState::Disabled => "disabled",
            ScxState::Enabling => "enabling",
            ScxState::Enabled => "enabled",
            ScxState::Disabling => "disabling",
            ScxState::Other(s) => s,
        }
    }
}

/// Event counters of `root/events`, by name (`SCX_EV_...`).
pub type EventCounters = BTreeMap<String, u64>;

/// Reader of one sched_ext sysfs directory (the host's, normally).
#[derive(Clone, Debug)]
pub struct SchedExtSysfs {
    dir: PathBuf,
}

impl SchedExtSysfs {
    /// The running kernel's, or `None` when it has no sched_ext.
    pub fn host() -> Option<SchedExtSysfs> {
        let dir = PathBuf::from(SCHED_EXT_DIR);
        dir.join("state").is_file().then_some(SchedExtSysfs { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.read(name)?.parse().ok()
    }

    /// `state`; `Other("unreadable")` when it cannot be read.
    pub fn state(&self) -> ScxState {
        self.read("state").map_or_else(
            || ScxState::Other("unreadable".into()),
            |s| ScxState::parse(&s),
        )
    }

    /// The attached scheduler's name (`root/ops`), if one is attached.
    pub fn ops(&self) -> Option<String> {
        self.read("root/ops").filter(|s| !s.is_empty())
    }

    pub fn enable_seq(&self) -> Option<u64> {
        self.number("enable_seq")
    }

    pub fn switch_all(&self) -> Option<bool> {
        self.number("switch_all").map(|v| v != 0)
    }

    pub fn nr_rejected(&self) -> Option<u64> {
        self.number("nr_rejected")
    }

    /// `root/events`, if a scheduler is attached and the kernel has it.
    pub fn events(&self) -> Option<EventCounters> {
        std::fs::read_to_string(self.dir.join("root/events"))
            .ok()
            .map(|text| parse_events(&text))
    }
}

/// Parses `NAME VALUE` lines; other lines are skipped.
pub fn parse_events(text: &str) -> EventCounters {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect()
}

/// `later - earlier` per counter (counters only in `later` count from 0;
/// a counter that went down, as after a re-attach, gives 0).
pub fn event_delta(earlier: &EventCounters, later: &EventCounters) -> EventCounters {
    later
        .iter()
        .map(|(name, value)| {
            let before = earlier.get(name).copied().unwrap_or(0);
            (name.clone(), value.saturating_sub(before))
        })
        .collect()
}

/// Whether task `tid` is scheduled by sched_ext: `ext.enabled` in
/// `/proc/TID/sched`, else its policy is SCHED_EXT (7). `None` when the
/// task is gone or the kernel shows neither.
pub fn task_on_ext(tid: i32) -> Option<bool> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/sched")).ok()?;
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().parse::<i64>().ok())?
        })
    };
    match (field("ext.enabled"), field("policy")) {
        (Some(enabled), _) => Some(enabled != 0),
        (None, Some(policy)) => Some(policy == SCHED_EXT_POLICY),
        (None, None) => None,
    }
}

/// The SCHED_EXT scheduling policy number.
pub const SCHED_EXT_POLICY: i64 = 7;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_and_subtract() {
        let a = parse_events("SCX_EV_SELECT_CPU_FALLBACK 3\nSCX_EV_BYPASS_DURATION 155750803\n");
        assert_eq!(a["SCX_EV_SELECT_CPU_FALLBACK"], 3);
        let b =
            parse_events("SCX_EV_SELECT_CPU_FALLBACK 10\nSCX_EV_BYPASS_DURATION 1\nSCX_EV_NEW 4\n");
        let d = event_delta(&a, &b);
        assert_eq!(d["SCX_EV_SELECT_CPU_FALLBACK"], 7);
        assert_eq!(d["SCX_EV_BYPASS_DURATION"], 0);
        assert_eq!(d["SCX_EV_NEW"], 4);
    }

    #[test]
    fn states_parse() {
        assert_eq!(ScxState::parse("enabled\n"), ScxState::Enabled);
        assert_eq!(ScxState::parse("disabling"), ScxState::Disabling);
        assert_eq!(ScxState::parse("odd").as_str(), "odd");
    }

    #[test]
    fn own_task_reads_as_not_on_ext_or_unknown() {
        // The host kernel here has no sched_ext: either the fields are
        // absent (None) or the task is not on ext.
        let own = nix::unistd::gettid().as_raw();
        assert_ne!(task_on_ext(own), Some(true));
        assert_eq!(task_on_ext(i32::MAX), None);
    }
}
