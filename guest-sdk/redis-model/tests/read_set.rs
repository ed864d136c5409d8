//! The model's replies for each command of the read set, as redis-server 7.0 gives
//! them for the same data.

use wasmrule_redis_model::{Failure, Reply, Store};

fn b(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

fn arr(items: &[&str]) -> Reply {
    Reply::Array(items.iter().map(|s| b(s)).collect())
}

fn read(db: &Store, line: &str) -> Result<Reply, Failure> {
    let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    db.read(&args)
}

fn db() -> Store {
    let mut db = Store::new();
    db.set("s", "hello")
        .hset("h", "b", "2")
        .hset("h", "a", "1")
        .rpush("l", "x")
        .rpush("l", "y")
        .rpush("l", "z")
        .sadd("set", "m2")
        .sadd("set", "m1")
        .sadd("set", "m2")
        .zadd("z", 2.0, "two")
        .zadd("z", 1.0, "one")
        .zadd("z", 3.0, "three")
        .xadd("x", (1, 0), [("f", "a")])
        .xadd("x", (2, 5), [("f", "b"), ("g", "c")])
        .pfadd("hll", "a")
        .pfadd("hll", "b")
        .pfadd("hll", "a")
        .set("t", "v")
        .pexpire("t", 1500);
    db
}

#[test]
fn strings() {
    let db = db();
    assert_eq!(read(&db, "GET s"), Ok(b("hello")));
    assert_eq!(read(&db, "get missing"), Ok(Reply::Nil));
    assert_eq!(read(&db, "GET h"), Err(Failure::RedisError));
    assert_eq!(
        read(&db, "MGET s missing h"),
        Ok(Reply::Array(vec![b("hello"), Reply::Nil, Reply::Nil]))
    );
    assert_eq!(read(&db, "STRLEN s"), Ok(Reply::Int(5)));
    assert_eq!(read(&db, "GETRANGE s 1 -2"), Ok(b("ell")));
    assert_eq!(read(&db, "GETRANGE s 3 1"), Ok(b("")));
    assert_eq!(read(&db, "GETBIT s 1"), Ok(Reply::Int(1))); // 'h' = 0b0110_1000
    assert_eq!(read(&db, "GETBIT s 0"), Ok(Reply::Int(0)));
    assert_eq!(read(&db, "GETBIT s 9999"), Ok(Reply::Int(0)));
}

#[test]
fn keys() {
    let db = db();
    assert_eq!(read(&db, "EXISTS s s missing h"), Ok(Reply::Int(3)));
    assert_eq!(read(&db, "TYPE z"), Ok(b("zset")));
    assert_eq!(read(&db, "TYPE hll"), Ok(b("string")));
    assert_eq!(read(&db, "TYPE nope"), Ok(b("none")));
    assert_eq!(read(&db, "PTTL t"), Ok(Reply::Int(1500)));
    assert_eq!(read(&db, "TTL t"), Ok(Reply::Int(2)));
    assert_eq!(read(&db, "TTL s"), Ok(Reply::Int(-1)));
    assert_eq!(read(&db, "PTTL nope"), Ok(Reply::Int(-2)));
}

#[test]
fn hashes_in_insertion_order() {
    let db = db();
    assert_eq!(read(&db, "HGET h a"), Ok(b("1")));
    assert_eq!(
        read(&db, "HMGET h a nope b"),
        Ok(Reply::Array(vec![b("1"), Reply::Nil, b("2")]))
    );
    assert_eq!(
        read(&db, "HMGET nope a"),
        Ok(Reply::Array(vec![Reply::Nil]))
    );
    assert_eq!(read(&db, "HGETALL h"), Ok(arr(&["b", "2", "a", "1"])));
    assert_eq!(read(&db, "HGETALL nope"), Ok(arr(&[])));
    assert_eq!(read(&db, "HEXISTS h b"), Ok(Reply::Int(1)));
    assert_eq!(read(&db, "HLEN h"), Ok(Reply::Int(2)));
    assert_eq!(read(&db, "HKEYS h"), Ok(arr(&["b", "a"])));
    assert_eq!(read(&db, "HVALS h"), Ok(arr(&["2", "1"])));
    assert_eq!(read(&db, "HGET s a"), Err(Failure::RedisError));
}

#[test]
fn lists_and_sets() {
    let db = db();
    assert_eq!(read(&db, "LRANGE l 0 -1"), Ok(arr(&["x", "y", "z"])));
    assert_eq!(read(&db, "LRANGE l -2 10"), Ok(arr(&["y", "z"])));
    assert_eq!(read(&db, "LRANGE l x 1"), Err(Failure::RedisError));
    assert_eq!(read(&db, "LLEN l"), Ok(Reply::Int(3)));
    assert_eq!(read(&db, "LINDEX l -1"), Ok(b("z")));
    assert_eq!(read(&db, "LINDEX l 3"), Ok(Reply::Nil));
    assert_eq!(read(&db, "SMEMBERS set"), Ok(arr(&["m2", "m1"])));
    assert_eq!(read(&db, "SISMEMBER set m1"), Ok(Reply::Int(1)));
    assert_eq!(
        read(&db, "SMISMEMBER set m1 no"),
        Ok(Reply::Array(vec![Reply::Int(1), Reply::Int(0)]))
    );
    assert_eq!(read(&db, "SCARD set"), Ok(Reply::Int(2)));
    assert_eq!(read(&db, "PFCOUNT hll nope"), Ok(Reply::Int(2)));
}

#[test]
fn sorted_sets() {
    let db = db();
    assert_eq!(
        read(&db, "ZRANGE z 0 -1"),
        Ok(arr(&["one", "two", "three"]))
    );
    assert_eq!(read(&db, "ZRANGE z 0 0 WITHSCORES"), Ok(arr(&["one", "1"])));
    assert_eq!(read(&db, "ZRANGE z 0 1 REV"), Ok(arr(&["three", "two"])));
    assert_eq!(
        read(&db, "ZRANGE z (1 +inf BYSCORE"),
        Ok(arr(&["two", "three"]))
    );
    assert_eq!(
        read(&db, "ZRANGE z +inf -inf BYSCORE REV LIMIT 1 1"),
        Ok(arr(&["two"]))
    );
    let mut lex = Store::new();
    lex.zadd("zl", 0.0, "c")
        .zadd("zl", 0.0, "a")
        .zadd("zl", 0.0, "b");
    assert_eq!(read(&lex, "ZRANGE zl [a (c BYLEX"), Ok(arr(&["a", "b"])));
    assert_eq!(
        read(&lex, "ZRANGE zl + - BYLEX REV LIMIT 0 1"),
        Ok(arr(&["c"]))
    );
    assert_eq!(read(&lex, "ZRANGE zl a c BYLEX"), Err(Failure::RedisError));
    assert_eq!(
        read(&db, "ZRANGE z 0 -1 LIMIT 0 1"),
        Err(Failure::RedisError)
    );
    assert_eq!(
        read(&db, "ZRANGEBYSCORE z 2 3 WITHSCORES"),
        Ok(arr(&["two", "2", "three", "3"]))
    );
    assert_eq!(
        read(&db, "ZRANGEBYSCORE z -inf +inf LIMIT 1 -1"),
        Ok(arr(&["two", "three"]))
    );
    assert_eq!(read(&db, "ZRANGEBYSCORE z 0 x"), Err(Failure::RedisError));
    assert_eq!(
        read(&db, "ZREVRANGE z 0 0 WITHSCORES"),
        Ok(arr(&["three", "3"]))
    );
    assert_eq!(read(&db, "ZSCORE z two"), Ok(b("2")));
    assert_eq!(
        read(&db, "ZMSCORE z two nope"),
        Ok(Reply::Array(vec![b("2"), Reply::Nil]))
    );
    assert_eq!(read(&db, "ZCARD z"), Ok(Reply::Int(3)));
    assert_eq!(read(&db, "ZCOUNT z (1 3"), Ok(Reply::Int(2)));
    assert_eq!(read(&db, "ZRANK z three"), Ok(Reply::Int(2)));
    assert_eq!(
        read(&db, "ZRANK z three WITHSCORE"),
        Ok(Reply::Array(vec![Reply::Int(2), b("3")]))
    );
    assert_eq!(read(&db, "ZRANK z nope"), Ok(Reply::Nil));
}

#[test]
fn streams() {
    let db = db();
    let e1 = Reply::Array(vec![b("1-0"), arr(&["f", "a"])]);
    let e2 = Reply::Array(vec![b("2-5"), arr(&["f", "b", "g", "c"])]);
    assert_eq!(
        read(&db, "XRANGE x - +"),
        Ok(Reply::Array(vec![e1.clone(), e2.clone()]))
    );
    assert_eq!(
        read(&db, "XRANGE x 2 +"),
        Ok(Reply::Array(vec![e2.clone()]))
    );
    assert_eq!(
        read(&db, "XRANGE x (1-0 + COUNT 5"),
        Ok(Reply::Array(vec![e2.clone()]))
    );
    assert_eq!(
        read(&db, "XREVRANGE x + - COUNT 1"),
        Ok(Reply::Array(vec![e2]))
    );
    assert_eq!(read(&db, "XRANGE x - 1"), Ok(Reply::Array(vec![e1])));
    assert_eq!(read(&db, "XLEN x"), Ok(Reply::Int(2)));
    assert_eq!(read(&db, "XLEN s"), Err(Failure::RedisError));
}

#[test]
fn refusals() {
    let db = db();
    assert_eq!(read(&db, "SET s v"), Err(Failure::NotAllowed));
    assert_eq!(read(&db, "KEYS *"), Err(Failure::NotAllowed));
    assert_eq!(read(&db, "GET"), Err(Failure::BadRequest));
}
