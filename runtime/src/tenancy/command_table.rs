//! The command table: every Redis command a tenant policy can allow, with where its
//! keys are ([`SPECS`]), the default allow-list ([`DEFAULT_ALLOWED`]), the commands
//! that can never be allowed and why, and checking a configured allow-list
//! ([`resolve_allowed`]). Applying it to a rule's output is `policy.rs`.

use std::collections::HashSet;

/// How to find the keys of a command, in Redis's own terms (`COMMAND INFO`): arity
/// counts the name, negative means "at least"; keys are at `first..=last` (negative
/// `last` counts from the end) every `step` arguments.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    pub arity: i32,
    pub first_key: usize,
    pub last_key: i32,
    pub step: usize,
    /// The key positions are channel names (`PUBLISH`), namespaced the same way.
    pub channel: bool,
}

const fn spec(
    name: &'static str,
    arity: i32,
    first_key: usize,
    last_key: i32,
    step: usize,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        first_key,
        last_key,
        step,
        channel: false,
    }
}

/// Every command a policy can allow: data-writing commands whose keys are known.
pub const SPECS: &[CommandSpec] = &[
    // Strings.
    spec("SET", -3, 1, 1, 1),
    spec("SETEX", 4, 1, 1, 1),
    spec("PSETEX", 4, 1, 1, 1),
    spec("SETNX", 3, 1, 1, 1),
    spec("SETRANGE", 4, 1, 1, 1),
    spec("APPEND", 3, 1, 1, 1),
    spec("MSET", -3, 1, -1, 2),
    spec("INCR", 2, 1, 1, 1),
    spec("DECR", 2, 1, 1, 1),
    spec("INCRBY", 3, 1, 1, 1),
    spec("DECRBY", 3, 1, 1, 1),
    spec("INCRBYFLOAT", 3, 1, 1, 1),
    spec("SETBIT", 4, 1, 1, 1),
    // Keys.
    spec("DEL", -2, 1, -1, 1),
    spec("UNLINK", -2, 1, -1, 1),
    spec("EXPIRE", -3, 1, 1, 1),
    spec("PEXPIRE", -3, 1, 1, 1),
    spec("EXPIREAT", -3, 1, 1, 1),
    spec("PEXPIREAT", -3, 1, 1, 1),
    spec("PERSIST", 2, 1, 1, 1),
    // Hashes.
    spec("HSET", -4, 1, 1, 1),
    spec("HSETNX", 4, 1, 1, 1),
    spec("HMSET", -4, 1, 1, 1),
    spec("HDEL", -3, 1, 1, 1),
    spec("HINCRBY", 4, 1, 1, 1),
    spec("HINCRBYFLOAT", 4, 1, 1, 1),
    // Lists.
    spec("LPUSH", -3, 1, 1, 1),
    spec("RPUSH", -3, 1, 1, 1),
    spec("LPUSHX", -3, 1, 1, 1),
    spec("RPUSHX", -3, 1, 1, 1),
    spec("LTRIM", 4, 1, 1, 1),
    spec("LPOP", -2, 1, 1, 1),
    spec("RPOP", -2, 1, 1, 1),
    // Sets, sorted sets.
    spec("SADD", -3, 1, 1, 1),
    spec("SREM", -3, 1, 1, 1),
    spec("ZADD", -4, 1, 1, 1),
    spec("ZINCRBY", 4, 1, 1, 1),
    spec("ZREM", -3, 1, 1, 1),
    spec("ZREMRANGEBYSCORE", 4, 1, 1, 1),
    spec("ZREMRANGEBYRANK", 4, 1, 1, 1),
    // Streams, HyperLogLog, geo.
    spec("XADD", -5, 1, 1, 1),
    spec("XTRIM", -4, 1, 1, 1),
    spec("PFADD", -2, 1, 1, 1),
    spec("GEOADD", -5, 1, 1, 1),
    // Pub/sub: the channel is namespaced like a key.
    CommandSpec {
        name: "PUBLISH",
        arity: 3,
        first_key: 1,
        last_key: 1,
        step: 1,
        channel: true,
    },
];

