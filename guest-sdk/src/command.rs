//! Redis commands a rule returns, with binary-safe arguments.
//!
//! A [`Command`] stores its arguments already in the ABI's wire layout, so returning
//! commands costs one copy. [`cmd`] has a builder per common write command; anything else
//! is `Command::new("NAME").arg(..)`. The runtime decides what is allowed; the SDK does
//! not second-guess it.

use std::fmt;

/// One Redis command: a name and its arguments, each an arbitrary byte string.
///
/// # Examples
///
/// ```
/// use wasmrule_guest::Command;
/// let c = Command::new("HINCRBY").arg("mqtt_topic_count").arg("a/b").arg(1);
/// assert_eq!(c.to_string(), "HINCRBY mqtt_topic_count a/b 1");
/// assert_eq!(c.args().count(), 4);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    // Each argument as `u32 little-endian length` + bytes: the ABI v1 layout.
    encoded: Vec<u8>,
    argc: u32,
}

impl Command {
    /// A command with this name (`"HSET"`, `"XADD"`, ...) and no arguments yet.
    pub fn new(name: &str) -> Self {
        let mut c = Command {
            encoded: Vec::with_capacity(64),
            argc: 0,
        };
        c.push(name.as_bytes());
        c
    }

    /// Adds one argument.
    pub fn arg(mut self, value: impl Arg) -> Self {
        value.write_arg(&mut ArgWriter(&mut self));
        self
    }

    /// Adds one argument in place.
    pub fn push_arg(&mut self, value: impl Arg) -> &mut Self {
        value.write_arg(&mut ArgWriter(self));
        self
    }

    /// The name and arguments, in order.
    pub fn args(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.encoded.as_slice();
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let (arg, tail) = tail.split_at(len);
            rest = tail;
            Some(arg)
        })
    }

    /// The command name as given.
    pub fn name(&self) -> &[u8] {
        self.args().next().unwrap_or_default()
    }

    pub(crate) fn argc(&self) -> u32 {
        self.argc
    }

    pub(crate) fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    fn push(&mut self, bytes: &[u8]) {
        self.encoded
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.encoded.extend_from_slice(bytes);
        self.argc += 1;
    }
}

/// Shows the command as `redis-cli` would take it: plain words as they are, anything
/// else double-quoted with escapes.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.args().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write_quoted(f, arg)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({self})")
    }
}

pub(crate) fn write_quoted(f: &mut fmt::Formatter<'_>, arg: &[u8]) -> fmt::Result {
    let plain = !arg.is_empty()
        && arg
            .iter()
            .all(|&b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'));
    if plain {
        // Checked above: printable ASCII.
        return f.write_str(std::str::from_utf8(arg).map_err(|_| fmt::Error)?);
    }
    f.write_str("\"")?;
    for &b in arg {
        match b {
            b'"' => f.write_str("\\\"")?,
            b'\\' => f.write_str("\\\\")?,
            b'\n' => f.write_str("\\n")?,
            b'\r' => f.write_str("\\r")?,
            b'\t' => f.write_str("\\t")?,
            0x20..=0x7e => write!(f, "{}", b as char)?,
            _ => write!(f, "\\x{b:02x}")?,
        }
    }
    f.write_str("\"")
}

/// Where an [`Arg`] writes its bytes.
pub struct ArgWriter<'a>(&'a mut Command);

impl ArgWriter<'_> {
    /// Writes one argument.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.0.push(bytes);
    }
}

/// A value usable as a command argument: text and bytes as they are, numbers in the
/// decimal form Redis parses.
pub trait Arg {
    /// Writes this value as one argument.
    fn write_arg(&self, w: &mut ArgWriter<'_>);
}

impl<T: Arg + ?Sized> Arg for &T {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        (**self).write_arg(w)
    }
}

impl Arg for str {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        w.bytes(self.as_bytes())
    }
}

impl Arg for String {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        w.bytes(self.as_bytes())
    }
}

impl Arg for std::borrow::Cow<'_, str> {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        w.bytes(self.as_bytes())
    }
}

impl Arg for [u8] {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        w.bytes(self)
    }
}

