//! Write wasmrule rules in Rust.
//!
//! A rule is one plain function from an [`Event`] to a list of Redis [`Command`]s (rule
//! ABI v1), or from an [`Event`] and a [`Context`] for Redis reads to a list of
//! [`Action`]s: Redis commands, MQTT publishes, subscriptions and deliveries (ABI v2). The
//! [`rule`] attribute turns it into a complete wasmrule module: it emits the exports,
//! the manifest (name and topic filters) and the ABI version marker that the runtime
//! checks at load, and it does so only when compiling for `wasm32`, so the same function
//! can be unit-tested natively with plain `cargo test`.
//!
//! # Examples
//!
//! ```
//! use wasmrule_guest::{rule, cmd, Command, Event, RuleError};
//!
//! #[rule(filters = ["store-last-message/+"])]
//! fn store_last_message(event: &Event) -> Result<Vec<Command>, RuleError> {
//!     #[derive(serde::Deserialize)]
//!     struct Reading { temp: f64 }
//!     let reading: Reading = event.payload_json()?;
//!     let client = event.clientid().or(event.topic_last_level()).unwrap_or_default();
//!     Ok(vec![cmd::hset("emqx_messages", client, reading.temp)])
//! }
//!
//! // Natively, the rule is an ordinary function:
//! let event = Event::message("store-last-message/dev-1", r#"{"temp":21.5}"#);
//! let out = store_last_message(&event).unwrap();
//! assert_eq!(out[0].to_string(), "HSET emqx_messages dev-1 21.5");
//! ```
//!
//! A v2 rule takes a second argument, the [`Context`] it reads Redis through; the
//! macro then builds a module of ABI v2, which imports `wasmrule.redis_read` and
//! `wasmrule.redis_reply`. Natively the reads go to a [`testing::FakeRedis`]:
//!
//! ```
//! use wasmrule_guest::{Action, Context, Event, RuleError, action, cmd, rule, testing};
//!
//! #[rule(filters = ["readings/+"])]
//! fn remember(event: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
//!     let device = event.topic_last_level().ok_or("no device")?;
//!     let value = event.payload_text().ok_or("no payload")?;
//!     let key = format!("last:{device}");
//!     let mut out = vec![cmd::set(&key, value).into()];
//!     if ctx.get(&key)?.is_nil() {
//!         out.push(action::publish(format!("new/{device}"), value).qos(1).into());
//!     }
//!     Ok(out)
//! }
//!
//! let mut redis = testing::FakeRedis::new();
//! let first = remember(&Event::message("readings/d1", "20"), &mut redis.context()).unwrap();
//! assert_eq!(first.len(), 2);
//! redis.set("last:d1", "20");
//! let next = remember(&Event::message("readings/d1", "21"), &mut redis.context()).unwrap();
//! assert_eq!(next[0].to_string(), "SET last:d1 21");
//! assert_eq!(next.len(), 1);
//! ```
//!
//! # Misuse is a compile error
//!
//! `#[rule]` checks the function and its arguments when it compiles, on every target, so
//! a rule the runtime would refuse does not build. Each of these fails to compile:
//!
//! ```compile_fail
//! # use wasmrule_guest::{rule, cmd, Command, Event};
//! #[rule(filters = ["a/#/b"])] // `#` must be the last level
//! fn r(event: &Event) -> Command { cmd::del(event.topic()) }
//! ```
//!
//! ```compile_fail
//! # use wasmrule_guest::{rule, cmd, Command, Event};
//! #[rule] // no filters: the rule would never run
//! fn r(event: &Event) -> Command { cmd::del(event.topic()) }
//! ```
//!
//! ```compile_fail
//! # use wasmrule_guest::{rule, cmd, Command, Event};
//! #[rule(filters = ["a/+"])] // rules are synchronous
//! async fn r(event: &Event) -> Command { cmd::del(event.topic()) }
//! ```
//!
//! ```compile_fail
//! # use wasmrule_guest::{rule, cmd, Command, Event};
//! #[rule(filters = ["a/+"])] // the event, and for ABI v2 the context
//! fn r(event: &Event, extra: u32) -> Command { cmd::del(event.topic()) }
//! ```
//!
//! ```compile_fail
//! # use wasmrule_guest::{rule, cmd, Command, Context, Event};
//! #[rule(filters = ["a/+"])] // at most two arguments
//! fn r(event: &Event, ctx: &mut Context, extra: u32) -> Command { cmd::del(event.topic()) }
//! ```
//!
//! ```compile_fail
//! # use wasmrule_guest::{rule, Event};
//! #[rule(filters = ["a/+"])] // the result must be commands (see IntoOutput)
//! fn r(event: &Event) -> String { event.topic().to_owned() }
//! ```
//!
//! ```compile_fail
//! # use wasmrule_guest::{rule, cmd, Command, Event};
//! #[rule(filters = ["a/+"], name = "no spaces allowed")]
//! fn r(event: &Event) -> Command { cmd::del(event.topic()) }
//! ```
//!
//! # Layout
//!
//! - [`event`]: the event a rule receives (EMQX field names), parsed from the host's JSON.
//! - [`command`]: Redis commands with binary-safe arguments, and the [`cmd`] builders.
//! - [`topic`]: MQTT topic helpers.
//! - [`read`]: the [`Context`] a v2 rule reads Redis through, and its [`ReadError`]s.
//! - [`value`]: the typed [`Value`] a read returns.
//! - [`action`]: the [`Action`]s a v2 rule returns, and their builders.
//! - [`abi`]: the wire formats of ABI v1 and v2 (`docs/abi.md`), shared by the wasm
//!   exports and the native [`testing`] path.
//! - [`testing`]: running rules natively through the wire format; [`testing::FakeRedis`].

