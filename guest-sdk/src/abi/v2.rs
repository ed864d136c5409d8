//! The guest side of rule ABI v2 (`docs/abi.md`, "Rule ABI, version 2"): the encoding
//! of a read request, of a reply, and of a result buffer of actions; and the event
//! entry point of a v2 rule, which hands the rule a [`Context`] over the host's
//! imports (on wasm32) or any other [`Reads`] (natively).
//!
//! ```text
//! request: u32 argc, argc times (u32 len, bytes)        the command name first
//! reply:   0 nil | 1 i64 | 2 u32 len bytes | 3 u32 count values
//! result:  0x00 u32 count, count times (u8 kind, fields) | 0x01 utf-8 message
//!   kind 0 redis       u32 argc, argc times (u32 len, bytes)
//!   kind 1 publish     str topic, str payload, u8 qos, u8 retain, u32 n, n (str, str)
//!   kind 2 subscribe   str clientid, str filter, u8 qos
//!   kind 3 unsubscribe str clientid, str filter
//!   kind 4 deliver     str clientid, str topic, str payload, u8 qos, u8 retain
//!   kind 5 deliver     as kind 4, then u32 n, n (str, str): with user properties
//! ```
//!
//! All integers are little-endian; `str` is `u32 len` and the bytes.

use super::{TAG_ERROR, TAG_OK};
use crate::{Action, Context, Event, IntoActions, Reads, RuleError, Value};

/// The ABI version of rules whose function takes a [`Context`]: the module exports
/// `wasmrule_abi_version_2`.
pub const ABI_VERSION: u32 = 2;

/// Action kinds (the byte before each action's fields).
pub const KIND_REDIS: u8 = 0;
pub const KIND_PUBLISH: u8 = 1;
pub const KIND_SUBSCRIBE: u8 = 2;
pub const KIND_UNSUBSCRIBE: u8 = 3;
pub const KIND_DELIVER: u8 = 4;
/// A deliver with MQTT 5 user properties; written only when there are any, so that a
/// rule without them runs on hosts that predate the kind.
pub const KIND_DELIVER_PROPS: u8 = 5;

/// Reply type tags.
pub const REPLY_NIL: u8 = 0;
pub const REPLY_INT: u8 = 1;
pub const REPLY_BULK: u8 = 2;
pub const REPLY_ARRAY: u8 = 3;

/// How deep arrays in a reply may nest before the SDK calls the reply malformed (the
/// read set nests three deep: `XRANGE`'s entries and their fields).
const MAX_REPLY_DEPTH: u32 = 32;

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// The request buffer `redis_read` takes for `args` (the command name first).
///
/// # Examples
///
/// ```
/// let req = wasmrule_guest::abi::v2::encode_request(&["GET", "k"]);
/// assert_eq!(req, b"\x02\0\0\0\x03\0\0\0GET\x01\0\0\0k");
/// ```
pub fn encode_request<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let size: usize = args.iter().map(|a| 4 + a.as_ref().len()).sum();
    let mut out = Vec::with_capacity(4 + size);
    put_u32(&mut out, args.len());
    for a in args {
        put_str(&mut out, a.as_ref());
    }
    out
}

/// A cursor over a buffer; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<usize> {
        let (n, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_le_bytes(*n) as usize)
    }
    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (b, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(b)
    }
    fn str(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()?;
        self.bytes(len)
    }
}

/// The arguments of a request buffer, or `None` when it is malformed (a length past
/// the end, bytes left over, no command name): what the host answers with
/// `bad_request`.
pub fn decode_request(buf: &[u8]) -> Option<Vec<&[u8]>> {
    let mut r = Reader(buf);
    let argc = r.u32()?;
    if argc == 0 || argc > buf.len() / 4 {
        return None;
    }
    let args = (0..argc).map(|_| r.str()).collect::<Option<Vec<_>>>()?;
    r.0.is_empty().then_some(args)
}