impl<const N: usize> Arg for [u8; N] {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        w.bytes(self)
    }
}

impl Arg for Vec<u8> {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        w.bytes(self)
    }
}

macro_rules! int_arg {
    ($($t:ty)*) => {$(
        impl Arg for $t {
            fn write_arg(&self, w: &mut ArgWriter<'_>) {
                w.bytes(self.to_string().as_bytes())
            }
        }
    )*};
}
int_arg!(i8 i16 i32 i64 i128 isize u8 u16 u32 u64 u128 usize);

impl Arg for f64 {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        // Redis reads "inf"/"-inf"; Rust's Display gives the shortest form that round-trips.
        if self.is_infinite() {
            w.bytes(if *self > 0.0 { b"inf" } else { b"-inf" })
        } else {
            w.bytes(self.to_string().as_bytes())
        }
    }
}

impl Arg for f32 {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        (*self as f64).write_arg(w)
    }
}

/// A JSON value as Redis text: strings without quotes, numbers and booleans as written,
/// anything else (objects, arrays, null) as compact JSON. This is how EMQX fills
/// `${payload.temp}` in a Redis template.
impl Arg for serde_json::Value {
    fn write_arg(&self, w: &mut ArgWriter<'_>) {
        match self {
            serde_json::Value::String(s) => w.bytes(s.as_bytes()),
            other => w.bytes(other.to_string().as_bytes()),
        }
    }
}

/// Builders for the write commands rules use most. Each returns a [`Command`] that can
/// take more arguments with [`Command::arg`] (options such as `NX` or `KEEPTTL`).
///
/// # Examples
///
/// ```
/// use wasmrule_guest::cmd;
/// assert_eq!(cmd::hincrby("authz_result", "allow:publish", 1).to_string(),
///            "HINCRBY authz_result allow:publish 1");
/// assert_eq!(cmd::set("k", "v").arg("EX").arg(60).to_string(), "SET k v EX 60");
/// assert_eq!(cmd::xadd("readings", Some(1000), &[("temp", "21.5")]).to_string(),
///            "XADD readings MAXLEN ~ 1000 * temp 21.5");
/// ```
pub mod cmd {
    use super::{Arg, Command};

    /// `SET key value`
    pub fn set(key: impl Arg, value: impl Arg) -> Command {
        Command::new("SET").arg(key).arg(value)
    }

    /// `SET key value EX seconds`
    pub fn set_ex(key: impl Arg, value: impl Arg, seconds: u64) -> Command {
        set(key, value).arg("EX").arg(seconds)
    }

    /// `DEL key`
    pub fn del(key: impl Arg) -> Command {
        Command::new("DEL").arg(key)
    }

    /// `EXPIRE key seconds`
    pub fn expire(key: impl Arg, seconds: u64) -> Command {
        Command::new("EXPIRE").arg(key).arg(seconds)
    }

    /// `INCR key`
    pub fn incr(key: impl Arg) -> Command {
        Command::new("INCR").arg(key)
    }

    /// `INCRBY key increment`
    pub fn incrby(key: impl Arg, increment: i64) -> Command {
        Command::new("INCRBY").arg(key).arg(increment)
    }

    /// `INCRBYFLOAT key increment`
    pub fn incrbyfloat(key: impl Arg, increment: f64) -> Command {
        Command::new("INCRBYFLOAT").arg(key).arg(increment)
    }

    /// `HSET key field value`
    pub fn hset(key: impl Arg, field: impl Arg, value: impl Arg) -> Command {
        Command::new("HSET").arg(key).arg(field).arg(value)
    }

    /// `HDEL key field`
    pub fn hdel(key: impl Arg, field: impl Arg) -> Command {
        Command::new("HDEL").arg(key).arg(field)
    }

    /// `HINCRBY key field increment`
    pub fn hincrby(key: impl Arg, field: impl Arg, increment: i64) -> Command {
        Command::new("HINCRBY").arg(key).arg(field).arg(increment)
    }

    /// `HINCRBYFLOAT key field increment`
    pub fn hincrbyfloat(key: impl Arg, field: impl Arg, increment: f64) -> Command {
        Command::new("HINCRBYFLOAT")
            .arg(key)
            .arg(field)
            .arg(increment)
    }

