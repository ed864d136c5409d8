//! `SORT_RO key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]`
//! as Redis 7.0 answers it: the elements of a list, set or sorted set, sorted by their
//! value or by the keys `BY` names (a pattern without `*`, such as `nosort`, keeps the
//! stored order: a sorted set's by score), then the `LIMIT` window, then for each
//! element what every `GET` names (`#` the element itself; `key*` a string,
//! `key*->field` a hash field; missing ones nil).

use alloc::vec::Vec;
use core::cmp::Ordering;

use super::{bulk, int};
use crate::store::{Data, Store};
use crate::{Failure, Reply};

struct Options<'a> {
    by: Option<&'a [u8]>,
    limit: Option<(i64, i64)>,
    get: Vec<&'a [u8]>,
    desc: bool,
    alpha: bool,
}

fn options<'a>(a: &[&'a [u8]]) -> Result<Options<'a>, Failure> {
    let mut o = Options {
        by: None,
        limit: None,
        get: Vec::new(),
        desc: false,
        alpha: false,
    };
    let mut i = 0;
    while i < a.len() {
        let word = a[i];
        let next = |n: usize| a.get(i + n).copied().ok_or(Failure::RedisError);
        if word.eq_ignore_ascii_case(b"BY") {
            o.by = Some(next(1)?);
            i += 2;
        } else if word.eq_ignore_ascii_case(b"LIMIT") {
            o.limit = Some((int(next(1)?)?, int(next(2)?)?));
            i += 3;
        } else if word.eq_ignore_ascii_case(b"GET") {
            o.get.push(next(1)?);
            i += 2;
        } else if word.eq_ignore_ascii_case(b"ASC") {
            o.desc = false;
            i += 1;
        } else if word.eq_ignore_ascii_case(b"DESC") {
            o.desc = true;
            i += 1;
        } else if word.eq_ignore_ascii_case(b"ALPHA") {
            o.alpha = true;
            i += 1;
        } else {
            return Err(Failure::RedisError);
        }
    }
    Ok(o)
}

/// What `pattern` names for `elem`: the value of the string, or of the hash field
/// after `->`, at the key with the first `*` replaced by `elem`. `#` is `elem` itself.
fn lookup(db: &Store, pattern: &[u8], elem: &[u8]) -> Option<Vec<u8>> {
    if pattern == b"#" {
        return Some(elem.to_vec());
    }
    let star = pattern.iter().position(|&b| b == b'*')?;
    let arrow = pattern
        .windows(2)
        .rposition(|w| w == b"->")
        .filter(|&p| p > star && p + 2 < pattern.len());
    let key_end = arrow.unwrap_or(pattern.len());
    let mut key = pattern[..star].to_vec();
    key.extend_from_slice(elem);
    key.extend_from_slice(&pattern[star + 1..key_end]);
    match (db.get(&key)?, arrow) {
        (Data::String(s), None) => Some(s.clone()),
        (Data::Hash(h), Some(p)) => {
            let field = &pattern[p + 2..];
            h.iter().find(|(f, _)| f == field).map(|(_, v)| v.clone())
        }
        _ => None,
    }
}

