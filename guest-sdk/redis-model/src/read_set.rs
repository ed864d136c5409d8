//! The read set of rule ABI v2 (`docs/abi.md`): which commands a rule may read with,
//! their arities as Redis counts them (the name included; negative means "at least"),
//! and which arguments are keys. [`check`] is what a request must pass before it runs.

use crate::Failure;

/// The longest key a read may name, as for writes.
pub const MAX_KEY_BYTES: usize = 4096;

/// Where a command's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// The first argument after the name.
    First,
    /// Every argument after the name (`MGET`, `EXISTS`, `PFCOUNT`).
    All,
}

/// The read set: name (upper case), arity, keys. The table in `docs/abi.md`.
pub const READ_SET: &[(&str, i32, Keys)] = &[
    ("GET", 2, Keys::First),
    ("MGET", -2, Keys::All),
    ("STRLEN", 2, Keys::First),
    ("GETRANGE", 4, Keys::First),
    ("EXISTS", -2, Keys::All),
    ("TYPE", 2, Keys::First),
    ("TTL", 2, Keys::First),
    ("PTTL", 2, Keys::First),
    ("HGET", 3, Keys::First),
    ("HMGET", -3, Keys::First),
    ("HGETALL", 2, Keys::First),
    ("HEXISTS", 3, Keys::First),
    ("HLEN", 2, Keys::First),
    ("HKEYS", 2, Keys::First),
    ("HVALS", 2, Keys::First),
    ("LRANGE", 4, Keys::First),
    ("LLEN", 2, Keys::First),
    ("LINDEX", 3, Keys::First),
    ("SMEMBERS", 2, Keys::First),
    ("SISMEMBER", 3, Keys::First),
    ("SMISMEMBER", -3, Keys::First),
    ("SCARD", 2, Keys::First),
    ("ZRANGE", -4, Keys::First),
    ("ZRANGEBYSCORE", -4, Keys::First),
    ("ZREVRANGE", -4, Keys::First),
    ("ZSCORE", 3, Keys::First),
    ("ZMSCORE", -3, Keys::First),
    ("ZCARD", 2, Keys::First),
    ("ZCOUNT", 4, Keys::First),
    ("ZRANK", -3, Keys::First),
    ("XRANGE", -4, Keys::First),
    ("XREVRANGE", -4, Keys::First),
    ("XLEN", 2, Keys::First),
    ("PFCOUNT", -2, Keys::All),
    ("GETBIT", 3, Keys::First),
    ("SORT_RO", -2, Keys::First),
];

/// The arity and key positions of `name` (any case), if it is in the read set.
pub fn arity(name: &[u8]) -> Option<(i32, Keys)> {
    READ_SET
        .iter()
        .find(|(n, _, _)| n.as_bytes().eq_ignore_ascii_case(name))
        .map(|&(_, a, k)| (a, k))
}

/// Checks a request (`args[0]` is the command name) against the read set: the
/// command, its number of arguments and the length of its keys.
///
/// # Errors
///
/// [`Failure::NotAllowed`] for a command outside the read set, [`Failure::BadRequest`]
/// for an empty request, a wrong number of arguments or a key over [`MAX_KEY_BYTES`].
pub fn check(args: &[&[u8]]) -> Result<(), Failure> {
    let (name, rest) = args.split_first().ok_or(Failure::BadRequest)?;
    let (arity, keys) = arity(name).ok_or(Failure::NotAllowed)?;
    let n = args.len() as i32;
    let fits = if arity >= 0 { n == arity } else { n >= -arity };
    if !fits {
        return Err(Failure::BadRequest);
    }
    let key_args = match keys {
        Keys::First => &rest[..1],
        Keys::All => rest,
    };
    if key_args.iter().any(|k| k.len() > MAX_KEY_BYTES) {
        return Err(Failure::BadRequest);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arities_are_checked() {
        assert_eq!(check(&[b"get", b"k"]), Ok(()));
        assert_eq!(check(&[b"GET"]), Err(Failure::BadRequest));
        assert_eq!(check(&[b"GET", b"a", b"b"]), Err(Failure::BadRequest));
        assert_eq!(check(&[b"MGET", b"a", b"b", b"c"]), Ok(()));
        assert_eq!(check(&[b"ZRANGE", b"z", b"0"]), Err(Failure::BadRequest));
        assert_eq!(check(&[]), Err(Failure::BadRequest));
    }

    #[test]
    fn only_the_read_set_is_allowed() {
        for cmd in [&b"SET"[..], b"KEYS", b"SCAN", b"SORT", b"EVAL", b"DEL"] {
            assert_eq!(
                check(&[cmd, b"k", b"v"]),
                Err(Failure::NotAllowed),
                "{cmd:?}"
            );
        }
    }

    #[test]
    fn long_keys_are_bad_requests() {
        let long = [b'k'; MAX_KEY_BYTES + 1];
        assert_eq!(check(&[b"GET", &long]), Err(Failure::BadRequest));
        assert_eq!(check(&[b"MGET", b"a", &long]), Err(Failure::BadRequest));
        // Only keys count: a long field is Redis's business.
        assert_eq!(check(&[b"HGET", b"h", &long]), Ok(()));
    }
}