pub mod abi;
pub mod action;
#[cfg(all(target_arch = "wasm32", feature = "bump-alloc"))]
mod alloc;
pub mod command;
pub mod event;
pub mod read;
pub mod testing;
pub mod topic;
pub mod value;

pub use action::Action;
pub use command::{Arg, Command, cmd};
pub use event::{Event, PayloadEncoding};
pub use read::{Context, ReadError, Reads};
pub use value::Value;
pub use wasmrule_guest_macros::rule;

use std::fmt;

/// Why a rule could not handle an event. The message travels to the host, which logs it
/// with the rule and topic and counts it; keep it short and specific.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    message: String,
}

impl RuleError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        RuleError {
            message: message.into(),
        }
    }

    /// The message given to the host.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RuleError {}

impl From<serde_json::Error> for RuleError {
    fn from(e: serde_json::Error) -> Self {
        RuleError::new(e.to_string())
    }
}

impl From<String> for RuleError {
    fn from(message: String) -> Self {
        RuleError { message }
    }
}

impl From<&str> for RuleError {
    fn from(message: &str) -> Self {
        RuleError::new(message)
    }
}

/// What a rule function may return: a list of commands, or a `Result` of one.
///
/// Implemented for `Vec<Command>`, `Option<Command>`, `Command`, `()` (no commands) and
/// `Result<T, E>` where `T` is one of those and `E: Display`.
pub trait IntoOutput {
    /// The commands, or the error message for the host.
    fn into_output(self) -> Result<Vec<Command>, RuleError>;
}

impl IntoOutput for Vec<Command> {
    fn into_output(self) -> Result<Vec<Command>, RuleError> {
        Ok(self)
    }
}

impl IntoOutput for Command {
    fn into_output(self) -> Result<Vec<Command>, RuleError> {
        Ok(vec![self])
    }
}

impl IntoOutput for Option<Command> {
    fn into_output(self) -> Result<Vec<Command>, RuleError> {
        Ok(self.into_iter().collect())
    }
}

impl IntoOutput for () {
    fn into_output(self) -> Result<Vec<Command>, RuleError> {
        Ok(Vec::new())
    }
}

impl<T: IntoOutput, E: fmt::Display> IntoOutput for Result<T, E> {
    fn into_output(self) -> Result<Vec<Command>, RuleError> {
        match self {
            Ok(t) => t.into_output(),
            Err(e) => Err(RuleError::new(e.to_string())),
        }
    }
}

/// What a v2 rule function may return: a list of actions, or a `Result` of one.
///
/// Implemented for `Vec<Action>`, `Action`, `Option<Action>`, `Vec<Command>`,
/// `Command`, `()` (nothing to do) and `Result<T, E>` where `T` is one of those and
/// `E: Display`.
pub trait IntoActions {
    /// The actions, or the error message for the host.
    fn into_actions(self) -> Result<Vec<Action>, RuleError>;
}

impl IntoActions for Vec<Action> {
    fn into_actions(self) -> Result<Vec<Action>, RuleError> {
        Ok(self)
    }
}

impl IntoActions for Action {
    fn into_actions(self) -> Result<Vec<Action>, RuleError> {
        Ok(vec![self])
    }
}

impl IntoActions for Option<Action> {
    fn into_actions(self) -> Result<Vec<Action>, RuleError> {
        Ok(self.into_iter().collect())
    }
}

impl IntoActions for Vec<Command> {
    fn into_actions(self) -> Result<Vec<Action>, RuleError> {
        Ok(self.into_iter().map(Action::Redis).collect())
    }
}

impl IntoActions for Command {
    fn into_actions(self) -> Result<Vec<Action>, RuleError> {
        Ok(vec![Action::Redis(self)])
    }
}

impl IntoActions for () {
    fn into_actions(self) -> Result<Vec<Action>, RuleError> {
        Ok(Vec::new())
    }
}

impl<T: IntoActions, E: fmt::Display> IntoActions for Result<T, E> {
    fn into_actions(self) -> Result<Vec<Action>, RuleError> {
        match self {
            Ok(t) => t.into_actions(),
            Err(e) => Err(RuleError::new(e.to_string())),
        }
    }
}

/// Used by the code `#[rule]` generates. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::abi::v2::on_event as on_event_v2;
    pub use crate::abi::{alloc, on_event, static_bytes};

    /// Compile-time check that a v2 `#[rule]` function has the right shape.
    pub const fn check_handler_v2<F, R>(_f: &F)
    where
        F: Fn(&crate::Event<'_>, &mut crate::Context<'_>) -> R,
        R: crate::IntoActions,
    {
    }

    /// Compile-time check that a `#[rule]` function has the right shape; a mismatch is
    /// reported at the function, not deep in generated code.
    pub const fn check_handler<F, R>(_f: &F)
    where
        F: Fn(&crate::Event<'_>) -> R,
        R: crate::IntoOutput,
    {
    }
}
