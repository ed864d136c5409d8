//! An in-memory model of the Redis commands a rule may read with under rule ABI v2
//! (`docs/abi.md`, "The read set"), written once for the two places that answer reads
//! without a Redis server: the guest SDK's `testing::FakeRedis` (rule logic with reads
//! under plain `cargo test`) and the runtime's offline tools (`wasmrule eval` and
//! `wasmrule test` answer a case's reads from its `"redis"` fixture).
//!
//! It owns the data types ([`Data`]), the read set with its arities ([`READ_SET`]) and
//! what each command answers for given data ([`Store::read`]), following Redis 7.0's
//! replies (the order of hash fields and set members is insertion order, as a small
//! hash or set has in Redis). It does not own tenancy: namespacing keys and refusing
//! reads by policy is the host's (`runtime/src/tenancy/`), and the guest sees its keys
//! without the tenant's prefix.
//!
//! Time does not pass in the model: a key's TTL is what the fixture says.
//!
//! # Layout
//!
//! - [`store`]: the keys and their typed values, and the builders tests use.
//! - [`read_set`]: the commands, their arities, and the checks before running one.
//! - `exec` (private): each command's answer.
//! - `write` (private): [`Store::write`], the common write commands, so that a test can
//!   feed an event's commands back before the next event reads.
//!
//! `no_std` with `alloc` and without dependencies, so that it builds for every target
//! a rule does.

#![no_std]

extern crate alloc;

mod exec;
pub mod read_set;
pub mod store;
mod write;

pub use read_set::{MAX_KEY_BYTES, READ_SET, arity};
pub use store::{Data, Store};
pub use write::WriteError;

use alloc::vec::Vec;

/// One reply, typed as the ABI carries it: nil, an integer, a bulk or status string, or
/// an array of replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A missing key, field or member.
    Nil,
    /// An integer reply.
    Int(i64),
    /// A bulk or status string (scores are strings, as Redis sends them).
    Bulk(Vec<u8>),
    /// An array of replies.
    Array(Vec<Reply>),
}

/// Why a read got no reply. The names and meanings are the ABI's error codes (the
/// host adds `over_budget` and `unavailable`, which a model cannot produce by itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not in the read set (ABI code -1, `not_allowed`).
    NotAllowed,
    /// Wrong number of arguments, an empty request or a key over 4096 bytes (-2,
    /// `bad_request`).
    BadRequest,
    /// What Redis answers with an error: `WRONGTYPE`, a value that is not a number
    /// or an unknown option (-5, `redis_error`).
    RedisError,
}
