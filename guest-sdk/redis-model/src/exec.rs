//! What each command of the read set answers, following Redis 7.0 (the version the
//! tests run against): index ranges with negative indices, score and lex bounds,
//! scores formatted as Redis 7.0 sends them (`%.17g`: `0.1` is `0.10000000000000001`).
//! The request has passed `read_set::check`: the name is known and the number of
//! arguments fits.

use alloc::string::String;
use alloc::vec::Vec;
use alloc::{format, vec};

use crate::store::{Data, Store};
use crate::{Failure, Reply};

type R = Result<Reply, Failure>;

pub(crate) fn run(db: &Store, args: &[&[u8]]) -> R {
    let mut name = [0u8; 16];
    let n = args[0].len().min(16);
    name[..n].copy_from_slice(&args[0][..n]);
    name.make_ascii_uppercase();
    let a = &args[1..];
    match &name[..n] {
        b"GET" => get(db, a[0]),
        b"MGET" => Ok(Reply::Array(
            a.iter().map(|k| get(db, k).unwrap_or(Reply::Nil)).collect(),
        )),
        b"STRLEN" => Ok(Reply::Int(string(db, a[0])?.map_or(0, |s| s.len()) as i64)),
        b"GETRANGE" => getrange(db, a),
        b"EXISTS" => Ok(Reply::Int(
            a.iter().filter(|k| db.get(k).is_some()).count() as i64
        )),
        b"TYPE" => Ok(bulk(db.get(a[0]).map_or("none", Data::type_name))),
        b"TTL" | b"PTTL" => Ok(Reply::Int(match db.pttl(a[0]) {
            None => -2,
            Some(None) => -1,
            Some(Some(ms)) if n == 3 => (ms + 500) / 1000,
            Some(Some(ms)) => ms,
        })),
        b"HGET" => Ok(hash(db, a[0])?.map_or(Reply::Nil, |h| field(h, a[1]))),
        b"HMGET" => {
            let h = hash(db, a[0])?;
            Ok(Reply::Array(
                a[1..]
                    .iter()
                    .map(|f| h.map_or(Reply::Nil, |h| field(h, f)))
                    .collect(),
            ))
        }
        b"HGETALL" => Ok(Reply::Array(
            hash(db, a[0])?
                .unwrap_or_default()
                .iter()
                .flat_map(|(f, v)| [bulk(f), bulk(v)])
                .collect(),
        )),
        b"HEXISTS" => Ok(flag(
            hash(db, a[0])?.is_some_and(|h| h.iter().any(|(f, _)| f == a[1])),
        )),
        b"HLEN" => Ok(Reply::Int(hash(db, a[0])?.map_or(0, |h| h.len()) as i64)),
        b"HKEYS" => Ok(list_of(
            hash(db, a[0])?.unwrap_or_default().iter().map(|(f, _)| f),
        )),
        b"HVALS" => Ok(list_of(
            hash(db, a[0])?.unwrap_or_default().iter().map(|(_, v)| v),
        )),
        b"LRANGE" => {
            let items = list(db, a[0])?.unwrap_or_default();
            let (start, stop) = (int(a[1])?, int(a[2])?);
            Ok(list_of(
                index_range(items.len(), start, stop).map_or(&[][..], |(s, e)| &items[s..e]),
            ))
        }
        b"LLEN" => Ok(Reply::Int(list(db, a[0])?.map_or(0, |l| l.len()) as i64)),
        b"LINDEX" => {
            let items = list(db, a[0])?.unwrap_or_default();
            let i = int(a[1])?;
            let i = if i < 0 { i + items.len() as i64 } else { i };
            Ok(usize::try_from(i)
                .ok()
                .and_then(|i| items.get(i))
                .map_or(Reply::Nil, bulk))
        }
        b"SMEMBERS" => Ok(list_of(set(db, a[0])?.unwrap_or_default())),
        b"SISMEMBER" => Ok(flag(
            set(db, a[0])?.is_some_and(|s| s.iter().any(|m| m == a[1])),
        )),
        b"SMISMEMBER" => {
            let s = set(db, a[0])?.unwrap_or_default();
            Ok(Reply::Array(
                a[1..]
                    .iter()
                    .map(|m| flag(s.iter().any(|x| x == m)))
                    .collect(),
            ))
        }
        b"SCARD" => Ok(Reply::Int(set(db, a[0])?.map_or(0, |s| s.len()) as i64)),
        b"ZRANGE" => zrange(db, a[0], a[1], a[2], &a[3..], Order::Index),
        b"ZRANGEBYSCORE" => zrange(db, a[0], a[1], a[2], &a[3..], Order::ByScore),
        b"ZREVRANGE" => {
            // ZREVRANGE takes WITHSCORES only.
            let opts = &a[3..];
            if opts.len() > 1
                || opts
                    .first()
                    .is_some_and(|o| !o.eq_ignore_ascii_case(b"WITHSCORES"))
            {
                return Err(Failure::RedisError);
            }
            let mut with_rev = Vec::from(opts);
            with_rev.push(b"REV");
            zrange(db, a[0], a[1], a[2], &with_rev, Order::Index)
        }
        b"ZSCORE" => Ok(zset(db, a[0])?.map_or(Reply::Nil, |z| score_of(z, a[1]))),
        b"ZMSCORE" => {
            let z = zset(db, a[0])?.unwrap_or_default();
            Ok(Reply::Array(
                a[1..].iter().map(|m| score_of(z, m)).collect(),
            ))
        }
        b"ZCARD" => Ok(Reply::Int(zset(db, a[0])?.map_or(0, |z| z.len()) as i64)),
        b"ZCOUNT" => {
            let (min, max) = (score_bound(a[1])?, score_bound(a[2])?);
            let z = zset(db, a[0])?.unwrap_or_default();
            Ok(Reply::Int(
                z.iter()
                    .filter(|(s, _)| min.below(*s) && max.above(*s))
                    .count() as i64,
            ))
        }
        b"ZRANK" => zrank(db, a),
        b"XRANGE" => xrange(db, a, false),
        b"XREVRANGE" => xrange(db, a, true),
        b"XLEN" => Ok(Reply::Int(match db.get(a[0]) {
            None => 0,
            Some(Data::Stream(e)) => e.len() as i64,
            Some(_) => return Err(Failure::RedisError),
        })),
        b"PFCOUNT" => {
            let mut seen: Vec<&[u8]> = Vec::new();
            for k in a {
                match db.get(k) {
                    None => {}
                    Some(Data::HyperLogLog(items)) => {
                        for i in items {
                            if !seen.contains(&i.as_slice()) {
                                seen.push(i);
                            }
                        }
                    }
                    Some(_) => return Err(Failure::RedisError),
                }
            }
            Ok(Reply::Int(seen.len() as i64))
        }
        b"GETBIT" => {
            let offset = u64::try_from(int(a[1])?).map_err(|_| Failure::RedisError)?;
            let s = string(db, a[0])?.unwrap_or_default();
            let byte = usize::try_from(offset / 8)
                .ok()
                .and_then(|i| s.get(i))
                .copied()
                .unwrap_or(0);
            Ok(Reply::Int(i64::from((byte >> (7 - offset % 8)) & 1)))
        }
        // `check` let only the read set through.
        _ => Err(Failure::NotAllowed),
    }
}

