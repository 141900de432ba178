//! Reading the documents `compare` and `report --html` take: a single
//! run's report (`runq run --json`) or a repeated run's
//! ([`RepeatReport`], `runq run --repeat N --json`). Every problem is bad
//! input (exit 2) naming the file and what is wrong with it: unreadable,
//! empty, truncated, not JSON, another schema version, or the path of the
//! field that does not fit.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::repeat::{RepeatReport, REPEAT_KIND, REPEAT_SCHEMA_VERSION};
use crate::error::RunqError;
use crate::report::{RunReport, REPORT_SCHEMA_VERSION};

/// A document read from a file.
#[derive(Clone, Debug)]
pub enum Document {
    Run(Box<RunReport>),
    Repeat(Box<RepeatReport>),
}

impl Document {
    /// The runs it holds (one for a single run).
    pub fn runs(&self) -> &[RunReport] {
        match self {
            Document::Run(r) => std::slice::from_ref(r.as_ref()),
            Document::Repeat(r) => &r.runs,
        }
    }

    pub fn scenario(&self) -> &str {
        match self {
            Document::Run(r) => &r.scenario,
            Document::Repeat(r) => &r.scenario,
        }
    }
}

fn bad(label: &str, what: String) -> anyhow::Error {
    RunqError::bad_input(format!("{label}: {what}"))
}

fn typed<T: DeserializeOwned>(
    label: &str,
    kind: &str,
    value: serde_json::Value,
) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        bad(
            label,
            format!(
                "malformed {kind} at `{path}`: {}; re-create it with this runq",
                e.into_inner()
            ),
        )
    })
}

/// Parses a document; `label` names it in messages (usually the path).
pub fn parse_document(label: &str, text: &str) -> anyhow::Result<Document> {
    if text.trim().is_empty() {
        return Err(bad(
            label,
            "empty file; expected a report written by `runq run --json FILE`".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        if e.is_eof() {
            bad(
                label,
                format!(
                    "truncated: the JSON ends at line {} column {} before the document is complete (was the writer interrupted?)",
                    e.line(),
                    e.column()
                ),
            )
        } else {
            bad(label, format!("not JSON: {e}"))
        }
    })?;
    let Some(object) = value.as_object() else {
        return Err(bad(
            label,
            "not a runq report: expected a JSON object with a schema_version".into(),
        ));
    };
    let kind = object
        .get("kind")
        .map(|k| k.as_str().unwrap_or("?").to_string());
    let version = object.get("schema_version").and_then(|v| v.as_u64());
    let (expected, what) = match kind.as_deref() {
        None => (REPORT_SCHEMA_VERSION, "run report"),
        Some(REPEAT_KIND) => (REPEAT_SCHEMA_VERSION, "repeat report"),
        Some(other) => {
            return Err(bad(
                label,
                format!("kind \"{other}\" is not a runq report (expected \"{REPEAT_KIND}\" or a single run's report without a kind)"),
            ))
        }
    };
    if version != Some(expected as u64) {
        return Err(bad(
            label,
            format!(
                "{what} schema_version {} is not supported; this runq reads version {expected} (re-run the scenario with this runq)",
                version.map_or("missing".to_string(), |v| v.to_string())
            ),
        ));
    }
    if kind.is_none() {
        return Ok(Document::Run(Box::new(typed(label, what, value)?)));
    }
    let repeat: RepeatReport = typed(label, what, value)?;
    if repeat.runs.len() != repeat.repeat || repeat.runs.is_empty() {
        return Err(bad(
            label,
            format!(
                "malformed repeat report: `repeat` says {} runs but `runs` holds {}",
                repeat.repeat,
                repeat.runs.len()
            ),
        ));
    }
    Ok(Document::Repeat(Box::new(repeat)))
}

/// Reads and parses a document file.
pub fn read_document(path: &Path) -> anyhow::Result<Document> {
    let label = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(&label, format!("cannot read: {e}")))?;
    parse_document(&label, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", parse_document("r.json", text).unwrap_err())
    }

    #[test]
    fn problems_are_named() {
        assert!(err("").contains("r.json: empty file"), "{}", err(""));
        assert!(err("{\"schema_version\": 1, \"scen").contains("r.json: truncated"));
        assert!(err("nope").contains("r.json: not JSON"));
        assert!(err("[1]").contains("expected a JSON object"));
        assert!(err("{\"schema_version\": 9}").contains("schema_version 9 is not supported"));
        assert!(err("{}").contains("schema_version missing is not supported"));
        assert!(err("{\"kind\": \"x\", \"schema_version\": 1}").contains("kind \"x\""));
        let e = err(&format!(
            "{{\"schema_version\": {REPORT_SCHEMA_VERSION}, \"scenario\": 5}}"
        ));
        assert!(e.contains("malformed run report at `scenario`"), "{e}");
        let e = err("{\"kind\": \"repeat\", \"schema_version\": 1, \"scenario\": \"s\"}");
        assert!(e.contains("malformed repeat report at"), "{e}");
    }
}
