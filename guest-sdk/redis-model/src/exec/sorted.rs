//! The sorted-set commands of the read set: score and lex bounds, `ZRANGE` in its
//! forms, `ZRANK`, and scores formatted as Redis 7.0 sends them (`%.17g`: `0.1` is
//! `0.10000000000000001`).

use alloc::string::String;
use alloc::vec::Vec;
use alloc::{format, vec};

use super::{R, bulk, index_range, int, zset};
use crate::store::Store;
use crate::{Failure, Reply};

/// A score as Redis 7.0 replies with it: `printf("%.17g")`, `inf`, `-inf`.
pub(super) fn format_score(x: f64) -> String {
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

pub(super) fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

pub(super) fn score_of(z: &[(f64, Vec<u8>)], member: &[u8]) -> Reply {
    z.iter()
        .find(|(_, m)| m == member)
        .map_or(Reply::Nil, |(s, _)| bulk(format_score(*s)))
}

/// One end of a score range: `1.5`, `(1.5` (exclusive), `-inf`, `+inf`.
#[derive(Clone, Copy)]
pub(super) struct Bound {
    value: f64,
    exclusive: bool,
}

impl Bound {
    /// True when `s` is at or past this bound as a minimum.
    pub(super) fn below(self, s: f64) -> bool {
        if self.exclusive {
            s > self.value
        } else {
            s >= self.value
        }
    }
    /// True when `s` is at or before this bound as a maximum.
    pub(super) fn above(self, s: f64) -> bool {
        if self.exclusive {
            s < self.value
        } else {
            s <= self.value
        }
    }
}

pub(super) fn score_bound(arg: &[u8]) -> Result<Bound, Failure> {
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
pub(super) enum Lex<'a> {
    Min,
    Max,
    Incl(&'a [u8]),
    Excl(&'a [u8]),
}

pub(super) fn lex_bound(arg: &[u8]) -> Result<Lex<'_>, Failure> {
    match arg.split_first() {
        Some((b'-', [])) => Ok(Lex::Min),
        Some((b'+', [])) => Ok(Lex::Max),
        Some((b'[', rest)) => Ok(Lex::Incl(rest)),
        Some((b'(', rest)) => Ok(Lex::Excl(rest)),
        _ => Err(Failure::RedisError),
    }
}

pub(super) fn lex_in(m: &[u8], min: &Lex<'_>, max: &Lex<'_>) -> bool {
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
pub(super) enum Order {
    Index,
    ByScore,
    ByLex,
}

/// ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES], and
/// ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count] (given as `ByScore`).
pub(super) fn zrange(
    db: &Store,
    key: &[u8],
    start: &[u8],
    stop: &[u8],
    opts: &[&[u8]],
    mut by: Order,
) -> R {
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
pub(super) fn zrank(db: &Store, a: &[&[u8]]) -> R {
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
}
