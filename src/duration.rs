//! The one duration grammar of runq: scenario files (TOML and DSL), payload
//! specs, `runq vm --timeout`, `runq run --duration`, `runq workload
//! --duration` all read durations through [`parse`].
//!
//! Grammar: a non-negative decimal number, optionally with a fraction and an
//! exponent (`1.5`, `.5`, `2e3`), then optional spaces, then a unit:
//!
//! | unit | meaning |
//! | --- | --- |
//! | `ns` | nanoseconds |
//! | `us` | microseconds |
//! | `ms` | milliseconds |
//! | `s`, `sec`, or none | seconds |
//! | `m`, `min` | minutes |
//! | `h` | hours |
//!
//! The value is computed exactly in nanoseconds (no floating point), and
//! anything finer than a nanosecond is dropped. The grammar has no range
//! beyond what a [`Duration`] holds: each caller checks its own range (a
//! run's duration must be positive, a VM timeout at most a week, ...) with
//! [`check_range`] or by hand, and names its field in the message.

use std::time::Duration;

/// Why a text is not a duration. The `Display` text is a complete sentence
/// part that a caller prefixes with the field name (`"--duration: ..."`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("the duration is empty; write e.g. 500ms, 2s or 1m")]
    Empty,
    #[error("{0:?} is negative; a duration is at least 0")]
    Negative(String),
    #[error("{0:?} does not start with a number; write e.g. 500ms, 2s or 1m")]
    NotANumber(String),
    #[error("unknown unit {unit:?} in {text:?}; use ns, us, ms, s, m or h (e.g. 500ms)")]
    UnknownUnit { text: String, unit: String },
    #[error("{0:?} is too large to be a duration")]
    TooLarge(String),
}

/// Units and their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("sec", 1_000_000_000),
    ("", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a duration in the grammar of the module header.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    if trimmed.starts_with('-') {
        return Err(DurationError::Negative(trimmed.to_string()));
    }
    let body = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let number = Number::scan(body).ok_or_else(|| DurationError::NotANumber(trimmed.into()))?;
    let unit = body[number.len..].trim();
    let Some(&(_, unit_ns)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(DurationError::UnknownUnit {
            text: trimmed.to_string(),
            unit: unit.to_string(),
        });
    };
    let nanos = number
        .nanos(unit_ns)
        .ok_or_else(|| DurationError::TooLarge(trimmed.to_string()))?;
    let secs = u64::try_from(nanos / 1_000_000_000)
        .map_err(|_| DurationError::TooLarge(trimmed.to_string()))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Checks `value` (parsed from `text`) against `min..=max` and says what is
/// wrong in terms of `what` (the field or flag): `"--duration 0: must be at
/// least 1ms"`.
pub fn check_range(
    what: &str,
    text: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    if value < min {
        return Err(if min == Duration::from_nanos(1) {
            format!("{what} {:?}: must be more than 0", text.trim())
        } else {
            format!("{what} {:?}: must be at least {}", text.trim(), format(min))
        });
    }
    if value > max {
        return Err(format!(
            "{what} {:?}: must be at most {}",
            text.trim(),
            format(max)
        ));
    }
    Ok(value)
}

/// Formats a duration so that [`parse`] reads it back exactly, in the
/// largest of `s`, `ms`, `us`, `ns` that keeps it whole (`1500ms`, `2s`).
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        "0s".to_string()
    } else if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// serde for a `Duration` written as text in this grammar (for
/// `#[serde(with = "runq::duration::text")]`).
pub mod text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The number at the start of a duration: its significant digits as an
/// integer and the power of ten they are scaled by.
struct Number {
    digits: u128,
    /// `value = digits * 10^exponent`.
    exponent: i64,
    /// Bytes of the text the number took.
    len: usize,
    /// Some digit did not fit `digits` (the value is too large).
    overflow: bool,
}

impl Number {
    /// Scans `[0-9]*(\.[0-9]*)?([eE][+-]?[0-9]+)?` with at least one digit
    /// before the exponent.
    fn scan(text: &str) -> Option<Number> {
        let bytes = text.as_bytes();
        let mut number = Number {
            digits: 0,
            exponent: 0,
            len: 0,
            overflow: false,
        };
        let mut i = 0;
        let mut seen_digit = false;
        let mut in_fraction = false;
        while i < bytes.len() {
            match bytes[i] {
                b'0'..=b'9' => {
                    seen_digit = true;
                    number.push_digit(bytes[i] - b'0', in_fraction);
                }
                b'.' if !in_fraction => in_fraction = true,
                _ => break,
            }
            i += 1;
        }
        if !seen_digit {
            return None;
        }
        number.len = i;
        if let Some((exponent, used)) = scan_exponent(&bytes[i..]) {
            number.exponent = number.exponent.saturating_add(exponent);
            number.len += used;
        }
        Some(number)
    }

