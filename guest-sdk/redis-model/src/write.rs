//! The writes a model database can apply, so that a test can feed one event's Redis
//! commands back into the store the next event reads (`FakeRedis::apply` in the guest
//! SDK): the common write commands of rules, with Redis's effect on the data. Replies
//! are not modelled (a rule never sees the reply of a command it returns).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::store::{Data, Store};

/// Why a command could not be applied: not one the model writes, or malformed.
pub type WriteError = String;

fn text(a: &[u8]) -> Result<&str, WriteError> {
    core::str::from_utf8(a).map_err(|_| String::from("an argument is not text"))
}

fn int(a: &[u8]) -> Result<i64, WriteError> {
    text(a)?
        .parse()
        .map_err(|_| String::from("an argument is not an integer"))
}

fn float(a: &[u8]) -> Result<f64, WriteError> {
    match text(a)? {
        "inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        t => t
            .parse()
            .map_err(|_| String::from("an argument is not a number")),
    }
}

/// A string's integer value, for INCR and friends (a missing key is 0).
fn counter(db: &Store, key: &[u8]) -> Result<i64, WriteError> {
    match db.get(key) {
        None => Ok(0),
        Some(Data::String(s)) => int(s),
        Some(_) => Err(String::from("WRONGTYPE")),
    }
}

