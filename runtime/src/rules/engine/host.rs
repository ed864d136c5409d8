//! The host functions of rule ABI v2 (`docs/abi.md`, "Reading Redis"): what a rule may
//! import (`wasmrule.redis_read`, `wasmrule.redis_reply`), the typed reply and its
//! encoding, the per-invocation read budget and the closed set of error codes.
//!
//! The engine does not do the I/O or know tenants: whoever invokes a v2 rule hands it a
//! [`RedisReads`] (the worker's goes through the Redis writer, `dispatch/reads.rs`; the
//! offline tools answer from a fixture), which applies the tenant's read policy and
//! runs the command. This file decodes the guest's request, enforces the budget (count,
//! reply bytes, time waited), and encodes the reply into guest memory.
//!
//! Why waiting has a budget of its own rather than counting against the CPU deadline:
//! the CPU deadline bounds what a rule computes (10 ms by default, measured in CPU time
//! so that a busy machine does not fail correct rules); a round trip to Redis through
//! the writer's pipeline takes a few milliseconds under load on a small machine, and
//! charging it to the same 10 ms failed correct rules (measured: dozens of 10,000
//! readings in the threshold test). Both bounds hold for every invocation.

use std::time::Duration;

use wasmtime::{Caller, Extern, Linker};

use super::Ctx;

/// The module name v2 rules import host functions from.
pub(crate) const IMPORT_MODULE: &str = "wasmrule";
/// `redis_read(req_ptr, req_len) -> reply length or error code`.
pub(crate) const IMPORT_READ: &str = "redis_read";
/// `redis_reply(dst_ptr, dst_cap) -> bytes copied or error code`.
pub(crate) const IMPORT_REPLY: &str = "redis_reply";

/// Most arguments (name included) one read may have.
const MAX_READ_ARGS: usize = 1024;

/// A Redis reply, as a rule sees it (`docs/abi.md`, "The reply").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Int(i64),
    /// A bulk or status string.
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
}

const REPLY_NIL: u8 = 0;
const REPLY_INT: u8 = 1;
const REPLY_BULK: u8 = 2;
const REPLY_ARRAY: u8 = 3;

impl Reply {
    /// Appends the reply's encoding (`docs/abi.md`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Nil => out.push(REPLY_NIL),
            Reply::Int(i) => {
                out.push(REPLY_INT);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Reply::Bulk(b) => {
                out.push(REPLY_BULK);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            Reply::Array(items) => {
                out.push(REPLY_ARRAY);
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for i in items {
                    i.encode(out);
                }
            }
        }
    }

    /// Bytes the encoding takes, to check the budget before encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            Reply::Nil => 1,
            Reply::Int(_) => 9,
            Reply::Bulk(b) => 5 + b.len(),
            Reply::Array(items) => 5 + items.iter().map(Reply::encoded_len).sum::<usize>(),
        }
    }

    /// Decodes one reply from the start of `buf`, returning it and the bytes it took;
    /// `None` if `buf` is not a well-formed reply (for fuzzing and the offline tools).
    pub fn decode(buf: &[u8]) -> Option<(Reply, usize)> {
        decode_at(buf, 0, 0)
    }
}

/// Nesting past this depth is not a reply Redis sends for the read set.
const MAX_REPLY_DEPTH: usize = 32;

fn decode_at(buf: &[u8], at: usize, depth: usize) -> Option<(Reply, usize)> {
    if depth > MAX_REPLY_DEPTH {
        return None;
    }
    let u32_at = |i: usize| -> Option<usize> {
        let b = buf.get(i..i.checked_add(4)?)?;
        Some(u32::from_le_bytes(b.try_into().ok()?) as usize)
    };
    match *buf.get(at)? {
        REPLY_NIL => Some((Reply::Nil, at + 1)),
        REPLY_INT => {
            let b = buf.get(at + 1..at + 9)?;
            Some((Reply::Int(i64::from_le_bytes(b.try_into().ok()?)), at + 9))
        }
        REPLY_BULK => {
            let len = u32_at(at + 1)?;
            let start = at + 5;
            let b = buf.get(start..start.checked_add(len)?)?;
            Some((Reply::Bulk(b.to_vec()), start + len))
        }
        REPLY_ARRAY => {
            let count = u32_at(at + 1)?;
            // Every element takes at least one byte: a count beyond the buffer is bad.
            if count > buf.len() {
                return None;
            }
            let mut items = Vec::with_capacity(count);
            let mut next = at + 5;
            for _ in 0..count {
                let (item, end) = decode_at(buf, next, depth + 1)?;
                items.push(item);
                next = end;
            }
            Some((Reply::Array(items), next))
        }
        _ => None,
    }
}