    fn push_digit(&mut self, digit: u8, in_fraction: bool) {
        match self
            .digits
            .checked_mul(10)
            .and_then(|d| d.checked_add(u128::from(digit)))
        {
            Some(d) if !self.overflow => {
                self.digits = d;
                if in_fraction {
                    self.exponent -= 1;
                }
            }
            // Digits past what u128 holds: an integer digit scales the
            // value up, a fraction digit is below any precision we keep.
            _ => {
                self.overflow = true;
                if !in_fraction {
                    self.exponent += 1;
                }
            }
        }
    }

    /// `self * unit_ns`, in whole nanoseconds, if it fits.
    fn nanos(&self, unit_ns: u128) -> Option<u128> {
        if self.digits == 0 {
            return Some(0);
        }
        let scaled = self.digits.checked_mul(unit_ns)?;
        if self.exponent >= 0 {
            let factor = 10u128.checked_pow(u32::try_from(self.exponent).ok()?)?;
            scaled.checked_mul(factor)
        } else {
            let divisor = u32::try_from(self.exponent.unsigned_abs())
                .ok()
                .and_then(|e| 10u128.checked_pow(e));
            Some(divisor.map_or(0, |d| scaled / d))
        }
    }
}

/// `[eE][+-]?[0-9]+` at the start of `bytes`: (exponent, bytes used).
fn scan_exponent(bytes: &[u8]) -> Option<(i64, usize)> {
    if !matches!(bytes.first(), Some(b'e' | b'E')) {
        return None;
    }
    let mut i = 1;
    let negative = match bytes.get(1) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut value: i64 = 0;
    while let Some(d @ b'0'..=b'9') = bytes.get(i) {
        value = value.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        i += 1;
    }
    if i == start {
        return None;
    }
    Some((if negative { -value } else { value }, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn every_unit_and_the_bare_number() {
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2s"), Duration::from_secs(2));
        assert_eq!(ok("2sec"), Duration::from_secs(2));
        assert_eq!(ok("5"), Duration::from_secs(5));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("3min"), Duration::from_secs(180));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok(" 30 s "), Duration::from_secs(30));
        assert_eq!(ok("+1s"), Duration::from_secs(1));
    }

    #[test]
    fn fractions_and_exponents_are_exact() {
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("5."), Duration::from_secs(5));
        assert_eq!(ok("0.1s"), Duration::from_millis(100));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        assert_eq!(ok("2e3ms"), Duration::from_secs(2));
        assert_eq!(ok("1E-3s"), Duration::from_millis(1));
        assert_eq!(ok("1.5ns"), Duration::from_nanos(1));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(
            ok("0.0000000000000000000000000000000000000000001s"),
            Duration::ZERO
        );
        assert_eq!(ok("0.5e-9223372036854775807s"), Duration::ZERO);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(parse(""), Err(DurationError::Empty));
        assert_eq!(parse("  "), Err(DurationError::Empty));
        assert_eq!(parse("-1s"), Err(DurationError::Negative("-1s".into())));
        assert_eq!(parse("soon"), Err(DurationError::NotANumber("soon".into())));
        assert_eq!(parse("."), Err(DurationError::NotANumber(".".into())));
        assert_eq!(parse("inf"), Err(DurationError::NotANumber("inf".into())));
        assert_eq!(
            parse("5 parsecs"),
            Err(DurationError::UnknownUnit {
                text: "5 parsecs".into(),
                unit: "parsecs".into()
            })
        );
        assert!(matches!(
            parse("1.2.3s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("2d"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("1e"),
            Err(DurationError::UnknownUnit { .. })
        ));
        for huge in ["1e99s", "1e99", "99999999999999999999999h", "1e400ms"] {
            assert_eq!(
                parse(huge),
                Err(DurationError::TooLarge(huge.into())),
                "{huge}"
            );
        }
        let long = "9".repeat(60) + "s";
        assert_eq!(parse(&long), Err(DurationError::TooLarge(long.clone())));
        let message = parse("1e99s").unwrap_err().to_string();
        assert!(message.contains("too large"), "{message}");
        assert!(!message.contains("unit"), "{message}");
    }

    #[test]
    fn the_largest_duration_parses_and_one_more_does_not() {
        let max_secs = u64::MAX.to_string();
        assert_eq!(ok(&max_secs), Duration::new(u64::MAX, 0));
        let past = (u128::from(u64::MAX) + 1).to_string();
        assert!(matches!(parse(&past), Err(DurationError::TooLarge(_))));
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(250),
            Duration::from_millis(1500),
            Duration::from_secs(86_400),
            Duration::new(3, 7),
        ] {
            assert_eq!(ok(&format(d)), d, "{}", format(d));
        }
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(2)), "2s");
    }

    #[test]
    fn ranges_name_the_field() {
        let zero = ok("0");
        let err = check_range(
            "--duration",
            "0",
            zero,
            Duration::from_nanos(1),
            Duration::MAX,
        )
        .unwrap_err();
        assert_eq!(err, "--duration \"0\": must be more than 0");
        let err = check_range(
            "timeout",
            "2h",
            ok("2h"),
            Duration::ZERO,
            Duration::from_secs(3600),
        )
        .unwrap_err();
        assert_eq!(err, "timeout \"2h\": must be at most 3600s");
    }
}
