//! The report channel between guest init and the host: framed messages on
//! the guest's second serial port (ttyS1, in raw mode), separate from the
//! kernel console on ttyS0.
//!
//! A frame is a header line `@runq:<kind>:<arg>:<length>\n` followed by
//! `length` payload bytes. Bytes before a header (line noise) are skipped.

use anyhow::bail;

/// One message from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Init is running; the guest's uptime in milliseconds.
    Ready { uptime_ms: u64 },
    /// A chunk of the guest command's standard output.
    Stdout(Vec<u8>),
    /// A chunk of the guest command's standard error.
    Stderr(Vec<u8>),
    /// The content of output file number `index` (see the guest plan).
    File { index: usize, data: Vec<u8> },
    /// A note from init itself (shown on the host's stderr).
    Note(String),
    /// The guest command finished with this exit code.
    Exit { code: i32 },
    /// Test case number `index` of the plan starts; output frames until
    /// its [`Frame::CaseEnd`] belong to it.
    CaseStart { index: usize },
    /// Test case number `index` ended with this exit code.
    CaseEnd { index: usize, code: i32 },
}

const MAGIC: &[u8] = b"@runq:";
/// A header longer than this is garbage, not a frame.
const MAX_HEADER: usize = 96;
/// Largest payload accepted (a report file, a burst of output).
pub const MAX_PAYLOAD: usize = 256 << 20;

/// Encodes a frame for the wire.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let code_text: String;
    let (kind, arg, payload): (&str, String, &[u8]) = match frame {
        Frame::Ready { uptime_ms } => ("ready", uptime_ms.to_string(), &[]),
        Frame::Stdout(data) => ("out", String::new(), data),
        Frame::Stderr(data) => ("err", String::new(), data),
        Frame::File { index, data } => ("file", index.to_string(), data),
        Frame::Note(text) => ("note", String::new(), text.as_bytes()),
        Frame::Exit { code } => ("exit", code.to_string(), &[]),
        Frame::CaseStart { index } => ("case", index.to_string(), &[]),
        Frame::CaseEnd { index, code } => {
            code_text = code.to_string();
            ("done", index.to_string(), code_text.as_bytes())
        }
    };
    let mut out = format!("@runq:{kind}:{arg}:{}\n", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Incremental decoder for the host side.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or an
    /// error for a malformed header.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        // Skip anything before the next header.
        match find(&self.buffer, MAGIC) {
            Some(0) => {}
            Some(start) => {
                self.buffer.drain(..start);
            }
            None => {
                // Keep a tail that may be the start of a header.
                let keep = self.buffer.len().min(MAGIC.len() - 1);
                let cut = self.buffer.len() - keep;
                self.buffer.drain(..cut);
                return Ok(None);
            }
        }
        let Some(newline) = self
            .buffer
            .iter()
            .take(MAX_HEADER)
            .position(|&b| b == b'\n')
        else {
            if self.buffer.len() >= MAX_HEADER {
                let header = String::from_utf8_lossy(&self.buffer[..MAX_HEADER]).into_owned();
                self.buffer.drain(..MAGIC.len());
                bail!("malformed frame header {header:?}");
            }
            return Ok(None);
        };
        let header = String::from_utf8_lossy(&self.buffer[MAGIC.len()..newline]).into_owned();
        let mut parts = header.split(':');
        let (Some(kind), Some(arg), Some(length), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.buffer.drain(..=newline);
            bail!("malformed frame header {header:?}");
        };
        let length: usize = match length.parse() {
            Ok(n) if n <= MAX_PAYLOAD => n,
            _ => {
                self.buffer.drain(..=newline);
                bail!("bad frame length in {header:?}");
            }
        };
        let start = newline + 1;
        if self.buffer.len() < start + length {
            return Ok(None);
        }
        let payload = self.buffer[start..start + length].to_vec();
        self.buffer.drain(..start + length);
        frame_of(kind, arg, payload).map(Some)
    }
}

/// The frame a complete header's kind and argument and its payload make.
fn frame_of(kind: &str, arg: &str, payload: Vec<u8>) -> anyhow::Result<Frame> {
    let number = |what: &str| -> anyhow::Result<i64> {
        arg.parse()
            .map_err(|_| anyhow::anyhow!("frame {kind}: bad {what} {arg:?}"))
    };
    Ok(match kind {
        "ready" => Frame::Ready {
            uptime_ms: number("uptime")?.max(0) as u64,
        },
        "out" => Frame::Stdout(payload),
        "err" => Frame::Stderr(payload),
        "file" => Frame::File {
            index: number("index")?.max(0) as usize,
            data: payload,
        },
        "note" => Frame::Note(String::from_utf8_lossy(&payload).into_owned()),
        "exit" => Frame::Exit {
            code: number("exit code")? as i32,
        },
        "case" => Frame::CaseStart {
            index: number("case index")?.max(0) as usize,
        },
        "done" => Frame::CaseEnd {
            index: number("case index")?.max(0) as usize,
            code: String::from_utf8_lossy(&payload)
                .parse()
                .map_err(|_| anyhow::anyhow!("frame done: bad exit code"))?,
        },
        other => bail!("unknown frame kind {other:?}"),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_byte_by_byte_with_noise() {
        let frames = vec![
            Frame::Ready { uptime_ms: 1234 },
            Frame::Stdout(b"hello\n@runq:not a header\n".to_vec()),
            Frame::Stderr(vec![0, 255, 10, 13]),
            Frame::File {
                index: 2,
                data: b"{\"ok\":true}".to_vec(),
            },
            Frame::Note("mounted".into()),
            Frame::CaseStart { index: 1 },
            Frame::CaseEnd {
                index: 1,
                code: 101,
            },
            Frame::Exit { code: -3 },
        ];
        let mut wire = b"\r\n\x00garbage".to_vec();
        for frame in &frames {
            wire.extend(encode(frame));
        }
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for byte in wire {
            decoder.push(&[byte]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let mut decoder = Decoder::new();
        decoder.push(b"@runq:out:x\n");
        assert!(decoder.next_frame().is_err());
        decoder.push(b"@runq:exit:zz:0\n");
        assert!(decoder.next_frame().is_err());
        decoder.push(b"@runq:out::99999999999\n");
        assert!(decoder.next_frame().is_err());
        decoder.push(&encode(&Frame::Exit { code: 0 }));
        assert_eq!(decoder.next_frame().unwrap(), Some(Frame::Exit { code: 0 }));
    }
}
