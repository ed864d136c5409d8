//! The Redis that `wasmrule eval --redis FILE` and a test case's `"redis"` give a v2
//! rule's reads: a JSON map of keys to typed values (docs/writing-rules.md, "Redis
//! fixtures"), held in memory by `wasmrule-redis-model` (the read set, Redis 7.0's
//! replies) and read through the tenant's read policy as served reads are
//! (`TenantPolicy::apply_read`: the read set, arities, keys namespaced).
//!
//! The fixture is Redis as it is: keys are written with the tenant's prefix when the
//! tenant has one (`acme:last:d1`), as `eval` prints the keys of writes. Nothing a rule
//! returns is applied to it: one event, one fixture.
//!
//! Owns parsing the fixture (`fixture_redis/json.rs`: the JSON forms) and answering
//! reads; not the policy (`tenancy/policy.rs`)
//! or the budget and the deadline (the engine's `host.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

mod json;

use anyhow::{Context, bail};
use serde_json::Value as Json;
use wasmrule_redis_model::{Failure, Store};

use crate::commands::Commands;
use crate::rules::engine::{ReadCode, RedisReads, Reply};
use crate::tenancy::policy::TenantPolicy;

/// A parsed fixture: the database a case's reads see.
#[derive(Debug, Clone, Default)]
pub struct Fixture {
    store: Store,
}

impl Fixture {
    /// An empty database (every key missing).
    pub fn empty() -> Fixture {
        Fixture::default()
    }

    /// Parses a fixture: a JSON object of keys to values (docs/writing-rules.md).
    ///
    /// # Errors
    ///
    /// When `json` is not an object, or a value is not one of the documented forms;
    /// the message names the key.
    pub fn parse(json: &Json) -> anyhow::Result<Fixture> {
        let Json::Object(keys) = json else {
            bail!("the Redis fixture is a JSON object of keys to values");
        };
        let mut store = Store::new();
        for (key, value) in keys {
            json::add(&mut store, key, value)
                .with_context(|| format!("Redis fixture key {key:?}"))?;
        }
        Ok(Fixture { store })
    }

    /// Reads the fixture file at `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not a valid fixture.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Fixture> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read Redis fixture {}", path.display()))?;
        let json: Json = serde_json::from_str(&text)
            .with_context(|| format!("Redis fixture {} is not JSON", path.display()))?;
        Fixture::parse(&json).with_context(|| format!("Redis fixture {}", path.display()))
    }

    /// A [`RedisReads`] over this fixture for `policy`'s tenant, and the log its reads
    /// go to (as sent to Redis: namespaced, in `redis-cli` syntax).
    pub fn reads(&self, policy: Arc<TenantPolicy>) -> (Box<dyn RedisReads>, ReadLog) {
        let log = ReadLog::default();
        let reads = FixtureReads {
            store: Arc::new(self.store.clone()),
            policy,
            log: log.clone(),
        };
        (Box::new(reads), log)
    }
}

/// The reads one invocation made, each with what it got.
#[derive(Debug, Clone, Default)]
pub struct ReadLog(Arc<Mutex<Vec<String>>>);

impl ReadLog {
    /// Every read so far: `GET last:d1` (the command as sent to Redis) and, after
    /// ` -> `, the reply or the error code's name.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The commands alone, without replies.
    pub fn commands(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .map(|l| l.split(" -> ").next().unwrap_or_default().to_owned())
            .collect()
    }

    fn push(&self, line: String) {
        if let Ok(mut l) = self.0.lock() {
            l.push(line);
        }
    }
}

struct FixtureReads {
    store: Arc<Store>,
    policy: Arc<TenantPolicy>,
    log: ReadLog,
}

impl RedisReads for FixtureReads {
    fn read(
        &mut self,
        args: &[&[u8]],
        _timeout: Duration,
        max_reply: usize,
    ) -> Result<Reply, ReadCode> {
        let mut sent = Commands::new();
        let result = self.policy.apply_read(args, &mut sent).and_then(|()| {
            let cmd = sent.get(0).ok_or(ReadCode::BadRequest)?;
            let namespaced: Vec<&[u8]> = cmd.args().collect();
            let reply = self.store.read(&namespaced).map_err(|f| match f {
                Failure::NotAllowed => ReadCode::NotAllowed,
                Failure::BadRequest => ReadCode::BadRequest,
                Failure::RedisError => ReadCode::RedisError,
            })?;
            let reply = to_reply(reply);
            if reply.encoded_len() > max_reply {
                return Err(ReadCode::OverBudget);
            }
            Ok(reply)
        });
        let shown = match sent.get(0) {
            Some(c) => c.to_string(),
            None => {
                // Refused before namespacing: show what the rule asked for.
                let mut asked = Commands::new();
                asked.push(args.iter().copied());
                asked.get(0).map(|c| c.to_string()).unwrap_or_default()
            }
        };
        let outcome = match &result {
            Ok(r) => show_reply(r),
            Err(code) => format!("({})", code.name()),
        };
        self.log.push(format!("{shown} -> {outcome}"));
        result
    }
}

