//! Metrics from a payload's output: each declared metric is a regex with
//! one capture group, applied line by line to stdout and stderr together;
//! the numbers it matches are aggregated as they stream by (last, max, min,
//! sum or mean), so nothing but the current line is kept.

use std::collections::BTreeMap;

use regex::Regex;

use super::spec::{Aggregate, MetricSpec};

/// A single output line longer than this is cut (the rest is skipped), so a
/// program printing without newlines cannot grow memory without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Compiles a metric's pattern, insisting on exactly one capture group.
pub(crate) fn compile_pattern(metric: &MetricSpec) -> Result<Regex, String> {
    let regex = Regex::new(&metric.pattern).map_err(|e| format!("invalid regex: {e}"))?;
    let groups = regex.captures_len() - 1;
    if groups != 1 {
        return Err(format!(
            "\"{}\" has {groups} capture groups; it needs exactly one around the number \
             (use (?:...) for the others)",
            metric.pattern
        ));
    }
    Ok(regex)
}

/// Streaming aggregation of one metric.
#[derive(Debug)]
pub(super) struct MetricState {
    spec: MetricSpec,
    regex: Regex,
    count: u64,
    value: f64,
    sum: f64,
}

impl MetricState {
    pub(super) fn new(spec: &MetricSpec) -> Result<MetricState, String> {
        Ok(MetricState {
            spec: spec.clone(),
            regex: compile_pattern(spec)?,
            count: 0,
            value: 0.0,
            sum: 0.0,
        })
    }

    pub(super) fn feed(&mut self, line: &str) {
        let Some(text) = self.regex.captures(line).and_then(|c| c.get(1)) else {
            return;
        };
        let Ok(x) = text.as_str().trim().replace(',', "").parse::<f64>() else {
            return;
        };
        self.value = match (self.count, self.spec.aggregate) {
            (0, _) | (_, Aggregate::Last) => x,
            (_, Aggregate::Max) => self.value.max(x),
            (_, Aggregate::Min) => self.value.min(x),
            (_, Aggregate::Sum | Aggregate::Mean) => 0.0,
        };
        self.sum += x;
        self.count += 1;
    }

    pub(super) fn result(&self) -> Option<f64> {
        match (self.count, self.spec.aggregate) {
            (0, _) => None,
            (_, Aggregate::Sum) => Some(self.sum),
            (n, Aggregate::Mean) => Some(self.sum / n as f64),
            _ => Some(self.value),
        }
    }
}

/// What the metrics found once the output ended.
#[derive(Debug, Default)]
pub(super) struct MetricResults {
    pub values: BTreeMap<String, f64>,
    pub units: BTreeMap<String, String>,
    /// Declared metrics whose pattern never matched a number.
    pub missing: Vec<String>,
}

/// Splits output into lines and feeds each to every metric.
#[derive(Debug)]
pub(super) struct LineFeed {
    line: Vec<u8>,
    metrics: Vec<MetricState>,
}

impl LineFeed {
    pub(super) fn new(specs: &[MetricSpec]) -> Result<LineFeed, String> {
        Ok(LineFeed {
            line: Vec::new(),
            metrics: specs
                .iter()
                .map(MetricState::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Takes the next bytes of output (`\n` and `\r` end lines).
    pub(super) fn absorb(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            if byte == b'\n' || byte == b'\r' {
                self.end_line();
            } else if self.line.len() < MAX_LINE_BYTES {
                self.line.push(byte);
            }
        }
    }

    /// Ends the current line (at a line break, or when the output ends).
    pub(super) fn end_line(&mut self) {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            for metric in &mut self.metrics {
                metric.feed(&text);
            }
        }
        self.line.clear();
    }

    pub(super) fn results(&self) -> MetricResults {
        let mut results = MetricResults::default();
        for state in &self.metrics {
            match state.result() {
                Some(value) => {
                    results.values.insert(state.spec.name.clone(), value);
                }
                None => results.missing.push(state.spec.name.clone()),
            }
            if let Some(unit) = &state.spec.unit {
                results.units.insert(state.spec.name.clone(), unit.clone());
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_aggregate_streaming() {
        for (aggregate, want) in [
            (Aggregate::Last, 3.0),
            (Aggregate::Max, 9.0),
            (Aggregate::Min, 3.0),
            (Aggregate::Sum, 18.0),
            (Aggregate::Mean, 6.0),
        ] {
            let spec = MetricSpec {
                name: "v".into(),
                pattern: r"v=(\d+)".into(),
                aggregate,
                unit: None,
            };
            let mut m = MetricState::new(&spec).unwrap();
            assert_eq!(m.result(), None);
            for line in ["v=6", "nothing", "v=9", "v=x", "v=3"] {
                m.feed(line);
            }
            assert_eq!(m.result(), Some(want), "{aggregate:?}");
        }
    }

    #[test]
    fn lines_are_split_on_both_breaks_and_cut_when_too_long() {
        let spec = MetricSpec {
            name: "v".into(),
            pattern: r"v=(\d+)$".into(),
            aggregate: Aggregate::Sum,
            unit: Some("u".into()),
        };
        let mut feed = LineFeed::new(&[spec]).unwrap();
        feed.absorb(b"v=1\rv=");
        feed.absorb(b"2\nv=4");
        feed.end_line();
        // The metric lies past the cut: it is not seen.
        let mut long = vec![b'x'; MAX_LINE_BYTES];
        long.extend_from_slice(b"v=8\n");
        feed.absorb(&long);
        let results = feed.results();
        assert_eq!(results.values["v"], 7.0);
        assert_eq!(results.units["v"], "u");
        assert!(results.missing.is_empty());
    }
}
