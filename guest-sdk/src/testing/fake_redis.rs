//! [`FakeRedis`]: an in-memory Redis that answers a v2 rule's reads in native tests, so
//! rule logic with reads runs under plain `cargo test`. Requests and replies go
//! through the ABI's encoding, as on wasm32; the commands, their arities and replies
//! are the read set's (the `wasmrule-redis-model` crate, which `wasmrule eval` and
//! `wasmrule test` also answer fixture reads with), and the per-invocation budget is
//! the host's default one.

use std::ops::{Deref, DerefMut};

use wasmrule_redis_model::{Failure, Reply, Store};

use crate::abi::v2::{decode_request, encode_value};
use crate::{Context, ReadError, Reads, Value};

/// The host's default `limits.max_reads`.
pub const DEFAULT_MAX_READS: usize = 16;
/// The host's default `limits.max_read_bytes`.
pub const DEFAULT_MAX_READ_BYTES: usize = 1 << 20;

/// A fake Redis for native tests of v2 rules. Fill it through the [`Store`] builders
/// (`set`, `hset`, `rpush`, `sadd`, `zadd`, `xadd`, `pfadd`, `pexpire`, ...), which it
/// dereferences to; hand [`FakeRedis::context`] to the rule.
///
/// # Examples
///
/// ```
/// use wasmrule_guest::{ReadError, testing::FakeRedis};
/// let mut redis = FakeRedis::new();
/// redis.set("k", "v");
/// assert_eq!(redis.context().get("k").unwrap().as_str(), Some("v"));
/// redis.fail_reads(Some(ReadError::Unavailable)); // Redis is away
/// assert_eq!(redis.context().get("k"), Err(ReadError::Unavailable));
/// ```
#[derive(Debug, Clone)]
pub struct FakeRedis {
    store: Store,
    max_reads: usize,
    max_read_bytes: usize,
    reads: usize,
    read_bytes: usize,
    failure: Option<ReadError>,
    requests: Vec<Vec<String>>,
}

impl Default for FakeRedis {
    fn default() -> Self {
        FakeRedis::new()
    }
}

impl FakeRedis {
    /// An empty database with the host's default budget.
    pub fn new() -> FakeRedis {
        FakeRedis {
            store: Store::new(),
            max_reads: DEFAULT_MAX_READS,
            max_read_bytes: DEFAULT_MAX_READ_BYTES,
            reads: 0,
            read_bytes: 0,
            failure: None,
            requests: Vec::new(),
        }
    }

    /// Sets the budget of one invocation (`limits.max_reads`, `limits.max_read_bytes`)
    /// and starts counting again.
    pub fn with_budget(mut self, max_reads: usize, max_read_bytes: usize) -> FakeRedis {
        self.max_reads = max_reads;
        self.max_read_bytes = max_read_bytes;
        self.reset_budget();
        self
    }

    /// Starts a new invocation's budget (the host gives every event a fresh one).
    pub fn reset_budget(&mut self) {
        self.reads = 0;
        self.read_bytes = 0;
    }

    /// Makes every read fail with `error` (`Unavailable`: Redis is down), or answer
    /// again with `None`.
    pub fn fail_reads(&mut self, error: Option<ReadError>) {
        self.failure = error;
    }