fn bulk(b: impl AsRef<[u8]>) -> Reply {
    Reply::Bulk(b.as_ref().to_vec())
}

fn flag(b: bool) -> Reply {
    Reply::Int(i64::from(b))
}

fn list_of<'a>(items: impl IntoIterator<Item = &'a Vec<u8>>) -> Reply {
    Reply::Array(items.into_iter().map(bulk).collect())
}

fn int(arg: &[u8]) -> Result<i64, Failure> {
    core::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Failure::RedisError)
}

/// `Some(s)` for a string, `None` for a missing key, `WRONGTYPE` for another type.
fn string<'a>(db: &'a Store, key: &[u8]) -> Result<Option<&'a [u8]>, Failure> {
    match db.get(key) {
        None => Ok(None),
        Some(Data::String(s)) => Ok(Some(s.as_slice())),
        // A HyperLogLog is a string to Redis, but its bytes are its own encoding: the
        // model has none to give.
        Some(_) => Err(Failure::RedisError),
    }
}

fn get(db: &Store, key: &[u8]) -> R {
    Ok(string(db, key)?.map_or(Reply::Nil, bulk))
}

fn getrange(db: &Store, a: &[&[u8]]) -> R {
    let (start, end) = (int(a[1])?, int(a[2])?);
    let s = string(db, a[0])?.unwrap_or_default();
    // GETRANGE with both indices negative and start > end is empty, as LRANGE.
    Ok(bulk(
        index_range(s.len(), start, end).map_or(&[][..], |(b, e)| &s[b..e]),
    ))
}

macro_rules! typed {
    ($name:ident, $variant:ident, $t:ty) => {
        fn $name<'a>(db: &'a Store, key: &[u8]) -> Result<Option<&'a [$t]>, Failure> {
            match db.get(key) {
                None => Ok(None),
                Some(Data::$variant(v)) => Ok(Some(v.as_slice())),
                Some(_) => Err(Failure::RedisError),
            }
        }
    };
}
typed!(hash, Hash, (Vec<u8>, Vec<u8>));
typed!(list, List, Vec<u8>);
typed!(set, Set, Vec<u8>);
typed!(zset, ZSet, (f64, Vec<u8>));

