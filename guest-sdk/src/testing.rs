//! Run a rule natively through the ABI's wire format, the way the runtime sees it.
//!
//! Most rule tests call the rule function directly. These helpers go one step further:
//! the event goes in as JSON bytes and the result comes back decoded from the same
//! buffer layout the wasm module returns, so a test also covers encoding.
//!
//! # Examples
//!
//! ```
//! use wasmrule_guest::{testing, cmd, Event};
//! fn count(e: &Event) -> wasmrule_guest::Command { cmd::hincrby("n", e.topic(), 1) }
//! let out = testing::run_json(count, r#"{"topic":"a/b"}"#).unwrap();
//! assert_eq!(out, vec!["HINCRBY n a/b 1".to_string()]);
//! ```

use crate::abi::{TAG_ERROR, TAG_OK, handle_json};
use crate::{Event, IntoOutput, RuleError};

/// Runs `handler` on `event_json` and returns the commands in `redis-cli` form, or the
/// rule's error.
///
/// # Errors
///
/// The rule's error, or an error describing a malformed result buffer.
pub fn run_json<R: IntoOutput>(
    handler: impl Fn(&Event<'_>) -> R,
    event_json: &str,
) -> Result<Vec<String>, RuleError> {
    decode(&handle_json(event_json.as_bytes(), handler))
}

fn decode(buf: &[u8]) -> Result<Vec<String>, RuleError> {
    let bad = || RuleError::new("malformed result buffer");
    let (&tag, mut rest) = buf.split_first().ok_or_else(bad)?;
    match tag {
        TAG_ERROR => return Err(RuleError::new(String::from_utf8_lossy(rest))),
        TAG_OK => {}
        _ => return Err(bad()),
    }
    let take_u32 = |rest: &mut &[u8]| -> Result<u32, RuleError> {
        let (n, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        *rest = tail;
        Ok(u32::from_le_bytes(*n))
    };
    let count = take_u32(&mut rest)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let argc = take_u32(&mut rest)?;
        let mut c: Option<crate::Command> = None;
        for _ in 0..argc {
            let len = take_u32(&mut rest)? as usize;
            if rest.len() < len {
                return Err(bad());
            }
            let (arg, tail) = rest.split_at(len);
            rest = tail;
            c = Some(match c {
                None => crate::Command::new(&String::from_utf8_lossy(arg)),
                Some(c) => c.arg(arg),
            });
        }
        out.push(c.ok_or_else(bad)?.to_string());
    }
    if rest.is_empty() { Ok(out) } else { Err(bad()) }
}