    /// A context for the rule, its reads answered here.
    pub fn context(&mut self) -> Context<'_> {
        Context::new(self)
    }

    /// Applies the Redis commands among `actions` to the store, in order, as the host
    /// writes them after the invocation; MQTT actions are ignored. So a test can run
    /// event after event, each reading what the ones before wrote.
    ///
    /// # Errors
    ///
    /// A command the model does not write (see `wasmrule_redis_model::Store::write`),
    /// or one with the wrong number of arguments or a value of the wrong type.
    ///
    /// # Examples
    ///
    /// ```
    /// use wasmrule_guest::{Action, cmd, testing::FakeRedis};
    /// let mut redis = FakeRedis::new();
    /// redis.apply(&[cmd::hincrby("n", "a", 2).into()]).unwrap();
    /// assert_eq!(redis.context().hget("n", "a").unwrap().as_i64(), Some(2));
    /// ```
    pub fn apply(&mut self, actions: &[crate::Action]) -> Result<(), String> {
        for a in actions {
            if let crate::Action::Redis(c) = a {
                let args: Vec<&[u8]> = c.args().collect();
                self.store.write(&args)?;
            }
        }
        Ok(())
    }

    /// Every request so far, arguments as text (lossy), oldest first.
    pub fn requests(&self) -> &[Vec<String>] {
        &self.requests
    }

    fn answer(&mut self, request: &[u8]) -> Result<Vec<u8>, ReadError> {
        let args = decode_request(request).ok_or(ReadError::BadRequest)?;
        self.requests.push(
            args.iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        );
        if let Some(e) = self.failure {
            return Err(e);
        }
        // As the host counts: a read past the count is refused uncounted; any other
        // read counts, answered or not; reply bytes count when the reply fits.
        if self.reads >= self.max_reads {
            return Err(ReadError::OverBudget);
        }
        self.reads += 1;
        let reply = self.store.read(&args).map_err(|f| match f {
            Failure::NotAllowed => ReadError::NotAllowed,
            Failure::BadRequest => ReadError::BadRequest,
            Failure::RedisError => ReadError::RedisError,
        })?;
        let mut buf = Vec::new();
        encode_value(&to_value(reply), &mut buf);
        if buf.len() > self.max_read_bytes - self.read_bytes {
            return Err(ReadError::OverBudget);
        }
        self.read_bytes += buf.len();
        Ok(buf)
    }
}

fn to_value(r: Reply) -> Value {
    match r {
        Reply::Nil => Value::Nil,
        Reply::Int(i) => Value::Int(i),
        Reply::Bulk(b) => Value::Bulk(b),
        Reply::Array(a) => Value::Array(a.into_iter().map(to_value).collect()),
    }
}

impl Reads for FakeRedis {
    fn call(&mut self, request: &[u8]) -> Result<Vec<u8>, i32> {
        self.answer(request).map_err(ReadError::code)
    }
}

impl Deref for FakeRedis {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl DerefMut for FakeRedis {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_reads_and_bytes() {
        let mut redis = FakeRedis::new().with_budget(2, 1 << 20);
        redis.set("k", "v");
        let mut ctx = redis.context();
        assert!(ctx.get("k").is_ok());
        assert!(ctx.get("k").is_ok());
        assert_eq!(ctx.get("k"), Err(ReadError::OverBudget));
        redis.reset_budget();
        assert!(redis.context().get("k").is_ok());

        let mut small = FakeRedis::new().with_budget(16, 10);
        small.set("big", "0123456789").set("k", "v");
        assert_eq!(small.context().get("big"), Err(ReadError::OverBudget));
        // A refused reply takes nothing from the bytes left.
        assert!(small.context().get("k").is_ok());
    }

    #[test]
    fn typed_data_reads_back() {
        let mut redis = FakeRedis::new();
        redis
            .xadd("x", (5, 1), [("temp", "21")])
            .zadd("z", 0.1, "a")
            .pexpire("z", 2000);
        let mut ctx = redis.context();
        let entries = ctx.xrange("x", "-", "+", 10).unwrap();
        let entry = entries.as_array().unwrap()[0].as_array().unwrap();
        assert_eq!(entry[0].as_str(), Some("5-1"));
        assert_eq!(entry[1].pairs().next().unwrap().1.as_str(), Some("21"));
        assert_eq!(
            ctx.read(&["ZSCORE", "z", "a"]).unwrap().as_str(),
            Some("0.10000000000000001")
        );
        assert_eq!(ctx.pttl("z"), Ok(2000));
    }
}
