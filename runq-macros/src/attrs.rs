//! The attribute grammar of `#[runq::test(...)]`, checked at compile time.
//!
//! ```text
//! topology = "1n2l2c1t"                 one topology, or
//! gauntlet = ["1n1l2c1t", "2n1l2c1t"]   several, or a preset: gauntlet = "small"
//! scheduler = "scx_bpfland"             the sched_ext scheduler under test
//! profiles = { default = [], lowlat = ["--lowlatency"] }   its argument sets
//! kernel = "sched_ext"                  a path, a cached release or "sched_ext"
//! duration = "2s"   memory = "1G"   timeout = "3m"
//! host = true                           run on the host, not in a VM
//! expect_fail = "why"                   the run must complete with a failed check
//! ```
//!
//! Every mistake is a compile error pointing at the offending token.

use std::collections::BTreeSet;

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{braced, bracketed, Ident, LitBool, LitStr, Token};

use crate::presets;

/// Keys the attribute accepts, in the order the docs list them.
const KEYS: &[&str] = &[
    "topology",
    "gauntlet",
    "scheduler",
    "profiles",
    "kernel",
    "duration",
    "memory",
    "timeout",
    "host",
    "expect_fail",
];

/// Largest topology a VM case may ask for (qemu's q35 machine limit).
const MAX_CPUS: usize = 255;

/// The topology used when neither `topology` nor `gauntlet` is given.
pub const DEFAULT_TOPOLOGY: &str = "1n1l2c1t";

/// One `key = value` as written.
pub struct RawItem {
    key: Ident,
    value: RawValue,
}

enum RawValue {
    Str(LitStr),
    Bool(LitBool),
    List(Span, Vec<LitStr>),
    Map(Span, Vec<(Ident, Span, Vec<LitStr>)>),
}

impl RawValue {
    fn span(&self) -> Span {
        match self {
            RawValue::Str(s) => s.span(),
            RawValue::Bool(b) => b.span,
            RawValue::List(span, _) | RawValue::Map(span, _) => *span,
        }
    }
}

/// The attribute's items, unchecked.
pub struct RawAttrs(Punctuated<RawItem, Token![,]>);

impl Parse for RawAttrs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Ok(RawAttrs(Punctuated::parse_terminated(input)?))
    }
}

impl Parse for RawItem {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        if !KEYS.contains(&key.to_string().as_str()) {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "unknown runq::test attribute `{key}`; expected one of: {}",
                    KEYS.join(", ")
                ),
            ));
        }
        input
            .parse::<Token![=]>()
            .map_err(|e| syn::Error::new(e.span(), format!("expected `=` after `{key}`")))?;
        let value = parse_value(input)?;
        Ok(RawItem { key, value })
    }
}

fn parse_value(input: ParseStream) -> syn::Result<RawValue> {
    let lookahead = input.lookahead1();
    if lookahead.peek(LitStr) {
        Ok(RawValue::Str(input.parse()?))
    } else if lookahead.peek(LitBool) {
        Ok(RawValue::Bool(input.parse()?))
    } else if lookahead.peek(syn::token::Bracket) {
        let span = input.span();
        Ok(RawValue::List(span, parse_string_list(input)?))
    } else if lookahead.peek(syn::token::Brace) {
        let span = input.span();
        let content;
        braced!(content in input);
        let mut entries = Vec::new();
        while !content.is_empty() {
            let name: Ident = content.call(syn::ext::IdentExt::parse_any)?;
            content.parse::<Token![=]>()?;
            let list_span = content.span();
            let args = parse_string_list(&content)?;
            entries.push((name, list_span, args));
            if content.is_empty() {
                break;
            }
            content.parse::<Token![,]>()?;
        }
        Ok(RawValue::Map(span, entries))
    } else {
        Err(syn::Error::new(
            input.span(),
            "expected a string \"..\", true/false, a list [\"..\"] or a map { name = [\"..\"] }",
        ))
    }
}

fn parse_string_list(input: ParseStream) -> syn::Result<Vec<LitStr>> {
    let content;
    bracketed!(content in input);
    let items: Punctuated<LitStr, Token![,]> = content
        .parse_terminated(|p| p.parse::<LitStr>(), Token![,])
        .map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected a list of strings, e.g. [\"--lowlatency\"]",
            )
        })?;
    Ok(items.into_iter().collect())
}

/// The checked attributes.
#[derive(Debug)]
pub struct TestAttrs {
    pub topologies: Vec<String>,
    pub scheduler: Option<String>,
    /// (name, scheduler arguments); `default` with none when not given.
    pub profiles: Vec<(String, Vec<String>)>,
    pub kernel: Option<String>,
    pub duration: Option<String>,
    pub memory: Option<String>,
    pub timeout: Option<String>,
    pub host: bool,
    pub expect_fail: Option<String>,
}

fn error(span: Span, message: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(span, message)
}

