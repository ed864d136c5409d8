//! The read set of rule ABI v2 (`docs/abi.md`, "The read set"): the read-only Redis
//! commands a rule may run inside an invocation, with where their keys are, in the same
//! terms as the write table (`command_table.rs`). Nothing here enumerates or matches
//! keys (no `KEYS`, `SCAN`, `SORT`) or blocks; `SORT_RO`'s `BY` and `GET` patterns
//! name keys, and the policy namespaces them like keys (`policy.rs`). Applying it is `policy.rs`,
//! [`TenantPolicy::apply_read`](crate::tenancy::policy::TenantPolicy::apply_read).

use crate::tenancy::command_table::CommandSpec;

const fn read(name: &'static str, arity: i32, last_key: i32) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        first_key: 1,
        last_key,
        step: 1,
        channel: false,
    }
}

/// Every command a v2 rule may read with. Arity as Redis counts it (the name included,
/// negative means "at least"); every command's first key is its first argument.
pub const READ_SPECS: &[CommandSpec] = &[
    // Strings and keys.
    read("GET", 2, 1),
    read("MGET", -2, -1),
    read("STRLEN", 2, 1),
    read("GETRANGE", 4, 1),
    read("GETBIT", 3, 1),
    read("EXISTS", -2, -1),
    read("TYPE", 2, 1),
    read("TTL", 2, 1),
    read("PTTL", 2, 1),
    // Hashes.
    read("HGET", 3, 1),
    read("HMGET", -3, 1),
    read("HGETALL", 2, 1),
    read("HEXISTS", 3, 1),
    read("HLEN", 2, 1),
    read("HKEYS", 2, 1),
    read("HVALS", 2, 1),
    // Lists.
    read("LRANGE", 4, 1),
    read("LLEN", 2, 1),
    read("LINDEX", 3, 1),
    // Sets.
    read("SMEMBERS", 2, 1),
    read("SISMEMBER", 3, 1),
    read("SMISMEMBER", -3, 1),
    read("SCARD", 2, 1),
    // Sorted sets. ZRANGE's STORE-less forms only: ZRANGESTORE is a write.
    read("ZRANGE", -4, 1),
    read("ZRANGEBYSCORE", -4, 1),
    read("ZREVRANGE", -4, 1),
    read("ZSCORE", 3, 1),
    read("ZMSCORE", -3, 1),
    read("ZCARD", 2, 1),
    read("ZCOUNT", 4, 1),
    read("ZRANK", -3, 1),
    // Streams, HyperLogLog.
    read("XRANGE", -4, 1),
    read("XREVRANGE", -4, 1),
    read("XLEN", 2, 1),
    read("PFCOUNT", -2, -1),
    // One read for many keys: a list, set or sorted set of ids, and for each id the
    // string or hash fields its `GET` patterns name (stored messages, docs/abi.md).
    read("SORT_RO", -2, 1),
];

/// `SORT_RO`'s options whose argument is a key pattern.
pub(crate) const SORT_PATTERN_OPTIONS: [&str; 2] = ["BY", "GET"];

/// The read spec of command `name`, in any case.
pub(crate) fn find_read_spec(name: &[u8]) -> Option<&'static CommandSpec> {
    READ_SPECS
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/abi.md's table and this one list the same commands with the same arities.
    #[test]
    fn the_docs_list_the_read_set() {
        let doc = include_str!("../../../docs/abi.md");
        let table = &doc[doc.find("**The read set**").unwrap()..];
        let table = &table[..table.find("**Read your writes.**").unwrap()];
        let mut documented = Vec::new();
        for row in table.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            for pair in [(cells[1], cells[2]), (cells[4], cells[5])] {
                for name in pair.0.split(", ") {
                    let name = name.trim_matches('`');
                    if !name.is_empty() {
                        documented.push((name.to_owned(), pair.1.parse::<i32>().unwrap()));
                    }
                }
            }
        }
        documented.sort();
        let mut ours: Vec<(String, i32)> = READ_SPECS
            .iter()
            .map(|s| (s.name.to_owned(), s.arity))
            .collect();
        ours.sort();
        assert_eq!(documented, ours);
    }

    #[test]
    fn no_write_or_scan_is_a_read() {
        for name in [
            "SET",
            "KEYS",
            "SCAN",
            "SORT",
            "ZRANGESTORE",
            "EVAL",
            "BLPOP",
        ] {
            assert!(find_read_spec(name.as_bytes()).is_none(), "{name}");
        }
        assert!(find_read_spec(b"hgetall").is_some());
    }
}
