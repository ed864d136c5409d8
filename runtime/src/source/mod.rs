//! Where events enter: a connection to an MQTT broker ([`mqtt`]) or the broker inside
//! wasmrule ([`broker`]). Each turns what it receives into [`Message`](crate::event::Message)s
//! and hands them to the [`Dispatcher`](crate::dispatch::Dispatcher).
//!
//! Owns the MQTT side: connections, subscriptions, acknowledgements to the broker, the
//! embedded broker's hooks and ACL. Does not own running rules (`rules/`, `dispatch/`)
//! or writing to Redis (`sink/`).

pub mod broker;
pub mod mqtt;
pub mod redis;