fn expect_str(key: &str, value: &RawValue) -> syn::Result<LitStr> {
    match value {
        RawValue::Str(s) => Ok(s.clone()),
        other => Err(error(
            other.span(),
            format!("`{key}` takes a string, e.g. {}", example(key)),
        )),
    }
}

fn example(key: &str) -> &'static str {
    match key {
        "topology" => "topology = \"1n2l2c1t\"",
        "scheduler" => "scheduler = \"scx_bpfland\"",
        "kernel" => "kernel = \"sched_ext\"",
        "duration" => "duration = \"2s\"",
        "memory" => "memory = \"1G\"",
        "timeout" => "timeout = \"3m\"",
        "expect_fail" => "expect_fail = \"the scheduler is ejected\"",
        _ => "\"...\"",
    }
}

impl TestAttrs {
    /// Checks every item; the first error points at its token.
    pub fn resolve(raw: RawAttrs) -> syn::Result<TestAttrs> {
        let mut attrs = TestAttrs {
            topologies: Vec::new(),
            scheduler: None,
            profiles: Vec::new(),
            kernel: None,
            duration: None,
            memory: None,
            timeout: None,
            host: false,
            expect_fail: None,
        };
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut topology_key: Option<Ident> = None;
        let mut profiles_key: Option<Ident> = None;
        let mut vm_only_key: Option<Ident> = None;
        for item in raw.0 {
            let key = item.key.to_string();
            if !seen.insert(key.clone()) {
                return Err(error(item.key.span(), format!("`{key}` is given twice")));
            }
            match key.as_str() {
                "topology" | "gauntlet" => {
                    if let Some(other) = &topology_key {
                        return Err(error(
                            item.key.span(),
                            format!(
                                "`{key}` and `{other}` both name topologies; use `topology` for \
                                 one, `gauntlet` for several"
                            ),
                        ));
                    }
                    attrs.topologies = resolve_topologies(&key, &item.value)?;
                    topology_key = Some(item.key.clone());
                }
                "scheduler" => attrs.scheduler = Some(scheduler_name(&item.value)?),
                "profiles" => {
                    attrs.profiles = resolve_profiles(&item.value)?;
                    profiles_key = Some(item.key.clone());
                }
                "kernel" => {
                    attrs.kernel = Some(non_empty(&key, &item.value)?);
                    vm_only_key.get_or_insert(item.key.clone());
                }
                "duration" | "timeout" => {
                    let lit = expect_str(&key, &item.value)?;
                    check_duration(&key, &lit)?;
                    if key == "duration" {
                        attrs.duration = Some(lit.value());
                    } else {
                        attrs.timeout = Some(lit.value());
                    }
                }
                "memory" => {
                    let lit = expect_str(&key, &item.value)?;
                    check_memory(&lit)?;
                    attrs.memory = Some(lit.value());
                    vm_only_key.get_or_insert(item.key.clone());
                }
                "host" => match &item.value {
                    RawValue::Bool(b) => attrs.host = b.value,
                    other => return Err(error(other.span(), "`host` takes true or false")),
                },
                "expect_fail" => attrs.expect_fail = Some(non_empty(&key, &item.value)?),
                _ => unreachable!("keys are checked while parsing"),
            }
        }
        attrs.check_combinations(profiles_key.as_ref(), vm_only_key.as_ref())?;
        if attrs.topologies.is_empty() {
            attrs.topologies.push(DEFAULT_TOPOLOGY.to_string());
        }
        if attrs.profiles.is_empty() {
            attrs.profiles.push(("default".to_string(), Vec::new()));
        }
        Ok(attrs)
    }

    /// Keys that need another key, or that a `host = true` test cannot
    /// honour; errors point at the first such key.
    fn check_combinations(
        &self,
        profiles_key: Option<&Ident>,
        vm_only_key: Option<&Ident>,
    ) -> syn::Result<()> {
        if let Some(key) = profiles_key {
            if self.scheduler.is_none() {
                return Err(error(
                    key.span(),
                    "`profiles` are argument sets of the scheduler: add `scheduler = \"...\"`",
                ));
            }
        }
        if let (true, Some(key)) = (self.host, vm_only_key) {
            return Err(error(
                key.span(),
                format!(
                    "`{key}` describes the VM; a `host = true` test runs on the host's kernel and memory"
                ),
            ));
        }
        Ok(())
    }
}

/// `scheduler = "..."`: one program name or path, without arguments.
fn scheduler_name(value: &RawValue) -> syn::Result<String> {
    let lit = expect_str("scheduler", value)?;
    let name = lit.value();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(error(
            lit.span(),
            "`scheduler` names one program (a PATH name or a path), e.g. \"scx_bpfland\"; \
             put its arguments in `profiles`",
        ));
    }
    Ok(name)
}

fn non_empty(key: &str, value: &RawValue) -> syn::Result<String> {
    let lit = expect_str(key, value)?;
    if lit.value().trim().is_empty() {
        return Err(error(
            lit.span(),
            format!("`{key}` is empty, e.g. {}", example(key)),
        ));
    }
    Ok(lit.value())
}

