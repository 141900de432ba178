//! [`SchedPolicy`] and its one text spelling, shared by the command line
//! (`--policy fifo:50`), scenario files (`policy = "fifo:50"`) and reports
//! (`"policy": "fifo:50"`): `normal`, `batch`, `idle`, `ext`, `fifo:PRIO`,
//! `rr:PRIO`. Priorities are range-checked by the workload's validation,
//! not here, so the message names the group.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Scheduling policy applied by each worker to itself before the start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedPolicy {
    Normal,
    Batch,
    Idle,
    /// SCHED_FIFO with a priority in 1..=99.
    Fifo(u32),
    /// SCHED_RR with a priority in 1..=99.
    RoundRobin(u32),
    /// SCHED_EXT: run by the attached sched_ext scheduler (by the fair
    /// class while none is attached); for schedulers that do not take every
    /// task (not in switch-all mode).
    Ext,
}

/// What every policy error says after the text it rejects.
const POLICY_FORMS: &str = "use normal, batch, idle, ext, fifo:PRIO or rr:PRIO (PRIO 1..=99)";

impl SchedPolicy {
    /// The policy's name without its priority: `normal`, `batch`, `idle`,
    /// `fifo` or `rr`.
    pub fn name(&self) -> &'static str {
        match self {
            SchedPolicy::Normal => "normal",
            SchedPolicy::Batch => "batch",
            SchedPolicy::Idle => "idle",
            SchedPolicy::Fifo(_) => "fifo",
            SchedPolicy::RoundRobin(_) => "rr",
            SchedPolicy::Ext => "ext",
        }
    }

    /// A real-time policy (`fifo` or `rr`): priority, not weight, decides.
    pub fn is_realtime(&self) -> bool {
        matches!(self, SchedPolicy::Fifo(_) | SchedPolicy::RoundRobin(_))
    }
}

impl fmt::Display for SchedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedPolicy::Fifo(p) | SchedPolicy::RoundRobin(p) => write!(f, "{}:{p}", self.name()),
            _ => f.write_str(self.name()),
        }
    }
}

impl FromStr for SchedPolicy {
    /// `` `TEXT`: use normal, ... ``; callers prefix the flag or field.
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}`: {POLICY_FORMS}");
        let (name, prio) = match text.split_once(':') {
            Some((n, p)) => (n, Some(p.parse::<u32>().map_err(|_| bad())?)),
            None => (text, None),
        };
        Ok(match (name, prio) {
            ("normal", None) => SchedPolicy::Normal,
            ("batch", None) => SchedPolicy::Batch,
            ("idle", None) => SchedPolicy::Idle,
            ("ext", None) => SchedPolicy::Ext,
            ("fifo", Some(p)) => SchedPolicy::Fifo(p),
            ("rr", Some(p)) => SchedPolicy::RoundRobin(p),
            _ => return Err(bad()),
        })
    }
}

impl Serialize for SchedPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads the text spelling; scenario files written before it existed may
/// also say `{ fifo = 10 }` or `{ round_robin = 10 }`, which still read.
impl<'de> Deserialize<'de> for SchedPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PolicyVisitor)
    }
}

struct PolicyVisitor;

impl<'de> Visitor<'de> for PolicyVisitor {
    type Value = SchedPolicy;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a policy: {POLICY_FORMS}")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<SchedPolicy, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SchedPolicy, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom(format!("empty table: {POLICY_FORMS}")));
        };
        let prio: u32 = map.next_value()?;
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom(format!(
                "more than one policy: {POLICY_FORMS}"
            )));
        }
        match key.as_str() {
            "fifo" => Ok(SchedPolicy::Fifo(prio)),
            "round_robin" | "rr" => Ok(SchedPolicy::RoundRobin(prio)),
            other => Err(de::Error::custom(format!(
                "`{other}` takes no priority: {POLICY_FORMS}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_rejects_with_the_forms() {
        for p in [
            SchedPolicy::Normal,
            SchedPolicy::Batch,
            SchedPolicy::Idle,
            SchedPolicy::Ext,
            SchedPolicy::Fifo(50),
            SchedPolicy::RoundRobin(1),
        ] {
            assert_eq!(p.to_string().parse::<SchedPolicy>(), Ok(p.clone()));
        }
        assert_eq!(SchedPolicy::Fifo(50).to_string(), "fifo:50");
        for bad in ["fifo", "normal:3", "fifo(50)", "rr:x", ""] {
            let err = bad.parse::<SchedPolicy>().unwrap_err();
            assert!(err.contains("fifo:PRIO"), "{bad}: {err}");
        }
    }
}