    /// `LPUSH key element`
    pub fn lpush(key: impl Arg, element: impl Arg) -> Command {
        Command::new("LPUSH").arg(key).arg(element)
    }

    /// `RPUSH key element`
    pub fn rpush(key: impl Arg, element: impl Arg) -> Command {
        Command::new("RPUSH").arg(key).arg(element)
    }

    /// `LTRIM key start stop`
    pub fn ltrim(key: impl Arg, start: i64, stop: i64) -> Command {
        Command::new("LTRIM").arg(key).arg(start).arg(stop)
    }

    /// `SADD key member`
    pub fn sadd(key: impl Arg, member: impl Arg) -> Command {
        Command::new("SADD").arg(key).arg(member)
    }

    /// `SREM key member`
    pub fn srem(key: impl Arg, member: impl Arg) -> Command {
        Command::new("SREM").arg(key).arg(member)
    }

    /// `ZADD key score member`
    pub fn zadd(key: impl Arg, score: f64, member: impl Arg) -> Command {
        Command::new("ZADD").arg(key).arg(score).arg(member)
    }

    /// `ZINCRBY key increment member`
    pub fn zincrby(key: impl Arg, increment: f64, member: impl Arg) -> Command {
        Command::new("ZINCRBY").arg(key).arg(increment).arg(member)
    }

    /// `XADD key [MAXLEN ~ maxlen] * field value ...`: appends to a stream; give a
    /// `maxlen` so the stream cannot grow without bound.
    pub fn xadd<F: Arg, V: Arg>(key: impl Arg, maxlen: Option<u64>, fields: &[(F, V)]) -> Command {
        let mut c = Command::new("XADD").arg(key);
        if let Some(n) = maxlen {
            c = c.arg("MAXLEN").arg("~").arg(n);
        }
        c = c.arg("*");
        for (f, v) in fields {
            c = c.arg(f).arg(v);
        }
        c
    }

    /// `SETBIT key offset value`
    pub fn setbit(key: impl Arg, offset: u64, value: bool) -> Command {
        Command::new("SETBIT")
            .arg(key)
            .arg(offset)
            .arg(u8::from(value))
    }

    /// `PFADD key element`
    pub fn pfadd(key: impl Arg, element: impl Arg) -> Command {
        Command::new("PFADD").arg(key).arg(element)
    }

    /// `PUBLISH channel message`
    pub fn publish(channel: impl Arg, message: impl Arg) -> Command {
        Command::new("PUBLISH").arg(channel).arg(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip_binary() {
        let c = Command::new("SET").arg(&b"\x00\xff"[..]).arg("");
        let args: Vec<&[u8]> = c.args().collect();
        assert_eq!(args, vec![&b"SET"[..], b"\x00\xff", b""]);
    }

    #[test]
    fn display_quotes_like_redis_cli() {
        let c = Command::new("SET")
            .arg("a b")
            .arg("")
            .arg(&b"\r\n\x01"[..])
            .arg("q\"");
        assert_eq!(c.to_string(), r#"SET "a b" "" "\r\n\x01" "q\"""#);
    }

    #[test]
    fn numbers_are_decimal() {
        assert_eq!(cmd::zadd("z", 1.5, "m").to_string(), "ZADD z 1.5 m");
        assert_eq!(cmd::incrby("n", -3).to_string(), "INCRBY n -3");
        assert_eq!(
            cmd::zadd("z", f64::INFINITY, "m").to_string(),
            "ZADD z inf m"
        );
        assert_eq!(cmd::setbit("seen", 7, true).to_string(), "SETBIT seen 7 1");
    }

    #[test]
    fn json_values_render_like_emqx_templates() {
        let v: serde_json::Value = serde_json::from_str(r#"{"a":21.5,"b":"x y","c":[1]}"#).unwrap();
        let c = Command::new("X").arg(&v["a"]).arg(&v["b"]).arg(&v["c"]);
        assert_eq!(c.to_string(), r#"X 21.5 "x y" [1]"#);
    }
}
