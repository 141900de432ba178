//! Recipes: the path from a root seed to one timeline.
//!
//! Format (text, one line): `seed=<root seed>` followed by one
//! `;fork=<rng calls>@<child seed>` per fork on the path, in order, e.g.
//! `seed=7;fork=12@0x9a3f00c2d1e4b5a6;fork=31@0x0123456789abcdef`.
//! `<rng calls>` is the number of draws the timeline had made when it
//! forked (decimal, never decreasing along the path); seeds are decimal or
//! `0x` hex. Replaying a recipe runs the program once, seeded with the root
//! seed, and reseeds to each child seed right before the draw following
//! that many calls, which reproduces the timeline without forking.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::RunqError;

/// One fork on a timeline's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkStep {
    /// Draws made by the timeline when it forked.
    pub calls: u64,
    /// The seed the child restarted its RNG with.
    pub seed: u64,
}

/// Root seed plus the forks leading to one timeline.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Recipe {
    /// Seed of the root timeline.
    pub seed: u64,
    /// Forks on the path, oldest first.
    pub forks: Vec<ForkStep>,
}

impl Recipe {
    /// A root timeline's recipe.
    pub fn root(seed: u64) -> Self {
        Self {
            seed,
            forks: Vec::new(),
        }
    }

    /// This recipe extended by one fork.
    pub fn child(&self, calls: u64, seed: u64) -> Self {
        let mut forks = self.forks.clone();
        forks.push(ForkStep { calls, seed });
        Self {
            seed: self.seed,
            forks,
        }
    }

    /// Parse a recipe; errors are bad input naming the part and the fix.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        text.parse()
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed={}", self.seed)?;
        for fork in &self.forks {
            write!(f, ";fork={}@{:#018x}", fork.calls, fork.seed)?;
        }
        Ok(())
    }
}

impl Serialize for Recipe {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None => text.parse().ok(),
    }
}

const FORMAT_HINT: &str =
    "a recipe looks like `seed=7;fork=12@0x9a3f00c2d1e4b5a6` (as printed by `runq explore`)";

impl FromStr for Recipe {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut parts = text.trim().split(';').map(str::trim).enumerate();
        let seed = match parts.next() {
            Some((_, part)) if part.starts_with("seed=") => {
                let value = &part["seed=".len()..];
                parse_u64(value).ok_or_else(|| {
                    RunqError::bad_input(format!(
                        "recipe: seed {value:?} is not a number; use decimal or 0x hex; \
                         {FORMAT_HINT}"
                    ))
                })?
            }
            _ => {
                return Err(RunqError::bad_input(format!(
                    "recipe {text:?}: must start with `seed=<number>`; {FORMAT_HINT}"
                )))
            }
        };
        let mut recipe = Recipe::root(seed);
        for (index, part) in parts {
            if part.is_empty() {
                return Err(RunqError::bad_input(format!(
                    "recipe part {}: empty (two `;` in a row or a trailing `;`); \
                     {FORMAT_HINT}",
                    index + 1
                )));
            }
            let body = part.strip_prefix("fork=").ok_or_else(|| {
                RunqError::bad_input(format!(
                    "recipe part {} {part:?}: expected `fork=<rng calls>@<seed>`; {FORMAT_HINT}",
                    index + 1
                ))
            })?;
            let (calls, child) = body.split_once('@').ok_or_else(|| {
                RunqError::bad_input(format!(
                    "recipe part {} {part:?}: missing `@` between the rng call count and \
                     the child seed; {FORMAT_HINT}",
                    index + 1
                ))
            })?;
            let calls: u64 = calls.parse().map_err(|_| {
                RunqError::bad_input(format!(
                    "recipe part {} {part:?}: rng call count {calls:?} is not a decimal \
                     number; {FORMAT_HINT}",
                    index + 1
                ))
            })?;
            let child = parse_u64(child).ok_or_else(|| {
                RunqError::bad_input(format!(
                    "recipe part {} {part:?}: child seed {child:?} is not a number; use \
                     decimal or 0x hex; {FORMAT_HINT}",
                    index + 1
                ))
            })?;
            if let Some(last) = recipe.forks.last() {
                if calls < last.calls {
                    return Err(RunqError::bad_input(format!(
                        "recipe part {} {part:?}: rng call count {calls} is smaller than \
                         the previous fork's {}; forks must be listed in the order they \
                         happened",
                        index + 1,
                        last.calls
                    )));
                }
            }
            recipe.forks.push(ForkStep { calls, seed: child });
        }
        Ok(recipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_for, EXIT_BAD_INPUT};

    #[test]
    fn round_trip() {
        let r = Recipe::root(42).child(3, 0xdead).child(9, u64::MAX);
        let text = r.to_string();
        assert_eq!(
            text,
            "seed=42;fork=3@0x000000000000dead;fork=9@0xffffffffffffffff"
        );
        assert_eq!(Recipe::parse(&text).unwrap(), r);
        assert_eq!(Recipe::parse("seed=0x10;fork=1@5").unwrap().seed, 16);
        // A trailing `;` is an empty part, refused like `;;`.
        assert!(Recipe::parse("seed=0x10;fork=1@5;").is_err());
    }

    #[test]
    fn errors_are_bad_input_and_name_the_part() {
        for (text, needle) in [
            ("", "must start with `seed="),
            ("seed=x", "seed \"x\" is not a number"),
            ("seed=1;fork=3", "missing `@`"),
            ("seed=1;fork=a@1", "call count \"a\""),
            ("seed=1;fork=3@zz", "child seed \"zz\""),
            ("seed=1;bork=3@1", "expected `fork="),
            ("seed=1;fork=5@1;fork=4@1", "smaller than the previous"),
        ] {
            let err = Recipe::parse(text).unwrap_err();
            assert_eq!(exit_code_for(&err), EXIT_BAD_INPUT, "{text}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }
}
