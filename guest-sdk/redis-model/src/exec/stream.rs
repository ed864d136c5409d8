//! The stream commands of the read set with ranges: `XRANGE` and `XREVRANGE`.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::{R, bulk, int};
use crate::store::{Data, Store};
use crate::{Failure, Reply};

/// A stream id bound: `-`, `+`, `ms`, `ms-seq`, with `(` for exclusive. A missing
/// sequence is 0 for a start and the largest for an end.
pub(super) fn stream_bound(arg: &[u8], is_start: bool) -> Result<((u64, u64), bool), Failure> {
    let (exclusive, text) = match arg.split_first() {
        Some((b'(', rest)) => (true, rest),
        _ => (false, arg),
    };
    let id = match text {
        b"-" => (0, 0),
        b"+" => (u64::MAX, u64::MAX),
        _ => {
            let t = core::str::from_utf8(text).map_err(|_| Failure::RedisError)?;
            let num = |s: &str| s.parse::<u64>().map_err(|_| Failure::RedisError);
            match t.split_once('-') {
                Some((ms, seq)) => (num(ms)?, num(seq)?),
                None => (num(t)?, if is_start { 0 } else { u64::MAX }),
            }
        }
    };
    Ok((id, exclusive))
}

/// XRANGE key start end [COUNT n] and XREVRANGE key end start [COUNT n].
pub(super) fn xrange(db: &Store, a: &[&[u8]], rev: bool) -> R {
    let (first, second) = if rev { (a[2], a[1]) } else { (a[1], a[2]) };
    let ((lo, lo_ex), (hi, hi_ex)) = (stream_bound(first, true)?, stream_bound(second, false)?);
    let count = match &a[3..] {
        [] => None,
        [c, n] if c.eq_ignore_ascii_case(b"COUNT") => Some(int(n)?),
        _ => return Err(Failure::RedisError),
    };
    let entries = match db.get(a[0]) {
        None => return Ok(Reply::Array(Vec::new())),
        Some(Data::Stream(e)) => e,
        Some(_) => return Err(Failure::RedisError),
    };
    let inside = |id: &(u64, u64)| {
        (if lo_ex { *id > lo } else { *id >= lo }) && (if hi_ex { *id < hi } else { *id <= hi })
    };
    let mut picked: Vec<_> = entries.iter().filter(|(id, _)| inside(id)).collect();
    if rev {
        picked.reverse();
    }
    if let Some(n) = count {
        // COUNT 0 or less is no limit in Redis 7.0.
        if n > 0 {
            picked.truncate(n as usize);
        }
    }
    Ok(Reply::Array(
        picked
            .into_iter()
            .map(|((ms, seq), fields)| {
                let flat = fields
                    .iter()
                    .flat_map(|(f, v)| [bulk(f), bulk(v)])
                    .collect();
                Reply::Array(vec![bulk(format!("{ms}-{seq}")), Reply::Array(flat)])
            })
            .collect(),
    ))
}
