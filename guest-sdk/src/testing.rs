//! Run a rule natively through the ABI's wire format, the way the runtime sees it, and
//! [`FakeRedis`], the store a v2 rule's reads go to in native tests.
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

mod fake_redis;

pub use fake_redis::{DEFAULT_MAX_READ_BYTES, DEFAULT_MAX_READS, FakeRedis};

use crate::abi::{TAG_ERROR, TAG_OK, handle_json};
use crate::{Context, Event, IntoActions, IntoOutput, RuleError};

/// Runs the v2 `handler` on `event_json` with its reads answered by `redis` (its budget
/// reset first, as for a fresh invocation) and returns the actions as `wasmrule eval`
/// prints them, or the rule's error. The event and the result go through the ABI
/// encoding.
///
/// # Examples
///
/// ```
/// use wasmrule_guest::{Action, Context, Event, RuleError, action, testing};
/// fn echo(e: &Event, ctx: &mut Context) -> Result<Action, RuleError> {
///     let prefix = ctx.get("prefix")?;
///     Ok(action::publish(format!("{}/{}", prefix.as_str().unwrap_or("x"), e.topic()), "1").into())
/// }
/// let mut redis = testing::FakeRedis::new();
/// redis.set("prefix", "echo");
/// let out = testing::run_actions(echo, r#"{"topic":"a"}"#, &mut redis).unwrap();
/// assert_eq!(out, vec!["MQTT PUBLISH echo/a qos=0 retain=0 payload=1".to_string()]);
/// ```
///
/// # Errors
///
/// The rule's error, or an error describing a malformed result buffer.
pub fn run_actions<R: IntoActions>(
    handler: impl Fn(&Event<'_>, &mut Context<'_>) -> R,
    event_json: &str,
    redis: &mut FakeRedis,
) -> Result<Vec<String>, RuleError> {
    redis.reset_budget();
    let buf = crate::abi::v2::handle_json(event_json.as_bytes(), redis, handler);
    let actions = crate::abi::v2::decode_result(&buf)?;
    Ok(actions.iter().map(|a| a.to_string()).collect())
}

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