impl Store {
    /// Applies one write command (`args[0]` is the name, any case): `SET` (with `EX`,
    /// `PX`, `KEEPTTL`), `DEL`, `INCR`, `INCRBY`, `DECR`, `DECRBY`, `HSET`, `HDEL`,
    /// `HINCRBY`, `RPUSH`, `LPUSH`, `LTRIM`, `SADD`, `SREM`, `ZADD`, `ZREM`,
    /// `ZINCRBY`, `XADD` (an explicit id, or `*`: the next sequence after the last
    /// entry; `MAXLEN` is honoured exactly), `PFADD`, `EXPIRE`, `PEXPIRE`, `PERSIST`.
    ///
    /// # Errors
    ///
    /// Another command, a wrong number of arguments, or a value of the wrong type.
    pub fn write(&mut self, args: &[&[u8]]) -> Result<(), WriteError> {
        let (name, a) = args
            .split_first()
            .ok_or_else(|| String::from("empty command"))?;
        let name = text(name)?.to_ascii_uppercase();
        let need = |n: usize| {
            if a.len() >= n {
                Ok(())
            } else {
                Err(format!("{name}: wrong number of arguments"))
            }
        };
        match name.as_str() {
            "SET" => {
                need(2)?;
                let keep = a[2..].iter().any(|o| o.eq_ignore_ascii_case(b"KEEPTTL"));
                let ttl = self.pttl(a[0]).flatten();
                self.set(a[0], a[1]);
                let mut i = 2;
                while i < a.len() {
                    let o = text(a[i])?.to_ascii_uppercase();
                    match o.as_str() {
                        "EX" | "PX" if i + 1 < a.len() => {
                            let n = int(a[i + 1])?;
                            self.pexpire(a[0], if o == "EX" { n * 1000 } else { n });
                            i += 1;
                        }
                        "KEEPTTL" | "NX" | "XX" | "GET" => {}
                        _ => return Err(format!("SET: option {o} is not modelled")),
                    }
                    i += 1;
                }
                if let (true, Some(ms)) = (keep, ttl) {
                    self.pexpire(a[0], ms);
                }
            }
            "DEL" | "UNLINK" => {
                need(1)?;
                for k in a {
                    self.del(k);
                }
            }
            "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
                need(if name.ends_with("BY") { 2 } else { 1 })?;
                let by = if name.ends_with("BY") { int(a[1])? } else { 1 };
                let by = if name.starts_with("DECR") { -by } else { by };
                let ttl = self.pttl(a[0]).flatten();
                let v = counter(self, a[0])? + by;
                self.set(a[0], format!("{v}"));
                if let Some(ms) = ttl {
                    self.pexpire(a[0], ms);
                }
            }
            "HSET" | "HMSET" => {
                need(3)?;
                if a.len().is_multiple_of(2) {
                    return Err(format!("{name}: wrong number of arguments"));
                }
                for p in a[1..].chunks(2) {
                    self.hset(a[0], p[0], p[1]);
                }
            }
            "HDEL" => {
                need(2)?;
                if let Some(Data::Hash(h)) = self.get_mut(a[0]) {
                    h.retain(|(f, _)| !a[1..].contains(&f.as_slice()));
                }
                self.drop_if_empty(a[0]);
            }
            "HINCRBY" => {
                need(3)?;
                let old = match self.get(a[0]) {
                    Some(Data::Hash(h)) => {
                        h.iter().find(|(f, _)| f == a[1]).map(|(_, v)| v.clone())
                    }
                    None => None,
                    Some(_) => return Err(String::from("WRONGTYPE")),
                };
                let old = old.as_deref().map(int).transpose()?.unwrap_or(0);
                self.hset(a[0], a[1], format!("{}", old + int(a[2])?));
            }
            "RPUSH" | "LPUSH" => {
                need(2)?;
                for v in &a[1..] {
                    self.rpush(a[0], v);
                    if name == "LPUSH"
                        && let Some(Data::List(l)) = self.get_mut(a[0])
                        && let Some(last) = l.pop()
                    {
                        l.insert(0, last);
                    }
                }
            }
            "LTRIM" => {
                need(3)?;
                let (start, stop) = (int(a[1])?, int(a[2])?);
                if let Some(Data::List(l)) = self.get_mut(a[0]) {
                    let len = l.len() as i64;
                    let s = if start < 0 {
                        (start + len).max(0)
                    } else {
                        start
                    };
                    let e = if stop < 0 {
                        stop + len
                    } else {
                        stop.min(len - 1)
                    };
                    if s > e || s >= len {
                        l.clear();
                    } else {
                        l.truncate(e as usize + 1);
                        l.drain(..s as usize);
                    }
                }
                self.drop_if_empty(a[0]);
            }
            "SADD" => {
                need(2)?;
                for m in &a[1..] {
                    self.sadd(a[0], m);
                }
            }
            "SREM" => {
                need(2)?;
                if let Some(Data::Set(s)) = self.get_mut(a[0]) {
                    s.retain(|m| !a[1..].contains(&m.as_slice()));
                }
                self.drop_if_empty(a[0]);
            }
            "ZADD" => {
                need(3)?;
                if a.len().is_multiple_of(2) {
                    return Err(String::from("ZADD: options are not modelled"));
                }
                for p in a[1..].chunks(2) {
                    self.zadd(a[0], float(p[0])?, p[1]);
                }
            }
            "ZINCRBY" => {
                need(3)?;
                let old = match self.get(a[0]) {
                    Some(Data::ZSet(z)) => z.iter().find(|(_, m)| m == a[2]).map(|(s, _)| *s),
                    None => None,
                    Some(_) => return Err(String::from("WRONGTYPE")),
                };
                self.zadd(a[0], old.unwrap_or(0.0) + float(a[1])?, a[2]);
            }
            "ZREM" => {
                need(2)?;
                if let Some(Data::ZSet(z)) = self.get_mut(a[0]) {
                    z.retain(|(_, m)| !a[1..].contains(&m.as_slice()));
                }
                self.drop_if_empty(a[0]);
            }
            "XADD" => self.xadd_args(a)?,
            "PFADD" => {
                need(1)?;
                for e in &a[1..] {
                    self.pfadd(a[0], e);
                }
                if a.len() == 1 && self.get(a[0]).is_none() {
                    self.insert(a[0], Data::HyperLogLog(Vec::new()));
                }
            }
            "EXPIRE" | "PEXPIRE" => {
                need(2)?;
                let n = int(a[1])?;
                if n <= 0 {
                    self.del(a[0]);
                } else {
                    self.pexpire(a[0], if name == "EXPIRE" { n * 1000 } else { n });
                }
            }
            "PERSIST" => {
                need(1)?;
                if let Some(Some(_)) = self.pttl(a[0]) {
                    let data = self.get(a[0]).cloned();
                    if let Some(d) = data {
                        self.insert(a[0], d);
                    }
                }
            }
            other => return Err(format!("{other} is not a write the model applies")),
        }
        Ok(())
    }

    /// XADD key [MAXLEN [=|~] n] id|* field value [field value ...]
    fn xadd_args(&mut self, a: &[&[u8]]) -> Result<(), WriteError> {
        let bad = || String::from("XADD: wrong arguments");
        let key = *a.first().ok_or_else(bad)?;
        let mut i = 1;
        let mut maxlen = None;
        if a.get(i).is_some_and(|o| o.eq_ignore_ascii_case(b"MAXLEN")) {
            i += 1;
            if a.get(i).is_some_and(|o| *o == b"~" || *o == b"=") {
                i += 1;
            }
            maxlen = Some(int(a.get(i).ok_or_else(bad)?)?);
            i += 1;
        }
        let id = *a.get(i).ok_or_else(bad)?;
        let fields = &a[i + 1..];
        if fields.is_empty() || !fields.len().is_multiple_of(2) {
            return Err(bad());
        }
        let last = match self.get(key) {
            Some(Data::Stream(e)) => e.last().map(|(id, _)| *id),
            None => None,
            Some(_) => return Err(String::from("WRONGTYPE")),
        };
        let id = if id == b"*" {
            last.map_or((1, 0), |(ms, seq)| (ms, seq + 1))
        } else {
            let t = text(id)?;
            let (ms, seq) = t.split_once('-').unwrap_or((t, "0"));
            (int(ms.as_bytes())? as u64, int(seq.as_bytes())? as u64)
        };
        let pairs: Vec<(&[u8], &[u8])> = fields.chunks(2).map(|p| (p[0], p[1])).collect();
        self.xadd(key, id, pairs);
        if let (Some(n), Some(Data::Stream(e))) = (maxlen, self.get_mut(key)) {
            let excess = e.len().saturating_sub(n.max(0) as usize);
            e.drain(..excess);
        }
        Ok(())
    }

    fn drop_if_empty(&mut self, key: &[u8]) {
        let empty = match self.get(key) {
            Some(Data::Hash(h)) => h.is_empty(),
            Some(Data::List(l)) => l.is_empty(),
            Some(Data::Set(s)) => s.is_empty(),
            Some(Data::ZSet(z)) => z.is_empty(),
            _ => false,
        };
        if empty {
            self.del(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Reply, Store};

    fn w(db: &mut Store, line: &str) {
        let args: alloc::vec::Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        db.write(&args).unwrap();
    }

    fn r(db: &Store, line: &str) -> Reply {
        let args: alloc::vec::Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        db.read(&args).unwrap()
    }

    fn b(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn writes_change_what_reads_see() {
        let mut db = Store::new();
        w(&mut db, "SET k v EX 10");
        assert_eq!(r(&db, "PTTL k"), Reply::Int(10_000));
        w(&mut db, "INCR n");
        w(&mut db, "INCRBY n 41");
        assert_eq!(r(&db, "GET n"), b("42"));
        w(&mut db, "HSET h a 1 b 2");
        w(&mut db, "HINCRBY h a 5");
        w(&mut db, "HDEL h b");
        assert_eq!(
            r(&db, "HGETALL h"),
            Reply::Array(alloc::vec![b("a"), b("6")])
        );
        w(&mut db, "RPUSH l x y z");
        w(&mut db, "LPUSH l w");
        w(&mut db, "LTRIM l 0 1");
        assert_eq!(
            r(&db, "LRANGE l 0 -1"),
            Reply::Array(alloc::vec![b("w"), b("x")])
        );
        w(&mut db, "ZADD z 1 a 2 b");
        w(&mut db, "ZINCRBY z 5 a");
        assert_eq!(
            r(&db, "ZRANGE z 0 -1"),
            Reply::Array(alloc::vec![b("b"), b("a")])
        );
        w(&mut db, "XADD x MAXLEN ~ 2 * f 1");
        w(&mut db, "XADD x MAXLEN ~ 2 * f 2");
        w(&mut db, "XADD x MAXLEN ~ 2 * f 3");
        assert_eq!(r(&db, "XLEN x"), Reply::Int(2));
        w(&mut db, "DEL k n");
        assert_eq!(r(&db, "EXISTS k n h"), Reply::Int(1));
        w(&mut db, "SREM nothing a");
        assert!(db.write(&[b"FLUSHALL"]).is_err());
        assert!(db.write(&[b"INCR", b"h"]).is_err());
    }
}
