//! wasmrule: MQTT messages in, WebAssembly rules in the middle, Redis commands out.
//!
//! # Layout
//!
//! Data flow: `source (mqtt/ or the embedded broker/) -> dispatch (bounded queues,
//! worker threads; tenancy checks) -> rules/engine -> commands -> sink/redis (-> sink/spill
//! while Redis is down) -> ack`, with `rules/reload.rs` swapping the rule set the
//! workers read.
//!
//! - `runtime.rs`: [`Runtime`], the stages started and stopped in order.
//! - `config/`: the file as a whole, loading and overrides -> [`Config`].
//! - `source/`: where events enter: `mqtt/` (connection, subscriptions, acks, EMQX's
//!   event topics) and `broker/` (the embedded broker and its hooks and ACL).
//! - `dispatch/`: events -> matching rules on worker threads, per-topic order.
//! - `rules/`: `engine/` (wasmtime, the rule ABI), `ruleset.rs` (the serving set),
//!   `reload.rs` (the directory watcher).
//! - `tenancy/`: per-tenant policy, CPU budget, quarantine.
//! - `sink/`: `batch.rs` (a worker's commands), `redis/` (the writer, outage and replay),
//!   `spill/` (the on-disk spill).
//! - `ops/`: metrics and the HTTP endpoint.
//! - `tools/`: `test`, `new`, `demo`, `simulate`.
//! - `event.rs`, `commands.rs`, `topic.rs`, `ack.rs`: what the stages pass each other.
//!
//! Modules are private; what callers need is re-exported here.

mod ack;
mod commands;
mod config;
mod dispatch;
mod event;
mod ops;
mod rules;
mod runtime;
mod sink;
mod source;
mod tenancy;
mod tools;
mod topic;

pub use crate::commands::Commands;
pub use crate::config::{Config, DEFAULT_HTTP_ADDR, OnOrUnset, Overrides, RuntimeConfig};
pub use crate::event::{EventEncoder, Message, PublishProperties, complete_event};
pub use crate::ops::metrics::Metrics;
/// The WebAssembly engine, with its own API: [`engine::Engine`], [`engine::Rule`],
/// [`engine::Limits`], the rule ABI ([`engine::abi`]) and the compiled-code cache.
pub use crate::rules::engine;
pub use crate::rules::{DEFAULT_RULES_DIR, RulesConfig, default_cache_dir};
pub use crate::runtime::{Runtime, run};
pub use crate::sink::batch::WriteBatch;
pub use crate::sink::redis::{DEFAULT_REDIS_URL, RedisConfig};
pub use crate::sink::spill::{
    Backlog, DEFAULT_SPILL_MAX_BYTES, DEFAULT_SPILL_SEGMENT_BYTES, SpillConfig, SpillLog,
};
pub use crate::source::broker::{Acl, BrokerConfig, DEFAULT_BROKER_ADDR};
pub use crate::source::mqtt::{DEFAULT_MQTT_URL, MqttConfig, MqttProtocol, parse_mqtt_url};
pub use crate::tenancy::command_table::{DEFAULT_ALLOWED, SPECS, resolve_allowed};
pub use crate::tenancy::policy::{InvokeLimits, Quarantine, TenantPolicy};
pub use crate::tenancy::{DEFAULT_CPU_SHARE_PERCENT, DEFAULT_CPU_WINDOW, Tenants};
pub use crate::tools::{demo, rule_test, scaffold, simulate};
pub use crate::topic::{matches as topic_matches, validate_filter};

/// EMQX's event topics -> events, for the EMQX fixture tests.
#[doc(hidden)]
pub use crate::source::mqtt::emqx::to_event as emqx_to_event;