/// Why a read was refused or failed: the closed set a rule sees as negative codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadCode {
    /// Not in the read set, or the tenant may not read.
    NotAllowed,
    /// Malformed request, wrong arity, key too long.
    BadRequest,
    /// Past the invocation's read count or reply bytes.
    OverBudget,
    /// Redis unreachable, too slow for the deadline, or writes waiting in the spill.
    Unavailable,
    /// Redis answered with an error.
    RedisError,
    /// `redis_reply` without a held reply.
    NoReply,
    /// `redis_reply` with a buffer smaller than the reply.
    ShortBuffer,
}

impl ReadCode {
    /// The code the guest gets (`docs/abi.md`).
    pub fn code(self) -> i32 {
        match self {
            ReadCode::NotAllowed => -1,
            ReadCode::BadRequest => -2,
            ReadCode::OverBudget => -3,
            ReadCode::Unavailable => -4,
            ReadCode::RedisError => -5,
            ReadCode::NoReply => -6,
            ReadCode::ShortBuffer => -7,
        }
    }

    /// The code's [`ReadCode`], for reading one back (recordings, `record/format.rs`).
    pub fn from_code(code: i32) -> Option<ReadCode> {
        use ReadCode::*;
        [
            NotAllowed,
            BadRequest,
            OverBudget,
            Unavailable,
            RedisError,
            NoReply,
            ShortBuffer,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }

    /// The documented name, for logs and counting.
    pub fn name(self) -> &'static str {
        match self {
            ReadCode::NotAllowed => "not_allowed",
            ReadCode::BadRequest => "bad_request",
            ReadCode::OverBudget => "over_budget",
            ReadCode::Unavailable => "unavailable",
            ReadCode::RedisError => "redis_error",
            ReadCode::NoReply => "no_reply",
            ReadCode::ShortBuffer => "short_buffer",
        }
    }
}

/// Runs reads for a v2 rule: checks the command against the tenant's read policy,
/// namespaces its keys, sends it and waits at most `timeout` for the reply.
///
/// `Any` so that a caller can reach its own port again after lending it
/// (`&mut dyn RedisReads as &mut dyn Any`).
pub trait RedisReads: Send + std::any::Any {
    /// One read; `args[0]` is the command name. `max_reply` is what is left of the
    /// invocation's reply-byte budget: a longer reply is [`ReadCode::OverBudget`].
    ///
    /// # Errors
    ///
    /// The [`ReadCode`] the rule gets.
    fn read(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
        max_reply: usize,
    ) -> Result<Reply, ReadCode>;
}

/// What reads may use in one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadBudget {
    /// Most reads.
    pub max_reads: u32,
    /// Most reply bytes, all reads together (as encoded for the guest).
    pub max_bytes: usize,
    /// Most wall time spent waiting for replies, all reads together.
    pub max_wait: Duration,
}

impl Default for ReadBudget {
    fn default() -> Self {
        ReadBudget {
            max_reads: 16,
            max_bytes: 1 << 20,
            max_wait: Duration::from_millis(100),
        }
    }
}