/// Appends the reply encoding of `value` to `out`.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.push(REPLY_NIL),
        Value::Int(i) => {
            out.push(REPLY_INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Bulk(b) => {
            out.push(REPLY_BULK);
            put_str(out, b);
        }
        Value::Array(items) => {
            out.push(REPLY_ARRAY);
            put_u32(out, items.len());
            for v in items {
                encode_value(v, out);
            }
        }
    }
}

/// The value a reply buffer holds, or `None` when it is malformed (an unknown type,
/// a length past the end, bytes left over).
///
/// # Examples
///
/// ```
/// use wasmrule_guest::{Value, abi::v2::decode_value};
/// assert_eq!(decode_value(b"\x02\x04\0\0\x0021.5"), Some(Value::from("21.5")));
/// assert_eq!(decode_value(b"\x00"), Some(Value::Nil));
/// ```
pub fn decode_value(buf: &[u8]) -> Option<Value> {
    let mut r = Reader(buf);
    let v = read_value(&mut r, 0)?;
    r.0.is_empty().then_some(v)
}

fn read_value(r: &mut Reader<'_>, depth: u32) -> Option<Value> {
    Some(match r.u8()? {
        REPLY_NIL => Value::Nil,
        REPLY_INT => Value::Int(i64::from_le_bytes(*r.bytes(8)?.first_chunk::<8>()?)),
        REPLY_BULK => Value::Bulk(r.str()?.to_vec()),
        REPLY_ARRAY if depth < MAX_REPLY_DEPTH => {
            let count = r.u32()?;
            // Every value is at least one byte: a count past the rest is malformed,
            // and must not reserve memory for it.
            if count > r.0.len() {
                return None;
            }
            let items = (0..count)
                .map(|_| read_value(r, depth + 1))
                .collect::<Option<Vec<_>>>()?;
            Value::Array(items)
        }
        _ => return None,
    })
}

/// Appends the encoding of one action to `out`.
pub fn encode_action(action: &Action, out: &mut Vec<u8>) {
    match action {
        Action::Redis(c) => {
            out.push(KIND_REDIS);
            out.extend_from_slice(&c.argc().to_le_bytes());
            out.extend_from_slice(c.encoded());
        }
        Action::Publish(p) => {
            out.push(KIND_PUBLISH);
            put_str(out, p.topic.as_bytes());
            put_str(out, &p.payload);
            out.push(p.qos);
            out.push(u8::from(p.retain));
            put_u32(out, p.properties.len());
            for (k, v) in &p.properties {
                put_str(out, k.as_bytes());
                put_str(out, v.as_bytes());
            }
        }
        Action::Subscribe {
            client,
            filter,
            qos,
        } => {
            out.push(KIND_SUBSCRIBE);
            put_str(out, client.as_bytes());
            put_str(out, filter.as_bytes());
            out.push(*qos);
        }
        Action::Unsubscribe { client, filter } => {
            out.push(KIND_UNSUBSCRIBE);
            put_str(out, client.as_bytes());
            put_str(out, filter.as_bytes());
        }
        Action::Deliver(d) => {
            let props = !d.properties.is_empty();
            out.push(if props {
                KIND_DELIVER_PROPS
            } else {
                KIND_DELIVER
            });
            put_str(out, d.client.as_bytes());
            put_str(out, d.topic.as_bytes());
            put_str(out, &d.payload);
            out.push(d.qos);
            out.push(u8::from(d.retain));
            if props {
                put_u32(out, d.properties.len());
                for (k, v) in &d.properties {
                    put_str(out, k.as_bytes());
                    put_str(out, v.as_bytes());
                }
            }
        }
    }
}

/// Appends the v2 result buffer for `result` to `out`.
pub fn encode_result(result: &Result<Vec<Action>, RuleError>, out: &mut Vec<u8>) {
    match result {
        Ok(actions) => {
            out.push(TAG_OK);
            put_u32(out, actions.len());
            for a in actions {
                encode_action(a, out);
            }
        }
        Err(e) => {
            out.push(TAG_ERROR);
            out.extend_from_slice(e.message().as_bytes());
        }
    }
}

