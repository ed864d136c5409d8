//! The keys of a model database and their typed values, with the builders tests and
//! fixtures fill it with. Values keep Redis's order where a reply shows it: hashes
//! and sets in insertion order (a small hash or set in Redis), sorted sets by score
//! then member, streams by entry id.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::{Failure, Reply};

/// A hash's or stream entry's fields and values, in order.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A stream entry's id: milliseconds and sequence number (`1700000000000-0`).
pub type StreamId = (u64, u64);

/// One key's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A string (also what `SET` and `INCR` make).
    String(Vec<u8>),
    /// A hash: fields and values in insertion order, fields unique.
    Hash(Fields),
    /// A list, head first.
    List(Vec<Vec<u8>>),
    /// A set: members in insertion order, unique.
    Set(Vec<Vec<u8>>),
    /// A sorted set: (score, member), sorted by score then member, members unique.
    ZSet(Vec<(f64, Vec<u8>)>),
    /// A stream: entries by id (milliseconds, sequence), each with its fields.
    Stream(Vec<(StreamId, Fields)>),
    /// A HyperLogLog, modelled exactly: the distinct elements added (`PFCOUNT` is
    /// their number; Redis's estimate is within 1% of it). `TYPE` says `string`, as
    /// in Redis.
    HyperLogLog(Vec<Vec<u8>>),
}

impl Data {
    /// The name `TYPE` answers.
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::String(_) | Data::HyperLogLog(_) => "string",
            Data::Hash(_) => "hash",
            Data::List(_) => "list",
            Data::Set(_) => "set",
            Data::ZSet(_) => "zset",
            Data::Stream(_) => "stream",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    data: Data,
    /// Milliseconds to live, if the key expires.
    pttl: Option<i64>,
}

/// A model database: keys to typed values.
///
/// # Examples
///
/// ```
/// use wasmrule_redis_model::{Reply, Store};
/// let mut db = Store::new();
/// db.set("last:d1", "21.5");
/// db.hset("h", "f", "v");
/// assert_eq!(db.read(&[b"GET", b"last:d1"]), Ok(Reply::Bulk(b"21.5".to_vec())));
/// assert_eq!(db.read(&[b"HGET", b"h", b"nope"]), Ok(Reply::Nil));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Store {
    keys: BTreeMap<Vec<u8>, Entry>,
}

impl Store {
    /// An empty database.
    pub fn new() -> Store {
        Store::default()
    }

    /// Sets `key` to `data`, replacing what was there (and its TTL).
    pub fn insert(&mut self, key: impl AsRef<[u8]>, data: Data) -> &mut Self {
        let entry = Entry { data, pttl: None };
        self.keys.insert(key.as_ref().to_vec(), entry);
        self
    }

    /// Sets a string.
    pub fn set(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.insert(key, Data::String(value.as_ref().to_vec()))
    }

    /// Sets a field of a hash, creating the hash (a key of another type is replaced).
    pub fn hset(
        &mut self,
        key: impl AsRef<[u8]>,
        field: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> &mut Self {
        let (field, value) = (field.as_ref().to_vec(), value.as_ref().to_vec());
        if let Data::Hash(fields) = self.slot(key, || Data::Hash(Vec::new())) {
            match fields.iter_mut().find(|(f, _)| *f == field) {
                Some((_, v)) => *v = value,
                None => fields.push((field, value)),
            }
        }
        self
    }

    /// Appends to a list (`RPUSH`).
    pub fn rpush(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        if let Data::List(items) = self.slot(key, || Data::List(Vec::new())) {
            items.push(value.as_ref().to_vec());
        }
        self
    }

    /// Adds a member to a set (`SADD`).
    pub fn sadd(&mut self, key: impl AsRef<[u8]>, member: impl AsRef<[u8]>) -> &mut Self {
        if let Data::Set(members) = self.slot(key, || Data::Set(Vec::new())) {
            push_unique(members, member.as_ref());
        }
        self
    }

    /// Adds or rescores a member of a sorted set (`ZADD`).
    pub fn zadd(
        &mut self,
        key: impl AsRef<[u8]>,
        score: f64,
        member: impl AsRef<[u8]>,
    ) -> &mut Self {
        if let Data::ZSet(members) = self.slot(key, || Data::ZSet(Vec::new())) {
            let member = member.as_ref();
            members.retain(|(_, m)| m != member);
            members.push((score, member.to_vec()));
            members.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        }
        self
    }

    /// Adds an entry to a stream with the id `ms-seq` (`XADD key ms-seq ...`); entries
    /// are kept in id order whatever order they are added in.
    pub fn xadd<F: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        key: impl AsRef<[u8]>,
        id: (u64, u64),
        fields: impl IntoIterator<Item = (F, V)>,
    ) -> &mut Self {
        let fields = fields
            .into_iter()
            .map(|(f, v)| (f.as_ref().to_vec(), v.as_ref().to_vec()))
            .collect();
        if let Data::Stream(entries) = self.slot(key, || Data::Stream(Vec::new())) {
            entries.retain(|(i, _)| *i != id);
            entries.push((id, fields));
            entries.sort_by_key(|(i, _)| *i);
        }
        self
    }

