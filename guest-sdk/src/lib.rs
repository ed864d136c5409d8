//! Write wasmrule rules in Rust.
//!
//! A rule is one plain function from an [`Event`] to a list of Redis [`Command`]s. The
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
//! #[rule(filters = ["a/+"])] // exactly one argument, the event
//! fn r(event: &Event, extra: u32) -> Command { cmd::del(event.topic()) }
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
//! - `abi`: the wire format of ABI v1 (`docs/abi.md`), shared by the wasm exports and the
//!   native [`testing`] path.

pub mod abi;
#[cfg(all(target_arch = "wasm32", feature = "bump-alloc"))]
mod alloc;
pub mod command;
pub mod event;
pub mod testing;
pub mod topic;

pub use command::{Arg, Command, cmd};
pub use event::{Event, PayloadEncoding};
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

/// Used by the code `#[rule]` generates. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi::{alloc, on_event, static_bytes};

    /// Compile-time check that a `#[rule]` function has the right shape; a mismatch is
    /// reported at the function, not deep in generated code.
    pub const fn check_handler<F, R>(_f: &F)
    where
        F: Fn(&crate::Event<'_>) -> R,
        R: crate::IntoOutput,
    {
    }
}
