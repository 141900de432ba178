//! The kernel log's sched_ext lines, read from `/dev/kmsg` without
//! blocking, from the moment the reader was opened.
//!
//! The kernel logs `sched_ext: BPF scheduler "NAME" enabled` and
//! `sched_ext: BPF scheduler "NAME" disabled (REASON)`; an error exit adds
//! `sched_ext: NAME: MESSAGE` and a stack trace (lines indented by spaces)
//! right after. [`ScxLog`] turns records into [`ScxLogEvent`]s and keeps
//! the detail lines with the disable they follow.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

use serde::{Deserialize, Serialize};

/// Most detail lines kept per disable (the stack trace is cut there).
const MAX_DETAIL_LINES: usize = 24;
/// Longest record `/dev/kmsg` returns (the kernel's limit is below this).
const RECORD_BUFFER: usize = 8192;

/// One kernel log record: its sequence number, time since boot and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsgRecord {
    pub seq: u64,
    pub usec: u64,
    pub text: String,
}

/// Parses one `/dev/kmsg` record: `PRI,SEQ,USEC,FLAGS[,...];TEXT` followed
/// by optional ` KEY=VALUE` lines, which are dropped. `\xNN` escapes in the
/// text are decoded.
pub fn parse_record(raw: &str) -> Option<KmsgRecord> {
    let (prefix, rest) = raw.split_once(';')?;
    let mut fields = prefix.split(',');
    let _priority = fields.next()?;
    let seq = fields.next()?.parse().ok()?;
    let usec = fields.next()?.parse().ok()?;
    let text = rest.split('\n').next().unwrap_or("");
    Some(KmsgRecord {
        seq,
        usec,
        text: unescape(text),
    })
}

fn unescape(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = text.get(i + 2..i + 4).unwrap_or("");
            let digits = hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit());
            if let (true, Ok(b)) = (digits, u8::from_str_radix(hex, 16)) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads `/dev/kmsg` without blocking, starting at its end when opened.
pub struct KmsgReader {
    file: File,
    buffer: Vec<u8>,
}

impl KmsgReader {
    /// Opens `/dev/kmsg` and skips what is already logged.
    pub fn open() -> std::io::Result<KmsgReader> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        file.seek(SeekFrom::End(0))?;
        Ok(KmsgReader {
            file,
            buffer: vec![0; RECORD_BUFFER],
        })
    }

    /// Every record logged since the last call (empty when none).
    pub fn read_new(&mut self) -> Vec<KmsgRecord> {
        let mut records = Vec::new();
        loop {
            match self.file.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => {
                    let raw = String::from_utf8_lossy(&self.buffer[..n]);
                    records.extend(parse_record(&raw));
                }
                // Records were overwritten before we read them: the next
                // read continues with the oldest one left.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => break,
            }
        }
        records
    }
}

/// What a sched_ext log line says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ScxLogEvent {
    Enabled {
        ops: String,
        usec: u64,
    },
    Disabled {
        ops: String,
        reason: String,
        usec: u64,
        /// The lines that followed: the exit message and the stack trace.
        details: Vec<String>,
    },
}

/// Accumulates sched_ext events from kernel log records.
#[derive(Clone, Debug, Default)]
pub struct ScxLog {
    pub events: Vec<ScxLogEvent>,
    /// Whether the last record was part of a disable's report (so the
    /// next indented or `sched_ext: NAME:` line belongs to it).
    in_details: bool,
}

impl ScxLog {
    pub fn feed(&mut self, record: &KmsgRecord) {
        let text = record.text.as_str();
        if let Some(event) = parse_headline(text, record.usec) {
            self.in_details = matches!(event, ScxLogEvent::Disabled { .. });
            self.events.push(event);
            return;
        }
        let is_detail = text.starts_with("sched_ext: ") || text.starts_with(' ');
        if self.in_details && is_detail {
            if let Some(ScxLogEvent::Disabled { details, .. }) = self.events.last_mut() {
                if details.len() < MAX_DETAIL_LINES {
                    details.push(text.trim_end().to_owned());
                }
            }
        } else {
            self.in_details = false;
        }
    }

    /// The latest disable, if any.
    pub fn last_disable(&self) -> Option<&ScxLogEvent> {
        self.events
            .iter()
            .rev()
            .find(|e| matches!(e, ScxLogEvent::Disabled { .. }))
    }
}

/// Parses `sched_ext: BPF scheduler "NAME" enabled|disabled (REASON)`.
fn parse_headline(text: &str, usec: u64) -> Option<ScxLogEvent> {
    let rest = text.strip_prefix("sched_ext: BPF scheduler \"")?;
    let (ops, verdict) = rest.split_once('"')?;
    let verdict = verdict.trim();
    if verdict == "enabled" {
        return Some(ScxLogEvent::Enabled {
            ops: ops.to_owned(),
            usec,
        });
    }
    let reason = verdict.strip_prefix("disabled")?.trim();
    let reason = reason
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(reason);
    Some(ScxLogEvent::Disabled {
        ops: ops.to_owned(),
        reason: reason.to_owned(),
        usec,
        details: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "bpfland_1.1.4_x86_64_unknown_linux_gnu";

    fn records(lines: &[&str]) -> Vec<KmsgRecord> {
        lines.iter().map(|l| parse_record(l).unwrap()).collect()
    }

    #[test]
    fn records_parse_with_escapes_and_dictionary_lines() {
        let r = parse_record("6,373,6351058,-;hello\\x20world\n SUBSYSTEM=cpu\n").unwrap();
        assert_eq!(
            (r.seq, r.usec, r.text.as_str()),
            (373, 6351058, "hello world")
        );
        assert!(parse_record("garbage").is_none());
    }

    #[test]
    fn a_stall_keeps_its_message_and_stack() {
        let lines = [
            format!("6,373,6351058,-;sched_ext: BPF scheduler \"{NAME}\" enabled"),
            format!("3,374,11209548,-;sched_ext: BPF scheduler \"{NAME}\" disabled (runnable task stall)"),
            format!("3,375,11210269,-;sched_ext: {NAME}: watchdog failed to check in for 5.004s"),
            "4,376,11210435,-;   __scx_exit+0x4f/0x70".to_string(),
            "4,377,11210696,-;   scx_tick+0x9f/0xb0".to_string(),
            "6,378,11210700,-;virtio_net: unrelated".to_string(),
            "6,379,11210701,-;   not ours".to_string(),
        ];
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut log = ScxLog::default();
        for r in records(&lines) {
            log.feed(&r);
        }
        assert_eq!(
            log.events[0],
            ScxLogEvent::Enabled {
                ops: NAME.into(),
                usec: 6351058
            }
        );
        let Some(ScxLogEvent::Disabled {
            reason, details, ..
        }) = log.last_disable()
        else {
            panic!("{:?}", log.events)
        };
        assert_eq!(reason, "runnable task stall");
        assert_eq!(details.len(), 3, "{details:?}");
        assert!(details[0].ends_with("watchdog failed to check in for 5.004s"));
    }

    #[test]
    fn sysrq_reason_parses() {
        let line = format!(
            "6,405,120397048,-;sched_ext: BPF scheduler \"{NAME}\" disabled (disabled by sysrq-S)"
        );
        let mut log = ScxLog::default();
        log.feed(&parse_record(&line).unwrap());
        let Some(ScxLogEvent::Disabled { reason, .. }) = log.last_disable() else {
            panic!()
        };
        assert_eq!(reason, "disabled by sysrq-S");
    }
}