    /// Adds an element to a HyperLogLog (`PFADD`).
    pub fn pfadd(&mut self, key: impl AsRef<[u8]>, element: impl AsRef<[u8]>) -> &mut Self {
        if let Data::HyperLogLog(items) = self.slot(key, || Data::HyperLogLog(Vec::new())) {
            push_unique(items, element.as_ref());
        }
        self
    }

    /// Gives `key` a time to live in milliseconds (what `PTTL` answers; time does not
    /// pass). No effect on a missing key.
    pub fn pexpire(&mut self, key: impl AsRef<[u8]>, ms: i64) -> &mut Self {
        if let Some(e) = self.keys.get_mut(key.as_ref()) {
            e.pttl = Some(ms);
        }
        self
    }

    /// Removes `key`.
    pub fn del(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.keys.remove(key.as_ref());
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&Data> {
        self.keys.get(key.as_ref()).map(|e| &e.data)
    }

    /// The value of `key`, to change in place.
    pub(crate) fn get_mut(&mut self, key: impl AsRef<[u8]>) -> Option<&mut Data> {
        self.keys.get_mut(key.as_ref()).map(|e| &mut e.data)
    }

    /// The time to live of `key` in milliseconds: `None` for a missing key,
    /// `Some(None)` for a key that does not expire.
    pub fn pttl(&self, key: impl AsRef<[u8]>) -> Option<Option<i64>> {
        self.keys.get(key.as_ref()).map(|e| e.pttl)
    }

    /// Every key, in byte order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.keys.keys().map(|k| k.as_slice())
    }

    /// Runs one command of the read set (`args[0]` is the name, any case) and returns
    /// Redis's reply.
    ///
    /// # Errors
    ///
    /// See [`Failure`]: a command outside the read set, a malformed request, or what
    /// Redis would answer with an error (`WRONGTYPE`, a bad number).
    pub fn read(&self, args: &[&[u8]]) -> Result<Reply, Failure> {
        crate::read_set::check(args)?;
        crate::exec::run(self, args)
    }

    /// The value of `key` if it has the type of `empty()`; otherwise (or when missing)
    /// `key` is set to `empty()` first.
    fn slot(&mut self, key: impl AsRef<[u8]>, empty: impl Fn() -> Data) -> &mut Data {
        let fresh = empty();
        let entry = self
            .keys
            .entry(key.as_ref().to_vec())
            .or_insert_with(|| Entry {
                data: empty(),
                pttl: None,
            });
        if core::mem::discriminant(&entry.data) != core::mem::discriminant(&fresh) {
            *entry = Entry {
                data: fresh,
                pttl: None,
            };
        }
        &mut entry.data
    }
}

fn push_unique(items: &mut Vec<Vec<u8>>, item: &[u8]) {
    if !items.iter().any(|i| i == item) {
        items.push(item.to_vec());
    }
}
