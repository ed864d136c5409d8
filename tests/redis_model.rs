//! The Redis model (`guest-sdk/redis-model`, which answers `wasmrule eval --redis` and
//! the Rust SDK's `FakeRedis`) against a real redis-server: the same data, the same
//! reads of the read set, the same replies. The model follows Redis 7.0, the version
//! these tests run against (Debian 12's redis-server 7.0.15).

mod support;

use support::Redis;
use wasmrule_redis_model::{Reply, Store};

/// The data, as commands for the server and as builder calls for the model.
fn load(redis: &Redis) -> Store {
    let mut conn = redis.conn();
    let setup = [
        "SET s hello",
        "SET n 12345",
        "HSET h b 2 a 1 c 3",
        "RPUSH l x y z w",
        "SADD set m2 m1 m3",
        "ZADD z 2 two 1 one 3 three 0.1 tenth 1.5e-7 tiny 1e21 huge",
        "ZADD zl 0 c 0 a 0 b",
        "XADD x 1-0 f a",
        "XADD x 2-5 f b g c",
        "XADD x 3-0 only one",
        "PFADD hll a b c",
    ];
    for line in setup {
        let args: Vec<&str> = line.split(' ').collect();
        redis::cmd(args[0])
            .arg(&args[1..])
            .query::<redis::Value>(&mut conn)
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    let mut db = Store::new();
    db.set("s", "hello")
        .set("n", "12345")
        .hset("h", "b", "2")
        .hset("h", "a", "1")
        .hset("h", "c", "3");
    for v in ["x", "y", "z", "w"] {
        db.rpush("l", v);
    }
    for m in ["m2", "m1", "m3"] {
        db.sadd("set", m);
    }
    for (score, m) in [(2.0, "two"), (1.0, "one"), (3.0, "three"), (0.1, "tenth")] {
        db.zadd("z", score, m);
    }
    db.zadd("z", 1.5e-7, "tiny").zadd("z", 1e21, "huge");
    for m in ["c", "a", "b"] {
        db.zadd("zl", 0.0, m);
    }
    db.xadd("x", (1, 0), [("f", "a")])
        .xadd("x", (2, 5), [("f", "b"), ("g", "c")])
        .xadd("x", (3, 0), [("only", "one")]);
    for e in ["a", "b", "c"] {
        db.pfadd("hll", e);
    }
    db
}

fn to_reply(v: redis::Value) -> Reply {
    use redis::Value as V;
    match v {
        V::Nil => Reply::Nil,
        V::Int(i) => Reply::Int(i),
        V::BulkString(b) => Reply::Bulk(b),
        V::SimpleString(s) => Reply::Bulk(s.into_bytes()),
        V::Okay => Reply::Bulk(b"OK".to_vec()),
        V::Array(items) => Reply::Array(items.into_iter().map(to_reply).collect()),
        other => panic!("a RESP2 server sent {other:?}"),
    }
}

/// Members of a set come in hash order from Redis 7.0 (insertion order in the model):
/// compare them sorted.
fn sorted(r: Reply) -> Reply {
    match r {
        Reply::Array(mut items) => {
            items.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
            Reply::Array(items)
        }
        other => other,
    }
}

#[test]
fn the_model_answers_the_read_set_as_redis_7_0_does() {
    let redis = Redis::start();
    let db = load(&redis);
    let mut conn = redis.conn();
    let reads = [
        "GET s",
        "GET missing",
        "GET h",
        "MGET s missing h n",
        "STRLEN s",
        "STRLEN missing",
        "GETRANGE s 1 -2",
        "GETRANGE s -100 100",
        "GETRANGE s 3 1",
        "GETRANGE missing 0 -1",
        "EXISTS s s missing h",
        "TYPE s",
        "TYPE h",
        "TYPE l",
        "TYPE set",
        "TYPE z",
        "TYPE x",
        "TYPE hll",
        "TYPE missing",
        "TTL s",
        "PTTL missing",
        "HGET h a",
        "HGET h missing",
        "HGET s a",
        "HMGET h a missing c",
        "HMGET missing a",
        "HGETALL h",
        "HGETALL missing",
        "HEXISTS h b",
        "HEXISTS h q",
        "HLEN h",
        "HKEYS h",
        "HVALS h",
        "LRANGE l 0 -1",
        "LRANGE l -2 100",
        "LRANGE l 3 1",
        "LRANGE l x 1",
        "LRANGE missing 0 -1",
        "LLEN l",
        "LINDEX l -1",
        "LINDEX l 9",
        "SISMEMBER set m1",
        "SISMEMBER set q",
        "SMISMEMBER set m1 q m3",
        "SCARD set",
        "SCARD missing",
        "ZRANGE z 0 -1",
        "ZRANGE z 0 -1 WITHSCORES",
        "ZRANGE z 0 1 REV",
        "ZRANGE z (1 +inf BYSCORE",
        "ZRANGE z +inf -inf BYSCORE REV LIMIT 1 2",
        "ZRANGE z 0 -1 LIMIT 0 1",
        "ZRANGE zl [a (c BYLEX",
        "ZRANGE zl + - BYLEX REV LIMIT 0 2",
        "ZRANGE zl a c BYLEX",
        "ZRANGEBYSCORE z 1 3 WITHSCORES",
        "ZRANGEBYSCORE z -inf +inf LIMIT 1 -1",
        "ZRANGEBYSCORE z (0.1 (3",
        "ZRANGEBYSCORE z 0 x",
        "ZREVRANGE z 0 2 WITHSCORES",
        "ZSCORE z tenth",
        "ZSCORE z tiny",
        "ZSCORE z huge",
        "ZSCORE z missing",
        "ZMSCORE z one missing two",
        "ZCARD z",
        "ZCOUNT z (1 3",
        "ZCOUNT z -inf +inf",
        "ZRANK z three",
        "ZRANK z missing",
        "XRANGE x - +",
        "XRANGE x 2 +",
        "XRANGE x (1-0 + COUNT 1",
        "XRANGE x - 2",
        "XREVRANGE x + - COUNT 2",
        "XRANGE missing - +",
        "XLEN x",
        "XLEN missing",
        "XLEN s",
        "PFCOUNT hll missing",
        "GETBIT s 1",
        "GETBIT s 0",
        "GETBIT s 9999",
        "GETBIT n 2",
    ];
    let mut differ = Vec::new();
    for line in reads {
        let args: Vec<&str> = line.split(' ').collect();
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let model = db.read(&bytes);
        let real = redis::cmd(args[0])
            .arg(&args[1..])
            .query::<redis::Value>(&mut conn)
            .map(to_reply);
        let same = match (&model, &real) {
            (Ok(m), Ok(r)) => m == r,
            // An error is an error: the codes are the host's business.
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !same {
            differ.push(format!("{line}\n  model: {model:?}\n  redis: {real:?}"));
        }
    }
    // Sets come in hash order from Redis 7.0.
    let members = redis::cmd("SMEMBERS")
        .arg("set")
        .query::<redis::Value>(&mut conn);
    let model = db.read(&[b"SMEMBERS", b"set"]).unwrap();
    assert_eq!(
        sorted(model),
        sorted(to_reply(members.unwrap())),
        "SMEMBERS set"
    );
    assert!(
        differ.is_empty(),
        "the model differs from redis-server:\n{}",
        differ.join("\n")
    );
}
