//! Where a rule runs: the WebAssembly [`engine`] (wasmtime, the rule ABI, limits), the
//! [`ruleset`] of rules serving now, and the rules directory watcher that [`reload`]s it.
//!
//! Also the `[rules]` and `[limits]` sections (`config.rs`).
//!
//! Owns compiling, validating, instantiating and invoking rules and swapping the serving
//! set. Does not own which events reach a rule (`dispatch/`), what a tenant's rule may
//! do (`tenancy/`), or writing its commands (`sink/`).

mod config;
mod debounce;
pub mod engine;
pub mod reload;
pub mod ruleset;

pub use config::{DEFAULT_RULES_DIR, RulesConfig, default_cache_dir};
pub(crate) use config::{RawLimits, RawRules};