fn field(h: &[(Vec<u8>, Vec<u8>)], name: &[u8]) -> Reply {
    h.iter()
        .find(|(f, _)| f == name)
        .map_or(Reply::Nil, |(_, v)| bulk(v))
}

/// Redis's inclusive `start..=stop` with negative indices from the end, as the
/// half-open range of a `len`-long sequence, or `None` when empty.
fn index_range(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let start = if start < 0 {
        (start + len).max(0)
    } else {
        start
    };
    let stop = if stop < 0 {
        stop + len
    } else {
        stop.min(len - 1)
    };
    (start <= stop && start < len).then(|| (start as usize, stop as usize + 1))
}

/// A score as Redis 7.0 replies with it: `printf("%.17g")`, `inf`, `-inf`.
pub(crate) fn format_score(x: f64) -> String {
    if x.is_infinite() {
        return String::from(if x > 0.0 { "inf" } else { "-inf" });
    }
    if x == 0.0 {
        return String::from(if x.is_sign_negative() { "-0" } else { "0" });
    }
    // 17 significant digits in scientific form, then %g's choice of notation.
    let sci = format!("{x:.16e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..17).contains(&exp) {
        let m = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{m}e{sign}{:02}", exp.unsigned_abs());
    }
    let decimals = (16 - exp) as usize;
    let fixed = format!("{x:.decimals$}");
    String::from(trim_zeros(&fixed))
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn score_of(z: &[(f64, Vec<u8>)], member: &[u8]) -> Reply {
    z.iter()
        .find(|(_, m)| m == member)
        .map_or(Reply::Nil, |(s, _)| bulk(format_score(*s)))
}

/// One end of a score range: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
#[derive(Clone, Copy)]
struct Bound {
    value: f64,
    exclusive: bool,
}

impl Bound {
    /// True when `s` is at or past this bound as a minimum.
    fn below(self, s: f64) -> bool {
        if self.exclusive {
            s > self.value
        } else {
            s >= self.value
        }
    }
    /// True when `s` is at or before this bound as a maximum.
    fn above(self, s: f64) -> bool {
        if self.exclusive {
            s < self.value
        } else {
            s <= self.value
        }
    }
}

fn score_bound(arg: &[u8]) -> Result<Bound, Failure> {
    let (exclusive, text) = match arg.split_first() {
        Some((b'(', rest)) => (true, rest),
        _ => (false, arg),
    };
    let text = core::str::from_utf8(text).map_err(|_| Failure::RedisError)?;
    let value = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        t => t
            .parse::<f64>()
            .ok()
            .filter(|v| !v.is_nan())
            .ok_or(Failure::RedisError)?,
    };
    Ok(Bound { value, exclusive })
}

/// One end of a lex range: `-`, `+`, `[a` (inclusive), `(a` (exclusive).
enum Lex<'a> {
    Min,
    Max,
    Incl(&'a [u8]),
    Excl(&'a [u8]),
}

fn lex_bound(arg: &[u8]) -> Result<Lex<'_>, Failure> {
    match arg.split_first() {
        Some((b'-', [])) => Ok(Lex::Min),
        Some((b'+', [])) => Ok(Lex::Max),
        Some((b'[', rest)) => Ok(Lex::Incl(rest)),
        Some((b'(', rest)) => Ok(Lex::Excl(rest)),
        _ => Err(Failure::RedisError),
    }
}

fn lex_in(m: &[u8], min: &Lex<'_>, max: &Lex<'_>) -> bool {
    let lo = match min {
        Lex::Min => true,
        Lex::Max => false,
        Lex::Incl(b) => m >= *b,
        Lex::Excl(b) => m > *b,
    };
    let hi = match max {
        Lex::Min => false,
        Lex::Max => true,
        Lex::Incl(b) => m <= *b,
        Lex::Excl(b) => m < *b,
    };
    lo && hi
}

#[derive(Clone, Copy, PartialEq)]
enum Order {
    Index,
    ByScore,
    ByLex,
}

/// ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES], and
/// ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count] (given as `ByScore`).
fn zrange(db: &Store, key: &[u8], start: &[u8], stop: &[u8], opts: &[&[u8]], mut by: Order) -> R {
    let legacy = by == Order::ByScore;
    let (mut rev, mut scores, mut limit) = (false, false, None);
    let mut i = 0;
    while i < opts.len() {
        let o = opts[i];
        if o.eq_ignore_ascii_case(b"WITHSCORES") {
            scores = true;
        } else if o.eq_ignore_ascii_case(b"LIMIT") && i + 2 < opts.len() {
            limit = Some((int(opts[i + 1])?, int(opts[i + 2])?));
            i += 2;
        } else if !legacy && o.eq_ignore_ascii_case(b"REV") {
            rev = true;
        } else if !legacy && o.eq_ignore_ascii_case(b"BYSCORE") && by == Order::Index {
            by = Order::ByScore;
        } else if !legacy && o.eq_ignore_ascii_case(b"BYLEX") && by == Order::Index {
            by = Order::ByLex;
        } else {
            return Err(Failure::RedisError);
        }
        i += 1;
    }
    // LIMIT only with a score or lex range; WITHSCORES not with BYLEX (Redis's errors).
    if (limit.is_some() && by == Order::Index) || (scores && by == Order::ByLex) {
        return Err(Failure::RedisError);
    }
    let z = zset(db, key)?.unwrap_or_default();
    let mut picked: Vec<&(f64, Vec<u8>)> = match by {
        Order::Index => {
            let (s, e) = (int(start)?, int(stop)?);
            let ordered: Vec<_> = if rev {
                z.iter().rev().collect()
            } else {
                z.iter().collect()
            };
            index_range(ordered.len(), s, e).map_or(Vec::new(), |(s, e)| ordered[s..e].to_vec())
        }
        Order::ByScore => {
            // With REV the first bound is the maximum.
            let (a, b) = (score_bound(start)?, score_bound(stop)?);
            let (min, max) = if rev { (b, a) } else { (a, b) };
            let mut v: Vec<_> = z
                .iter()
                .filter(|(s, _)| min.below(*s) && max.above(*s))
                .collect();
            if rev {
                v.reverse();
            }
            v
        }
        Order::ByLex => {
            let (a, b) = (lex_bound(start)?, lex_bound(stop)?);
            let (min, max) = if rev { (b, a) } else { (a, b) };
            let mut v: Vec<_> = z.iter().filter(|(_, m)| lex_in(m, &min, &max)).collect();
            if rev {
                v.reverse();
            }
            v
        }
    };
    if let Some((offset, count)) = limit {
        if offset < 0 {
            picked.clear();
        } else {
            let skip = (offset as usize).min(picked.len());
            picked.drain(..skip);
            if count >= 0 {
                picked.truncate(count as usize);
            }
        }
    }
    let mut out = Vec::new();
    for (s, m) in picked {
        out.push(bulk(m));
        if scores {
            out.push(bulk(format_score(*s)));
        }
    }
    Ok(Reply::Array(out))
}

/// ZRANK key member [WITHSCORE].
fn zrank(db: &Store, a: &[&[u8]]) -> R {
    let with_score = match &a[2..] {
        [] => false,
        [o] if o.eq_ignore_ascii_case(b"WITHSCORE") => true,
        _ => return Err(Failure::RedisError),
    };
    let z = zset(db, a[0])?.unwrap_or_default();
    Ok(match z.iter().position(|(_, m)| m == a[1]) {
        None => Reply::Nil,
        Some(i) if with_score => {
            Reply::Array(vec![Reply::Int(i as i64), bulk(format_score(z[i].0))])
        }
        Some(i) => Reply::Int(i as i64),
    })
}

/// A stream id bound: `-`, `+`, `ms`, `ms-seq`, with `(` for exclusive. A missing
/// sequence is 0 for a start and the largest for an end.
fn stream_bound(arg: &[u8], is_start: bool) -> Result<((u64, u64), bool), Failure> {
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
fn xrange(db: &Store, a: &[&[u8]], rev: bool) -> R {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_formatted_as_redis_7_0_sends_them() {
        // Checked against redis-server 7.0.15 (ZADD z 0.1 a 3 b 1e21 c 1.5e-7 d).
        assert_eq!(format_score(0.1), "0.10000000000000001");
        assert_eq!(format_score(3.0), "3");
        assert_eq!(format_score(1e21), "1e+21");
        assert_eq!(format_score(1.5e-7), "1.4999999999999999e-07");
        assert_eq!(format_score(1.5), "1.5");
        assert_eq!(format_score(-2.25), "-2.25");
        assert_eq!(format_score(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_score(12345.0), "12345");
    }

    #[test]
    fn index_ranges_follow_lrange() {
        assert_eq!(index_range(5, 0, -1), Some((0, 5)));
        assert_eq!(index_range(5, -2, -1), Some((3, 5)));
        assert_eq!(index_range(5, 3, 100), Some((3, 5)));
        assert_eq!(index_range(5, 4, 2), None);
        assert_eq!(index_range(5, 5, 9), None);
        assert_eq!(index_range(0, 0, -1), None);
        assert_eq!(index_range(5, -100, 0), Some((0, 1)));
    }
}