pub(super) fn sort_ro(db: &Store, a: &[&[u8]]) -> Result<Reply, Failure> {
    let o = options(&a[1..])?;
    let (mut elems, ordered): (Vec<Vec<u8>>, bool) = match db.get(a[0]) {
        None => (Vec::new(), false),
        Some(Data::List(l)) => (l.clone(), false),
        Some(Data::Set(s)) => (s.clone(), false),
        Some(Data::ZSet(z)) => (z.iter().map(|(_, m)| m.clone()).collect(), true),
        Some(_) => return Err(Failure::RedisError),
    };
    let dont_sort = o.by.is_some_and(|p| !p.contains(&b'*'));
    if dont_sort {
        // A sorted set keeps its order (reversed by DESC); lists and sets their own.
        if ordered && o.desc {
            elems.reverse();
        }
    } else {
        let key = |e: &[u8]| match o.by {
            Some(p) => lookup(db, p, e),
            None => Some(e.to_vec()),
        };
        let mut keyed: Vec<(Option<Vec<u8>>, Vec<u8>)> =
            elems.into_iter().map(|e| (key(&e), e)).collect();
        if o.alpha {
            keyed.sort_by(|x, y| x.0.cmp(&y.0).then_with(|| x.1.cmp(&y.1)));
        } else {
            let num = |v: &Option<Vec<u8>>| -> Result<f64, Failure> {
                match v {
                    None => Ok(0.0),
                    Some(b) => core::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .ok_or(Failure::RedisError),
                }
            };
            let mut scored = Vec::with_capacity(keyed.len());
            for (k, e) in keyed {
                scored.push((num(&k)?, e));
            }
            scored.sort_by(|x, y| {
                x.0.partial_cmp(&y.0)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| x.1.cmp(&y.1))
            });
            keyed = scored.into_iter().map(|(_, e)| (None, e)).collect();
        }
        elems = keyed.into_iter().map(|(_, e)| e).collect();
        if o.desc {
            elems.reverse();
        }
    }
    if let Some((offset, count)) = o.limit {
        let start = usize::try_from(offset.max(0)).unwrap_or(usize::MAX);
        let take = if count < 0 {
            usize::MAX
        } else {
            usize::try_from(count).unwrap_or(usize::MAX)
        };
        elems = elems.into_iter().skip(start).take(take).collect();
    }
    if o.get.is_empty() {
        return Ok(Reply::Array(elems.iter().map(bulk).collect()));
    }
    let mut out = Vec::with_capacity(elems.len() * o.get.len());
    for e in &elems {
        for p in &o.get {
            out.push(lookup(db, p, e).map_or(Reply::Nil, bulk));
        }
    }
    Ok(Reply::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let mut db = Store::new();
        for (score, id) in [(3.0, "c"), (1.0, "a"), (2.0, "b")] {
            db.zadd("z", score, id);
            db.hset(
                alloc::format!("m:{id}"),
                "payload",
                alloc::format!("p-{id}"),
            );
        }
        db.rpush("l", "10").rpush("l", "2").rpush("l", "33");
        db
    }

    fn texts(r: Reply) -> Vec<Option<alloc::string::String>> {
        let Reply::Array(items) = r else {
            panic!("{r:?}")
        };
        items
            .into_iter()
            .map(|i| match i {
                Reply::Bulk(b) => Some(alloc::string::String::from_utf8(b).unwrap()),
                Reply::Nil => None,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn nosort_keeps_a_sorted_sets_order_and_gets_hash_fields() {
        let db = store();
        let r = sort_ro(
            &db,
            &[
                b"z",
                b"BY",
                b"nosort",
                b"GET",
                b"#",
                b"GET",
                b"m:*->payload",
            ],
        )
        .unwrap();
        let want = ["a", "p-a", "b", "p-b", "c", "p-c"].map(|s| Some(s.into()));
        assert_eq!(texts(r), want);
    }

    #[test]
    fn limit_desc_numeric_and_alpha() {
        let db = store();
        let r = sort_ro(
            &db,
            &[b"z", b"BY", b"nosort", b"LIMIT", b"1", b"5", b"DESC"],
        )
        .unwrap();
        assert_eq!(texts(r), [Some("b".into()), Some("a".into())]);
        let r = sort_ro(&db, &[b"l"]).unwrap();
        assert_eq!(texts(r), ["2", "10", "33"].map(|s| Some(s.into())));
        let r = sort_ro(&db, &[b"l", b"ALPHA"]).unwrap();
        assert_eq!(texts(r), ["10", "2", "33"].map(|s| Some(s.into())));
        let r = sort_ro(&db, &[b"l", b"GET", b"missing:*"]).unwrap();
        assert_eq!(texts(r), [None, None, None]);
        assert_eq!(
            sort_ro(&db, &[b"z"]),
            Err(Failure::RedisError),
            "non-numeric"
        );
        assert_eq!(
            sort_ro(&db, &[b"z", b"LIMIT", b"1"]),
            Err(Failure::RedisError)
        );
    }
}
