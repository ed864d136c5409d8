//! The commands that do not serve: [`rule_test`] (`wasmrule test`), [`scaffold`]
//! (`wasmrule new`), [`demo`] (`wasmrule demo`), [`simulate`] (`wasmrule simulate`) and
//! [`status`] (`wasmrule status`); [`offline`], the tenant `eval` and `test` run a rule
//! as, and [`fixture_redis`], the Redis their ABI v2 rules read from.
//!
//! Each builds on the library's public pieces; nothing in the serving path uses them.

pub mod demo;
pub mod fixture_redis;
pub mod offline;
pub mod record;
pub mod replay;
pub mod rule_test;
pub mod scaffold;
pub mod simulate;
pub mod status;
