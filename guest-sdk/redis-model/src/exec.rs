//! What each command of the read set answers, following Redis 7.0 (the version the
//! tests run against): index ranges with negative indices, score and lex bounds,
//! scores formatted as Redis 7.0 sends them (`%.17g`: `0.1` is `0.10000000000000001`).
//! The request has passed `read_set::check`: the name is known and the number of
//! arguments fits. Sorted sets are `sorted.rs`, stream ranges `stream.rs`; the rest,
//! and the helpers they share, are here.

mod sort;
mod sorted;
mod stream;

use alloc::vec::Vec;

use crate::store::{Data, Store};
use crate::{Failure, Reply};
use sorted::{Order, score_bound, score_of, zrange, zrank};
use stream::xrange;

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
        b"SORT_RO" => sort::sort_ro(db, a),
        // `check` let only the read set through.
        _ => Err(Failure::NotAllowed),
    }
}

pub(super) fn bulk(b: impl AsRef<[u8]>) -> Reply {
    Reply::Bulk(b.as_ref().to_vec())
}

fn flag(b: bool) -> Reply {
    Reply::Int(i64::from(b))
}

fn list_of<'a>(items: impl IntoIterator<Item = &'a Vec<u8>>) -> Reply {
    Reply::Array(items.into_iter().map(bulk).collect())
}

pub(super) fn int(arg: &[u8]) -> Result<i64, Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