/// One invocation's read state, in the store's data.
#[derive(Default)]
pub(super) struct ReadState {
    /// Where reads go; `None`: every read is `unavailable` (a v1 caller, a load).
    pub(super) port: Option<Box<dyn RedisReads>>,
    pub(super) budget: ReadBudget,
    reads: u32,
    bytes: usize,
    waited: Duration,
    /// The last read's encoded reply, until copied.
    held: Option<Vec<u8>>,
    /// Reads made and refused, for the caller's metrics.
    pub(super) made: u32,
    pub(super) refused: u32,
}

impl ReadState {
    pub(super) fn new(port: Option<Box<dyn RedisReads>>, budget: ReadBudget) -> ReadState {
        ReadState {
            port,
            budget,
            ..ReadState::default()
        }
    }
}

/// Defines the v2 imports in `linker`.
pub(super) fn define(linker: &mut Linker<Ctx>) -> anyhow::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        IMPORT_READ,
        |mut caller: Caller<'_, Ctx>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let request = copy_in(&mut caller, ptr as u32, len as u32)?;
            let ctx = caller.data_mut();
            let r = read(&mut ctx.reads, &request);
            match r {
                Ok(n) => Ok(n),
                Err(code) => {
                    ctx.reads.refused += 1;
                    Ok(code.code())
                }
            }
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        IMPORT_REPLY,
        |mut caller: Caller<'_, Ctx>, ptr: i32, cap: i32| -> wasmtime::Result<i32> {
            let Some(held) = caller.data_mut().reads.held.take() else {
                return Ok(ReadCode::NoReply.code());
            };
            if (cap as u32 as usize) < held.len() {
                caller.data_mut().reads.held = Some(held);
                return Ok(ReadCode::ShortBuffer.code());
            }
            let memory = memory(&mut caller)?;
            let dst = memory
                .data_mut(&mut caller)
                .get_mut(ptr as u32 as usize..)
                .and_then(|m| m.get_mut(..held.len()))
                .ok_or_else(|| outside(ptr as u32, held.len() as u32, "redis_reply buffer"))?;
            dst.copy_from_slice(&held);
            // A host write the module's own marks do not see (`reuse_marks.rs`).
            if let Some(Extern::Memory(map)) = caller.get_export(super::reuse_marks::DIRTY_MAP) {
                let start = ptr as u32 as usize;
                super::reuse::mark(map.data_mut(&mut caller), start, start + held.len());
            }
            Ok(held.len() as i32)
        },
    )?;
    Ok(())
}

fn memory(caller: &mut Caller<'_, Ctx>) -> wasmtime::Result<wasmtime::Memory> {
    match caller.get_export(super::abi::EXPORT_MEMORY) {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(super::RuleError::Abi("`memory` export missing at run time".into()).into()),
    }
}

fn outside(ptr: u32, len: u32, what: &str) -> wasmtime::Error {
    super::RuleError::Abi(format!("{what} at {ptr}..+{len} is outside linear memory")).into()
}

/// The request bytes at `ptr..ptr+len`; a range outside memory fails the invocation
/// (`abi`), as every guest pointer does.
fn copy_in(caller: &mut Caller<'_, Ctx>, ptr: u32, len: u32) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    let data = memory.data(&*caller);
    super::abi::guest_slice(data, ptr, len, "redis_read request")
        .map(<[u8]>::to_vec)
        .map_err(Into::into)
}

/// One `redis_read`: decode, then [`read_typed`], then hold the encoded reply.
fn read(state: &mut ReadState, request: &[u8]) -> Result<i32, ReadCode> {
    state.held = None;
    let args = decode_request(request)?;
    let reply = read_typed(state, &args)?;
    let mut held = Vec::with_capacity(reply.encoded_len());
    reply.encode(&mut held);
    let len = held.len() as i32;
    state.held = Some(held);
    Ok(len)
}