fn resolve_topologies(key: &str, value: &RawValue) -> syn::Result<Vec<String>> {
    let lits: Vec<LitStr> = match (key, value) {
        ("topology", RawValue::Str(s)) => vec![s.clone()],
        ("topology", other) => {
            return Err(error(
                other.span(),
                "`topology` takes one spec, e.g. \"1n2l2c1t\"; use `gauntlet = [..]` for several",
            ))
        }
        (_, RawValue::Str(s)) => match presets::lookup(&s.value()) {
            Some(list) => list
                .iter()
                .map(|spec| LitStr::new(spec, s.span()))
                .collect(),
            None => {
                return Err(error(
                    s.span(),
                    format!(
                        "unknown gauntlet preset {:?}; the presets are: {}",
                        s.value(),
                        presets::describe()
                    ),
                ))
            }
        },
        (_, RawValue::List(span, items)) => {
            if items.is_empty() {
                return Err(error(*span, "`gauntlet` is empty; list at least one topology"));
            }
            items.clone()
        }
        (_, other) => {
            return Err(error(
                other.span(),
                "`gauntlet` takes a list of topologies, e.g. [\"1n1l2c1t\", \"2n1l2c1t\"], or a preset name such as \"small\"",
            ))
        }
    };
    let mut out: Vec<String> = Vec::new();
    for lit in lits {
        let spec = lit.value();
        check_topology(&spec).map_err(|why| error(lit.span(), why))?;
        if out.contains(&spec) {
            return Err(error(
                lit.span(),
                format!("topology {spec:?} is listed twice"),
            ));
        }
        out.push(spec);
    }
    Ok(out)
}

/// `<N>n<L>l<C>c<T>t` in lower case, every count at least 1.
pub fn check_topology(spec: &str) -> Result<(), String> {
    let usage = "expected <nodes>n<llcs>l<cores>c<threads>t, e.g. \"1n2l2c1t\"";
    let mut rest = spec;
    let mut total: usize = 1;
    for letter in ['n', 'l', 'c', 't'] {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        let value: usize = rest[..digits].parse().map_err(|_| {
            format!("topology {spec:?}: missing the count before '{letter}'; {usage}")
        })?;
        if value == 0 {
            return Err(format!(
                "topology {spec:?}: 0{letter}: every count is at least 1"
            ));
        }
        if !rest[digits..].starts_with(letter) {
            return Err(format!(
                "topology {spec:?}: expected '{letter}' after {value}; {usage}"
            ));
        }
        total = total.saturating_mul(value);
        rest = &rest[digits + 1..];
    }
    if !rest.is_empty() {
        return Err(format!(
            "topology {spec:?}: unexpected {rest:?} at the end; {usage}"
        ));
    }
    if total > MAX_CPUS {
        return Err(format!(
            "topology {spec:?} has {total} CPUs; a VM boots at most {MAX_CPUS}"
        ));
    }
    Ok(())
}

fn resolve_profiles(value: &RawValue) -> syn::Result<Vec<(String, Vec<String>)>> {
    let RawValue::Map(span, entries) = value else {
        return Err(error(
            value.span(),
            "`profiles` takes a map of argument sets, e.g. { default = [], lowlat = [\"--lowlatency\"] }",
        ));
    };
    if entries.is_empty() {
        return Err(error(
            *span,
            "`profiles` is empty; name at least one argument set, e.g. { default = [] }",
        ));
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (name, _, args) in entries {
        let text = name.to_string();
        let text = text.strip_prefix("r#").unwrap_or(&text).to_string();
        if out.iter().any(|(n, _)| *n == text) {
            return Err(error(
                name.span(),
                format!("profile `{text}` is given twice"),
            ));
        }
        out.push((text, args.iter().map(LitStr::value).collect()));
    }
    Ok(out)
}

/// The duration grammar runq parses at run time: a number and a unit
/// (ms, s, m, h; a bare number is seconds).
fn check_duration(key: &str, lit: &LitStr) -> syn::Result<()> {
    let text = lit.value();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let ok = number
        .parse::<f64>()
        .is_ok_and(|v| v > 0.0 && v.is_finite())
        && matches!(unit, "" | "ms" | "s" | "m" | "h");
    if ok {
        Ok(())
    } else {
        Err(error(
            lit.span(),
            format!("`{key}` {text:?}: expected a positive number with a unit (ms, s, m, h), e.g. \"2s\""),
        ))
    }
}

fn check_memory(lit: &LitStr) -> syn::Result<()> {
    let text = lit.value();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let ok = number.parse::<u64>().is_ok_and(|v| v > 0)
        && matches!(unit, "" | "M" | "MB" | "MiB" | "G" | "GB" | "GiB");
    if ok {
        Ok(())
    } else {
        Err(error(
            lit.span(),
            format!("`memory` {text:?}: expected a size such as \"512M\" or \"1G\""),
        ))
    }
}