/// The actions of a v2 result buffer, or the rule's error; `Err` with "malformed
/// result buffer" when the buffer breaks the layout. The inverse of [`encode_result`],
/// for tests.
///
/// # Errors
///
/// The rule's error, or a malformed buffer.
pub fn decode_result(buf: &[u8]) -> Result<Vec<Action>, RuleError> {
    let bad = || RuleError::new("malformed result buffer");
    let mut r = Reader(buf);
    match r.u8().ok_or_else(bad)? {
        TAG_ERROR => return Err(RuleError::new(String::from_utf8_lossy(r.0))),
        TAG_OK => {}
        _ => return Err(bad()),
    }
    let count = r.u32().ok_or_else(bad)?;
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(read_action(&mut r).ok_or_else(bad)?);
    }
    if r.0.is_empty() { Ok(out) } else { Err(bad()) }
}

fn read_action(r: &mut Reader<'_>) -> Option<Action> {
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
    let kind = r.u8()?;
    Some(match kind {
        KIND_REDIS => {
            let argc = r.u32()?;
            let (name, rest) = (0..argc)
                .map(|_| r.str())
                .collect::<Option<Vec<_>>>()?
                .split_first()
                .map(|(n, rest)| (text(n), rest.to_vec()))?;
            let c = rest
                .into_iter()
                .fold(crate::Command::new(&name?), |c, a| c.arg(a));
            Action::Redis(c)
        }
        KIND_PUBLISH => {
            let topic = text(r.str()?)?;
            let payload = r.str()?;
            let (qos, retain) = (r.u8()?, r.u8()? != 0);
            let n = r.u32()?;
            let mut p = crate::action::publish(topic, payload)
                .qos(qos)
                .retain(retain);
            for _ in 0..n {
                p = p.property(text(r.str()?)?, text(r.str()?)?);
            }
            Action::Publish(p)
        }
        KIND_SUBSCRIBE => crate::action::subscribe(text(r.str()?)?, text(r.str()?)?, r.u8()?),
        KIND_UNSUBSCRIBE => crate::action::unsubscribe(text(r.str()?)?, text(r.str()?)?),
        KIND_DELIVER | KIND_DELIVER_PROPS => {
            let (client, topic) = (text(r.str()?)?, text(r.str()?)?);
            let payload = r.str()?;
            let (qos, retain) = (r.u8()?, r.u8()? != 0);
            let mut d = crate::action::deliver(client, topic, payload)
                .qos(qos)
                .retain(retain);
            if kind == KIND_DELIVER_PROPS {
                for _ in 0..r.u32()? {
                    d = d.property(text(r.str()?)?, text(r.str()?)?);
                }
            }
            d.into()
        }
        _ => return None,
    })
}

/// Runs a v2 `handler` on one event given as JSON, its reads answered by `reads`, and
/// returns the encoded result buffer: exactly what the wasm export does, minus the
/// pointers.
pub fn handle_json<R: IntoActions>(
    input: &[u8],
    reads: &mut dyn Reads,
    handler: impl Fn(&Event<'_>, &mut Context<'_>) -> R,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_result(&run(input, reads, handler), &mut out);
    out
}

fn run<R: IntoActions>(
    input: &[u8],
    reads: &mut dyn Reads,
    handler: impl Fn(&Event<'_>, &mut Context<'_>) -> R,
) -> Result<Vec<Action>, RuleError> {
    let event = Event::from_json(input)
        .map_err(|e| RuleError::new(format!("event is not valid JSON for this SDK: {e}")))?;
    handler(&event, &mut Context::new(reads)).into_actions()
}