/// One read of `args` under the invocation's budget (count, reply bytes, time waited),
/// through its port: the part core modules and components share.
pub(super) fn read_typed(state: &mut ReadState, args: &[&[u8]]) -> Result<Reply, ReadCode> {
    if state.reads >= state.budget.max_reads {
        return Err(ReadCode::OverBudget);
    }
    state.reads += 1;
    state.made += 1;
    let Some(port) = state.port.as_mut() else {
        return Err(ReadCode::Unavailable);
    };
    let left = state.budget.max_wait.saturating_sub(state.waited);
    if left.is_zero() {
        return Err(ReadCode::Unavailable);
    }
    let max_reply = state.budget.max_bytes - state.bytes;
    let started = std::time::Instant::now();
    let reply = port.read(args, left, max_reply);
    state.waited += started.elapsed();
    let reply = reply?;
    let len = reply.encoded_len();
    if len > max_reply {
        return Err(ReadCode::OverBudget);
    }
    state.bytes += len;
    Ok(reply)
}

/// The request's arguments (`u32 argc`, then `u32 len, bytes` each).
fn decode_request(mut buf: &[u8]) -> Result<Vec<&[u8]>, ReadCode> {
    let mut take = |n: usize| -> Result<&[u8], ReadCode> {
        if buf.len() < n {
            return Err(ReadCode::BadRequest);
        }
        let (head, tail) = buf.split_at(n);
        buf = tail;
        Ok(head)
    };
    let u32_of = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize;
    let argc = u32_of(take(4)?);
    if argc == 0 || argc > MAX_READ_ARGS {
        return Err(ReadCode::BadRequest);
    }
    let mut args = Vec::with_capacity(argc);
    for _ in 0..argc {
        let len = u32_of(take(4)?);
        args.push(take(len)?);
    }
    if !buf.is_empty() {
        return Err(ReadCode::BadRequest);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(args: &[&[u8]]) -> Vec<u8> {
        let mut b = (args.len() as u32).to_le_bytes().to_vec();
        for a in args {
            b.extend((a.len() as u32).to_le_bytes());
            b.extend(*a);
        }
        b
    }

    #[test]
    fn requests_decode_or_are_bad() {
        let req = request(&[b"HGET", b"k", b"\0\r\n"]);
        let args = decode_request(&req).unwrap();
        assert_eq!(args, vec![&b"HGET"[..], b"k", b"\0\r\n"]);
        let good = request(&[b"GET", b"k"]);
        for bad in [
            vec![],
            request(&[]),
            good[..good.len() - 1].to_vec(),
            [good.clone(), vec![0]].concat(),
            u32::MAX.to_le_bytes().to_vec(),
        ] {
            assert_eq!(decode_request(&bad), Err(ReadCode::BadRequest), "{bad:?}");
        }
    }

    #[test]
    fn replies_encode_as_documented_and_round_trip() {
        let r = Reply::Array(vec![Reply::Bulk(b"f".to_vec()), Reply::Int(-2), Reply::Nil]);
        let mut b = Vec::new();
        r.encode(&mut b);
        let want = [
            &[3u8, 3, 0, 0, 0][..],
            &[2, 1, 0, 0, 0, b'f'],
            &[1],
            &(-2i64).to_le_bytes(),
            &[0],
        ]
        .concat();
        assert_eq!(b, want);
        assert_eq!(r.encoded_len(), b.len());
        assert_eq!(Reply::decode(&b), Some((r, b.len())));
        assert_eq!(Reply::decode(&b[..b.len() - 1]), None);
        assert_eq!(Reply::decode(&[3, 255, 255, 255, 255]), None);
    }

    #[test]
    fn codes_are_the_documented_ones() {
        let all = [
            ReadCode::NotAllowed,
            ReadCode::BadRequest,
            ReadCode::OverBudget,
            ReadCode::Unavailable,
            ReadCode::RedisError,
            ReadCode::NoReply,
            ReadCode::ShortBuffer,
        ];
        let codes: Vec<i32> = all.iter().map(|c| c.code()).collect();
        assert_eq!(codes, vec![-1, -2, -3, -4, -5, -6, -7]);
        let doc = include_str!("../../../../docs/abi.md");
        for c in all {
            assert!(
                doc.contains(&format!("| {} | `{}` |", c.code(), c.name())),
                "{} missing from docs/abi.md",
                c.name()
            );
        }
    }
}
