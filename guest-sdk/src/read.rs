//! Reading Redis from a rule (ABI v2): the [`Context`] a v2 rule gets beside its event,
//! the [`ReadError`] codes a read can fail with, and the [`Reads`] that answers: the
//! host's imports on wasm32, `testing::FakeRedis` (or your own) in native tests.
//!
//! Keys are the rule's own: the host puts the tenant's prefix in front of every key,
//! as it does for writes. A read does not see the writes the same invocation returns
//! (they are applied after it), but sees those of earlier events on the same topic.

use std::fmt;

use crate::abi::v2::{decode_value, encode_request};
use crate::{Arg, Command, RuleError, Value};

/// What answers a rule's reads: one encoded request in (`abi::v2` layout), the encoded
/// reply or a negative ABI error code out.
pub trait Reads {
    /// Runs one read.
    ///
    /// # Errors
    ///
    /// The ABI's error code (`-1` to `-7`, see [`ReadError`]).
    fn call(&mut self, request: &[u8]) -> Result<Vec<u8>, i32>;
}

/// Why a read got no reply: the ABI's closed set of codes (docs/abi.md). The rule
/// decides what each means for it; `?` turns one into the rule's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// -1: the command is not in the read set, or the tenant may not read.
    NotAllowed,
    /// -2: a malformed request, a wrong number of arguments, a key over 4096 bytes.
    BadRequest,
    /// -3: this invocation's read budget (count or reply bytes) is spent.
    OverBudget,
    /// -4: Redis is unreachable, too slow for the deadline, or the worker's writes are
    /// waiting in the spill.
    Unavailable,
    /// -5: Redis answered with an error (`WRONGTYPE`, a bad number, ...).
    RedisError,
    /// -6: `redis_reply` with no reply held (an SDK bug if it happens).
    NoReply,
    /// -7: `redis_reply` with a buffer too small (an SDK bug if it happens).
    ShortBuffer,
    /// The host's reply did not decode (a host bug if it happens).
    BadReply,
    /// A code this SDK does not know (a newer host).
    Unknown(i32),
}

impl ReadError {
    /// The error for an ABI code.
    pub fn from_code(code: i32) -> ReadError {
        match code {
            -1 => ReadError::NotAllowed,
            -2 => ReadError::BadRequest,
            -3 => ReadError::OverBudget,
            -4 => ReadError::Unavailable,
            -5 => ReadError::RedisError,
            -6 => ReadError::NoReply,
            -7 => ReadError::ShortBuffer,
            c => ReadError::Unknown(c),
        }
    }

    /// The ABI code (`BadReply` has none: it is `0`).
    pub fn code(self) -> i32 {
        match self {
            ReadError::NotAllowed => -1,
            ReadError::BadRequest => -2,
            ReadError::OverBudget => -3,
            ReadError::Unavailable => -4,
            ReadError::RedisError => -5,
            ReadError::NoReply => -6,
            ReadError::ShortBuffer => -7,
            ReadError::BadReply => 0,
            ReadError::Unknown(c) => c,
        }
    }

    /// The code's name in docs/abi.md (`not_allowed`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ReadError::NotAllowed => "not_allowed",
            ReadError::BadRequest => "bad_request",
            ReadError::OverBudget => "over_budget",
            ReadError::Unavailable => "unavailable",
            ReadError::RedisError => "redis_error",
            ReadError::NoReply => "no_reply",
            ReadError::ShortBuffer => "short_buffer",
            ReadError::BadReply => "bad_reply",
            ReadError::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis read failed: {} ({})", self.name(), self.code())
    }
}

impl std::error::Error for ReadError {}

impl From<ReadError> for RuleError {
    fn from(e: ReadError) -> Self {
        RuleError::new(e.to_string())
    }
}

/// The handle a v2 rule reads Redis through. `#[rule]` passes it as the second
/// argument; a native test makes one over a [`crate::testing::FakeRedis`].
///
/// # Examples
///
/// ```
/// use wasmrule_guest::{Value, testing::FakeRedis};
/// let mut redis = FakeRedis::new();
/// redis.set("last:d1", "21.5").hset("device:d1", "room", "kitchen");
/// let mut ctx = redis.context();
/// assert_eq!(ctx.get("last:d1").unwrap().as_f64(), Some(21.5));
/// assert_eq!(ctx.hget("device:d1", "room").unwrap().as_str(), Some("kitchen"));
/// assert!(ctx.get("last:d2").unwrap().is_nil());
/// assert_eq!(ctx.read(&["ZSCORE", "z", "m"]).unwrap(), Value::Nil);
/// ```
pub struct Context<'a> {
    reads: &'a mut dyn Reads,
}

impl<'a> Context<'a> {
    /// A context whose reads `reads` answers.
    pub fn new(reads: &'a mut dyn Reads) -> Context<'a> {
        Context { reads }
    }

    /// Runs one read-only command (`args[0]` is its name, from the read set in
    /// docs/abi.md) and returns its reply.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn read<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Value, ReadError> {
        self.call(&encode_request(args))
    }

    /// Runs a command built with [`Command`] (for arguments of mixed types).
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn read_command(&mut self, command: &Command) -> Result<Value, ReadError> {
        let mut request = Vec::with_capacity(4 + command.encoded().len());
        request.extend_from_slice(&command.argc().to_le_bytes());
        request.extend_from_slice(command.encoded());
        self.call(&request)
    }

    fn call(&mut self, request: &[u8]) -> Result<Value, ReadError> {
        let reply = self.reads.call(request).map_err(ReadError::from_code)?;
        decode_value(&reply).ok_or(ReadError::BadReply)
    }

