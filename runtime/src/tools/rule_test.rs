//! `wasmrule test RULE.wasm CASES.json`: the offline test loop for rule authors. Each
//! case is an event in and the commands (or an error) expected out; a mismatch prints a
//! diff. The same files serve as the ABI conformance suite (`guest-sdk/conformance/`).
//!
//! Case file:
//!
//! ```json
//! {"rule": "store-last-message",
//!  "cases": [
//!    {"name": "demo payload",
//!     "event": {"topic": "store-last-message/dev-1", "payload": "{\"temp\":21.5}"},
//!     "commands": ["HSET emqx_messages dev-1 21.5"]},
//!    {"name": "not JSON", "event": {"topic": "store-last-message/x", "payload": "hot"},
//!     "error": true}
//!  ]}
//! ```
//!
//! `commands` are written as `wasmrule eval` prints them (redis-cli syntax): what would be
//! written to Redis, after the tenant's command policy (`offline.rs`). `error` is `true`
//! (any failure, the policy's refusals included) or a string the error message must
//! contain.
//!
//! For rules of ABI v2, a case may give `"redis"`, the Redis its reads see (a fixture,
//! `fixture_redis.rs`; the file's own `"redis"` when the case has none, else empty),
//! `"actions"` in place of `"commands"` (the same lines, MQTT actions included, as
//! `eval` prints them), and `"reads"`, the reads the rule must make, as sent to Redis:
//!
//! ```json
//! {"name": "a jump alerts", "redis": {"last:d1": "20"},
//!  "event": {"topic": "readings/d1", "payload": "25"},
//!  "reads": ["GET last:d1"],
//!  "actions": ["SET last:d1 25",
//!              "MQTT PUBLISH alerts/d1 qos=1 retain=0 payload={\"device\":\"d1\",...}"]}
//! ```

use std::fmt::Write as _;

use anyhow::Context as _;
use serde::Deserialize;

use crate::event::complete_event;
use crate::rules::engine::Rule;
use crate::tools::fixture_redis::Fixture;
use crate::tools::offline::Serving;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The manifest name the rule must have, if given.
    #[serde(default)]
    pub rule: Option<String>,
    /// The Redis fixture of every case that gives none.
    #[serde(default)]
    pub redis: Option<serde_json::Value>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub event: serde_json::Value,
    /// The Redis the rule's reads see (ABI v2).
    #[serde(default)]
    pub redis: Option<serde_json::Value>,
    /// What the rule must do, as `eval` prints it; `actions` is the same (the name
    /// that fits a v2 rule), and parsing moves it here.
    #[serde(default)]
    pub commands: Option<Vec<String>>,
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    /// The reads the rule must make, as sent to Redis (ABI v2).
    #[serde(default)]
    pub reads: Option<Vec<String>>,
    #[serde(default)]
    pub error: Option<ExpectedError>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ExpectedError {
    Any(bool),
    Containing(String),
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// `None` when the case passed; otherwise what to show.
    pub failure: Option<String>,
}

/// Parses a case file.
///
/// # Errors
///
/// When it is not JSON of the documented shape, or a case expects both commands and an
/// error, or neither.
pub fn parse(text: &str) -> anyhow::Result<CaseFile> {
    let mut file: CaseFile = serde_json::from_str(text)?;
    if let Some(r) = &file.redis {
        Fixture::parse(r).context("the file's \"redis\"")?;
    }
    for c in &mut file.cases {
        if let Some(r) = &c.redis {
            Fixture::parse(r).with_context(|| format!("case {:?}: \"redis\"", c.name))?;
        }
        if c.actions.is_some() {
            if c.commands.is_some() {
                anyhow::bail!("case {:?}: give `actions` or `commands`, not both", c.name);
            }
            c.commands = c.actions.take();
        }
        match (&c.commands, &c.error) {
            (Some(_), Some(_)) => {
                anyhow::bail!("case {:?}: give `commands` or `error`, not both", c.name)
            }
            (None, None) => {
                anyhow::bail!("case {:?}: give the expected `commands` or `error`", c.name)
            }
            _ => {}
        }
    }
    Ok(file)
}

/// Runs every case against `rule`, as tenant `serving` would run it.
pub fn run(rule: &Rule, serving: &Serving, file: &CaseFile) -> Vec<CaseResult> {
    file.cases
        .iter()
        .map(|c| CaseResult {
            name: c.name.clone(),
            failure: run_case(rule, serving, c, file.redis.as_ref()),
        })
        .collect()
}