/// `wasmrule_on_event` of a v2 rule: handles the event the host wrote at
/// `ptr..ptr+len` (a buffer from [`super::alloc`]), reading through the host's
/// imports, and returns the packed location of the result buffer.
///
/// # Safety
///
/// `ptr` and `len` must be a buffer returned by [`super::alloc`] that is not used
/// afterwards.
#[cfg(target_arch = "wasm32")]
pub unsafe fn on_event<R: IntoActions>(
    ptr: u32,
    len: u32,
    handler: impl Fn(&Event<'_>, &mut Context<'_>) -> R,
) -> u64 {
    let ptr = ptr as usize as *mut u8;
    // SAFETY: the caller passes a live allocation of `len` bytes.
    let input = unsafe { std::slice::from_raw_parts(ptr, len as usize) };
    let result = run(input, &mut super::host::HostReads, handler);
    // SAFETY: the input is not used after this point.
    unsafe { super::free_input(ptr, len) };
    super::with_output(|out| encode_result(&result, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{action, cmd};

    fn le(n: u32) -> [u8; 4] {
        n.to_le_bytes()
    }

    #[test]
    fn request_layout_is_the_documented_one() {
        let req = encode_request(&["ZSCORE", "z", "m"]);
        let mut want = le(3).to_vec();
        for a in ["ZSCORE", "z", "m"] {
            want.extend_from_slice(&le(a.len() as u32));
            want.extend_from_slice(a.as_bytes());
        }
        assert_eq!(req, want);
        assert_eq!(decode_request(&req), Some(vec![&b"ZSCORE"[..], b"z", b"m"]));
        assert_eq!(decode_request(&req[..req.len() - 1]), None);
        assert_eq!(decode_request(&[req.as_slice(), b"x"].concat()), None);
        assert_eq!(decode_request(&le(0)), None);
    }

    #[test]
    fn reply_layout_is_the_documented_one() {
        let v = Value::Array(vec![
            Value::Nil,
            Value::Int(-2),
            Value::from("ab"),
            Value::Array(vec![]),
        ]);
        let mut buf = Vec::new();
        encode_value(&v, &mut buf);
        let mut want = vec![3];
        want.extend_from_slice(&le(4));
        want.push(0);
        want.push(1);
        want.extend_from_slice(&(-2i64).to_le_bytes());
        want.push(2);
        want.extend_from_slice(&le(2));
        want.extend_from_slice(b"ab");
        want.push(3);
        want.extend_from_slice(&le(0));
        assert_eq!(buf, want);
        assert_eq!(decode_value(&buf), Some(v));
        assert_eq!(decode_value(&buf[..buf.len() - 1]), None);
        assert_eq!(decode_value(b"\x00\x00"), None);
        assert_eq!(decode_value(b"\x09"), None);
        // A count far past the buffer is refused before anything is allocated.
        assert_eq!(decode_value(b"\x03\xff\xff\xff\xff"), None);
    }

    #[test]
    fn actions_layout_is_the_documented_one() {
        let actions = vec![
            Action::redis(cmd::set("k", "v")),
            action::publish("t", "p").qos(1).property("a", "b").into(),
            action::subscribe("c", "f/#", 1),
            action::unsubscribe("c", "f/#"),
            action::deliver("c", "t", "p").retain(true).into(),
        ];
        let mut buf = Vec::new();
        encode_result(&Ok(actions.clone()), &mut buf);
        let s = |out: &mut Vec<u8>, b: &str| {
            out.extend_from_slice(&le(b.len() as u32));
            out.extend_from_slice(b.as_bytes());
        };
        let mut want = vec![0];
        want.extend_from_slice(&le(5));
        want.push(0); // redis
        want.extend_from_slice(&le(3));
        for a in ["SET", "k", "v"] {
            s(&mut want, a);
        }
        want.push(1); // publish
        s(&mut want, "t");
        s(&mut want, "p");
        want.extend_from_slice(&[1, 0]);
        want.extend_from_slice(&le(1));
        s(&mut want, "a");
        s(&mut want, "b");
        want.push(2); // subscribe
        s(&mut want, "c");
        s(&mut want, "f/#");
        want.push(1);
        want.push(3); // unsubscribe
        s(&mut want, "c");
        s(&mut want, "f/#");
        want.push(4); // deliver
        s(&mut want, "c");
        s(&mut want, "t");
        s(&mut want, "p");
        want.extend_from_slice(&[0, 1]);
        assert_eq!(buf, want);
        assert_eq!(decode_result(&buf), Ok(actions));
        assert!(decode_result(&buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn errors_are_tag_one_and_the_message() {
        let mut buf = Vec::new();
        encode_result(&Err(RuleError::new("no temp")), &mut buf);
        assert_eq!(buf, b"\x01no temp");
    }
}