fn to_reply(r: wasmrule_redis_model::Reply) -> Reply {
    use wasmrule_redis_model::Reply as M;
    match r {
        M::Nil => Reply::Nil,
        M::Int(i) => Reply::Int(i),
        M::Bulk(b) => Reply::Bulk(b),
        M::Array(a) => Reply::Array(a.into_iter().map(to_reply).collect()),
    }
}

/// A reply on one line: `(nil)`, `(integer) 3`, a string in `redis-cli` quoting,
/// arrays in brackets.
fn show_reply(r: &Reply) -> String {
    match r {
        Reply::Nil => "(nil)".into(),
        Reply::Int(i) => format!("(integer) {i}"),
        Reply::Bulk(b) => {
            let mut s = String::new();
            // Writing to a String does not fail.
            let _ = crate::commands::write_cli_arg(&mut s, b);
            if s.starts_with('"') {
                s
            } else {
                format!("\"{s}\"")
            }
        }
        Reply::Array(items) => {
            let inner: Vec<String> = items.iter().map(show_reply).collect();
            format!("[{}]", inner.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(
        fixture: &Json,
        policy: TenantPolicy,
        args: &[&str],
    ) -> (Result<Reply, ReadCode>, Vec<String>) {
        let f = Fixture::parse(fixture).unwrap();
        let (mut reads, log) = f.reads(Arc::new(policy));
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let r = reads.read(&args, Duration::from_secs(1), 1 << 20);
        (r, log.lines())
    }

    fn policy(tenant: &str) -> TenantPolicy {
        let config = crate::config::Config::load(None, &crate::config::Overrides::default());
        config.unwrap().tenants.policy(tenant).as_ref().clone()
    }

    fn default_policy() -> TenantPolicy {
        policy(crate::rules::ruleset::DEFAULT_TENANT)
    }

    #[test]
    fn every_documented_form_parses() {
        let f = json!({
            "s": "21.5", "n": 7,
            "t": {"string": "v", "pttl": 5000},
            "h": {"hash": {"b": "2", "a": 1}},
            "hp": {"hash": [["b", "2"], ["a", "1"]]},
            "l": {"list": ["x", "y"]},
            "set": {"set": ["a", "b", "a"]},
            "z": {"zset": {"m": 1.5, "n": "inf"}},
            "x": {"stream": [{"id": "1-1", "fields": {"f": "v"}}]},
            "hll": {"hyperloglog": ["a", "b"]}
        });
        let p = default_policy();
        assert_eq!(
            read(&f, p.clone(), &["GET", "n"]).0,
            Ok(Reply::Bulk(b"7".to_vec()))
        );
        assert_eq!(read(&f, p.clone(), &["PTTL", "t"]).0, Ok(Reply::Int(5000)));
        let fields = |r: Result<Reply, ReadCode>| match r {
            Ok(Reply::Array(a)) => a.len(),
            _ => 0,
        };
        assert_eq!(fields(read(&f, p.clone(), &["HGETALL", "hp"]).0), 4);
        assert_eq!(read(&f, p.clone(), &["SCARD", "set"]).0, Ok(Reply::Int(2)));
        assert_eq!(
            read(&f, p.clone(), &["ZSCORE", "z", "n"]).0,
            Ok(Reply::Bulk(b"inf".to_vec()))
        );
        assert_eq!(read(&f, p.clone(), &["XLEN", "x"]).0, Ok(Reply::Int(1)));
        assert_eq!(read(&f, p, &["PFCOUNT", "hll"]).0, Ok(Reply::Int(2)));
    }

    #[test]
    fn bad_fixtures_name_the_key() {
        for bad in [
            json!([]),
            json!({"k": true}),
            json!({"k": {"hash": {}, "list": []}}),
            json!({"k": {"zset": {"m": "x"}}}),
            json!({"k": {"queue": []}}),
        ] {
            assert!(Fixture::parse(&bad).is_err(), "{bad}");
        }
        let e = Fixture::parse(&json!({"k1": {"list": "x"}})).unwrap_err();
        assert!(format!("{e:#}").contains("\"k1\""), "{e:#}");
    }

    #[test]
    fn reads_go_through_the_tenant_policy() {
        let acme = policy("acme");
        let f = json!({"acme:last:d1": "20", "last:d1": "other"});
        let (r, log) = read(&f, acme.clone(), &["GET", "last:d1"]);
        assert_eq!(r, Ok(Reply::Bulk(b"20".to_vec())));
        assert_eq!(log, [r#"GET acme:last:d1 -> "20""#]);
        let (r, log) = read(&f, acme, &["KEYS", "*"]);
        assert_eq!(r, Err(ReadCode::NotAllowed));
        assert_eq!(log, ["KEYS * -> (not_allowed)"]);
        let (r, _) = read(&json!({"s": "x"}), default_policy(), &["GET", "s", "extra"]);
        assert_eq!(r, Err(ReadCode::BadRequest));
    }
}