fn run_case(
    rule: &Rule,
    serving: &Serving,
    case: &Case,
    default_redis: Option<&serde_json::Value>,
) -> Option<String> {
    let event = match complete_event(case.event.to_string().as_bytes(), "wasmrule@test") {
        Ok(e) => e,
        Err(e) => return Some(format!("the case's event is invalid: {e:#}")),
    };
    // `parse` checked the fixtures.
    let redis = match case.redis.as_ref().or(default_redis).map(Fixture::parse) {
        None => Fixture::empty(),
        Some(Ok(f)) => f,
        Some(Err(e)) => return Some(format!("the case's \"redis\" is invalid: {e:#}")),
    };
    let got = serving.run(rule, &event, &redis);
    if let (Some(want), Ok(out)) = (&case.reads, &got) {
        let made: Vec<String> = out
            .reads
            .iter()
            .map(|l| l.split(" -> ").next().unwrap_or_default().to_owned())
            .collect();
        if made != *want {
            return Some(format!("the reads differ:\n{}", diff(want, &made)));
        }
    }
    match (&case.commands, &case.error, got) {
        (Some(want), _, Ok(out)) => {
            let got = out.lines();
            (got != *want).then(|| diff(want, &got))
        }
        (Some(want), _, Err(e)) => Some(format!(
            "expected {} command(s), {e}\n{}",
            want.len(),
            diff(want, &[])
        )),
        (None, Some(expected), Err(e)) => match expected {
            ExpectedError::Any(true) => None,
            ExpectedError::Containing(s) if e.to_string().contains(s.as_str()) => None,
            ExpectedError::Containing(s) => {
                Some(format!("expected an error containing {s:?}, got: {e}"))
            }
            ExpectedError::Any(false) => Some(format!("`error: false` expects no error, got: {e}")),
        },
        // `parse` refuses cases with neither expectation.
        (None, None, Err(e)) => Some(e.to_string()),
        (None, _, Ok(out)) => {
            let got = out.lines();
            Some(format!(
                "expected an error, the rule returned:\n{}",
                diff(&[], &got)
            ))
        }
    }
}

/// A line diff of expected and actual commands: `-` expected only, `+` got only.
pub fn diff(want: &[String], got: &[String]) -> String {
    let mut s = String::new();
    let n = want.len().max(got.len());
    for i in 0..n {
        match (want.get(i), got.get(i)) {
            (Some(w), Some(g)) if w == g => {
                let _ = writeln!(s, "    {w}");
            }
            (w, g) => {
                if let Some(w) = w {
                    let _ = writeln!(s, "  - {w}");
                }
                if let Some(g) = g {
                    let _ = writeln!(s, "  + {g}");
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changes() {
        let w = vec!["A".to_string(), "B".to_string()];
        let g = vec!["A".to_string(), "C".to_string(), "D".to_string()];
        assert_eq!(diff(&w, &g), "    A\n  - B\n  + C\n  + D\n");
    }

    #[test]
    fn case_files_are_checked() {
        assert!(parse(r#"{"cases":[{"name":"x","event":{},"commands":[]}]}"#).is_ok());
        assert!(parse(r#"{"cases":[{"name":"x","event":{},"error":"boom"}]}"#).is_ok());
        let both = parse(r#"{"cases":[{"name":"x","event":{},"commands":[],"error":true}]}"#);
        assert!(both.unwrap_err().to_string().contains("not both"));
        let neither = parse(r#"{"cases":[{"name":"x","event":{}}]}"#);
        assert!(neither.unwrap_err().to_string().contains("expected"));
        assert!(parse(r#"{"cases":[{"name":"x","event":{},"comands":[]}]}"#).is_err());
        let v2 = parse(r#"{"cases":[{"name":"x","event":{},"redis":{"k":"v"},"actions":["A"]}]}"#);
        assert_eq!(
            v2.unwrap().cases[0].commands.as_deref(),
            Some(&["A".to_string()][..])
        );
        let both = r#"{"cases":[{"name":"x","event":{},"actions":[],"commands":[]}]}"#;
        assert!(parse(both).unwrap_err().to_string().contains("not both"));
        let bad = parse(r#"{"cases":[{"name":"x","event":{},"redis":{"k":true},"actions":[]}]}"#);
        assert!(format!("{:#}", bad.unwrap_err()).contains("\"k\""));
    }
}