/// Allowed unless a tenant's policy says otherwise.
pub const DEFAULT_ALLOWED: &[&str] = &[
    "SET",
    "SETEX",
    "PSETEX",
    "SETNX",
    "MSET",
    "DEL",
    "UNLINK",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "PERSIST",
    "INCR",
    "DECR",
    "INCRBY",
    "DECRBY",
    "INCRBYFLOAT",
    "HSET",
    "HSETNX",
    "HDEL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "LPUSH",
    "RPUSH",
    "LTRIM",
    "SADD",
    "SREM",
    "ZADD",
    "ZINCRBY",
    "ZREM",
    "ZREMRANGEBYSCORE",
    "ZREMRANGEBYRANK",
    "XADD",
    "XTRIM",
    "PFADD",
    "SETBIT",
    "GEOADD",
    "PUBLISH",
];

/// Commands named in configuration that can never be allowed, with why (for the error).
const NEVER: &[(&str, &str)] = &[
    ("FLUSHALL", "admin"),
    ("FLUSHDB", "admin"),
    ("CONFIG", "admin"),
    ("SHUTDOWN", "admin"),
    ("DEBUG", "admin"),
    ("MODULE", "admin"),
    ("CLIENT", "admin"),
    ("ACL", "admin"),
    ("SAVE", "admin"),
    ("BGSAVE", "admin"),
    ("BGREWRITEAOF", "admin"),
    ("REPLICAOF", "admin"),
    ("SLAVEOF", "admin"),
    ("SWAPDB", "admin"),
    ("MONITOR", "admin"),
    ("FAILOVER", "admin"),
    ("EVAL", "scripting"),
    ("EVALSHA", "scripting"),
    ("EVAL_RO", "scripting"),
    ("SCRIPT", "scripting"),
    ("FUNCTION", "scripting"),
    ("FCALL", "scripting"),
    ("KEYS", "key-space scan"),
    ("SCAN", "key-space scan"),
    ("RANDOMKEY", "key-space scan"),
    ("SELECT", "changes database"),
    ("MOVE", "moves keys across databases"),
    ("RENAME", "renames keys"),
    ("RENAMENX", "renames keys"),
    ("MIGRATE", "moves keys to another server"),
    ("COPY", "copies keys"),
    ("RESTORE", "writes serialized data"),
    ("SORT", "can store anywhere"),
    ("MULTI", "transaction"),
    ("EXEC", "transaction"),
    ("WATCH", "transaction"),
    ("BLPOP", "blocking"),
    ("BRPOP", "blocking"),
    ("BLMOVE", "blocking"),
    ("BZPOPMIN", "blocking"),
    ("BZPOPMAX", "blocking"),
    ("WAIT", "blocking"),
    ("SUBSCRIBE", "connection state"),
    ("PSUBSCRIBE", "connection state"),
    ("AUTH", "connection state"),
    ("HELLO", "connection state"),
];

/// The spec of command `name`, in any case.
pub(crate) fn find_spec(name: &[u8]) -> Option<&'static CommandSpec> {
    SPECS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Checks a configured allow-list: every name must be a known command.
///
/// # Errors
///
/// For a command that can never be allowed, or one whose keys this policy does not
/// know.
pub fn resolve_allowed(names: &[String]) -> Result<HashSet<&'static str>, String> {
    names
        .iter()
        .map(|n| {
            let upper = n.to_ascii_uppercase();
            if let Some((_, why)) = NEVER.iter().find(|(c, _)| *c == upper) {
                return Err(format!("{upper} can never be allowed ({why} command)"));
            }
            find_spec(upper.as_bytes()).map(|s| s.name).ok_or_else(|| {
                format!("{upper} is not a command wasmrule knows the keys of; it cannot be allowed")
            })
        })
        .collect()
}