    fn cmd(&mut self, name: &str, args: &[&dyn ArgRef]) -> Result<Value, ReadError> {
        let mut c = Command::new(name);
        for a in args {
            a.push_to(&mut c);
        }
        self.read_command(&c)
    }

    /// `GET key`: the string, or nil.
    ///
    /// # Errors
    ///
    /// See [`ReadError`]; `RedisError` when the key holds another type.
    pub fn get(&mut self, key: impl Arg) -> Result<Value, ReadError> {
        self.cmd("GET", &[&key])
    }

    /// `MGET key...`: an array of strings and nils.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn mget<K: Arg>(&mut self, keys: &[K]) -> Result<Value, ReadError> {
        let mut c = Command::new("MGET");
        for k in keys {
            c.push_arg(k);
        }
        self.read_command(&c)
    }

    /// `EXISTS key`: whether the key exists.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn exists(&mut self, key: impl Arg) -> Result<bool, ReadError> {
        Ok(self.cmd("EXISTS", &[&key])?.as_i64().unwrap_or(0) > 0)
    }

    /// `PTTL key`: milliseconds to live, -1 without expiry, -2 for a missing key.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn pttl(&mut self, key: impl Arg) -> Result<i64, ReadError> {
        self.cmd("PTTL", &[&key])?
            .as_i64()
            .ok_or(ReadError::BadReply)
    }

    /// `HGET key field`: the value, or nil.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn hget(&mut self, key: impl Arg, field: impl Arg) -> Result<Value, ReadError> {
        self.cmd("HGET", &[&key, &field])
    }

    /// `HGETALL key`: fields and values alternating (see [`Value::pairs`]).
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn hgetall(&mut self, key: impl Arg) -> Result<Value, ReadError> {
        self.cmd("HGETALL", &[&key])
    }

    /// `LRANGE key start stop`.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn lrange(&mut self, key: impl Arg, start: i64, stop: i64) -> Result<Value, ReadError> {
        self.cmd("LRANGE", &[&key, &start, &stop])
    }

    /// `SISMEMBER key member`.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn sismember(&mut self, key: impl Arg, member: impl Arg) -> Result<bool, ReadError> {
        Ok(self.cmd("SISMEMBER", &[&key, &member])?.as_i64() == Some(1))
    }

    /// `SMEMBERS key`.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn smembers(&mut self, key: impl Arg) -> Result<Value, ReadError> {
        self.cmd("SMEMBERS", &[&key])
    }

    /// `ZSCORE key member`: the score as a number, or `None`.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn zscore(&mut self, key: impl Arg, member: impl Arg) -> Result<Option<f64>, ReadError> {
        Ok(self.cmd("ZSCORE", &[&key, &member])?.as_f64())
    }

    /// `ZRANGE key start stop` (by index, lowest score first).
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn zrange(&mut self, key: impl Arg, start: i64, stop: i64) -> Result<Value, ReadError> {
        self.cmd("ZRANGE", &[&key, &start, &stop])
    }

    /// `XRANGE key start end COUNT count`: entries as `[id, [field, value, ...]]`.
    ///
    /// # Errors
    ///
    /// See [`ReadError`].
    pub fn xrange(
        &mut self,
        key: impl Arg,
        start: &str,
        end: &str,
        count: u32,
    ) -> Result<Value, ReadError> {
        self.cmd("XRANGE", &[&key, &start, &end, &"COUNT", &count])
    }
}

/// An argument behind `&dyn`, so the helpers above take keys of any [`Arg`] type.
trait ArgRef {
    fn push_to(&self, c: &mut Command);
}

impl<T: Arg> ArgRef for T {
    fn push_to(&self, c: &mut Command) {
        c.push_arg(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRedis;

    #[test]
    fn codes_round_trip() {
        for code in -7..=-1 {
            assert_eq!(ReadError::from_code(code).code(), code);
        }
        assert_eq!(ReadError::from_code(-9), ReadError::Unknown(-9));
        assert_eq!(ReadError::OverBudget.name(), "over_budget");
    }

    #[test]
    fn refused_reads_are_typed() {
        let mut redis = FakeRedis::new();
        redis.hset("h", "f", "v");
        let mut ctx = redis.context();
        assert_eq!(ctx.read(&["SET", "k", "v"]), Err(ReadError::NotAllowed));
        assert_eq!(ctx.read(&["GET"]), Err(ReadError::BadRequest));
        assert_eq!(ctx.get("h"), Err(ReadError::RedisError));
        let e: RuleError = ReadError::Unavailable.into();
        assert_eq!(e.message(), "redis read failed: unavailable (-4)");
    }

    #[test]
    fn helpers_send_the_commands_they_name() {
        let mut redis = FakeRedis::new();
        redis.zadd("z", 1.5, "m").sadd("s", "a").rpush("l", "x");
        let mut ctx = redis.context();
        assert_eq!(ctx.zscore("z", "m"), Ok(Some(1.5)));
        assert_eq!(ctx.sismember("s", "a"), Ok(true));
        assert_eq!(ctx.lrange("l", 0, -1), Ok(Value::Array(vec!["x".into()])));
        assert_eq!(ctx.exists("nope"), Ok(false));
        assert_eq!(ctx.pttl("nope"), Ok(-2));
        assert_eq!(
            ctx.mget(&["l", "nope"]),
            Ok(Value::Array(vec![Value::Nil, Value::Nil]))
        );
        let log: Vec<String> = redis.requests().iter().map(|r| r.join(" ")).collect();
        assert_eq!(log[0], "ZSCORE z m");
        assert_eq!(log[2], "LRANGE l 0 -1");
    }
}
