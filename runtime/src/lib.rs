//! wasmrule: MQTT messages in, WebAssembly rules in the middle, Redis commands out.
//!
//! # Layout
//!
//! Data flow: `source/ (mqtt/ or the embedded broker/) -> dispatch/ (bounded queues,
//! worker threads) -> rules/engine/ -> commands -> tenancy/policy.rs -> sink/redis/
//! (-> sink/spill/ while Redis is down) -> ack.rs -> source/mqtt/acker.rs`, with
//! `rules/reload.rs` swapping the rule set the workers read. `docs/architecture.md`
//! walks it file by file.
//!
//! - `runtime.rs`: [`Runtime`], the stages started and stopped in order.
//! - `config/`: the file as a whole (composition, loading, [`Overrides`], checks
//!   across sections) -> [`Config`]; each stage's section is in that stage's `config.rs`.
//! - `source/mqtt/`: the connection to a broker: the reader (`mod.rs`), `client.rs`
//!   (MQTT 3.1.1 or 5), `acker.rs`, `follower.rs` and `subscriptions.rs`, `emqx.rs`
//!   (EMQX's event topics).
//! - `source/broker/`: the embedded broker: `hooks.rs` (one method per hook), `acl.rs`,
//!   `auth.rs` (the password file), `reason.rs`.
//! - `dispatch/`: routing (`mod.rs`: a topic to its worker, per-topic order), the
//!   worker's loop (`worker.rs`), dead letters (`dead_letter.rs`), canaries run beside
//!   their rule and compared (`canary.rs`).
//! - `rules/`: `engine/` (wasmtime, the rule ABI), `ruleset.rs` (the serving set),
//!   `reload.rs` (the directory watcher).
//! - `tenancy/`: `policy.rs`, `command_table.rs`, `cpu_budget.rs`, `quarantine.rs`.
//! - `sink/`: `batch.rs` (a worker's commands), `redis/` (`writer.rs`; `mod.rs` and
//!   `outage.rs`, the loops without and with the spill), `spill/` (`format.rs`,
//!   `log.rs`, `backlog.rs`, `sync.rs`).
//! - `ops/`: `metrics.rs`, `rule_metrics.rs`, `canary_metrics.rs`, `histogram.rs`, `exposition.rs`
//!   (`/metrics`), `status.rs`, `http.rs` (`/healthz`, `/readyz`, `/metrics`, the web
//!   console).
//! - `record/`: recordings of events and what rules made of them (`--record`), read
//!   back by `tools/replay.rs`; the output diff canaries use too.
//! - `tools/`: `rule_test.rs`, `scaffold.rs`, `demo.rs`, `simulate/` (the offline and
//!   demo commands); `offline.rs`, the tenant `eval` and `test` run a rule as.
//! - `event.rs`, `commands.rs`, `actions.rs`, `topic.rs` (over the shared `wasmrule-topic` grammar),
//!   `ack.rs`: what the stages hand each other.
//! - `tls.rs`: TLS files read and checked for rustls (the MQTT and Redis connections,
//!   the embedded broker's TLS listener).
//!
//! Modules are private; what callers (the binary, tests, benches) need is re-exported
//! here, test-only items `#[doc(hidden)]`.

mod ack;
mod actions;
mod commands;
mod config;
mod dispatch;
mod event;
mod ops;
pub mod record;
mod rules;
mod runtime;
mod sink;
mod source;
mod tenancy;
mod tls;
mod tools;
mod topic;

pub use crate::actions::{MqttAction, Publish};
pub use crate::commands::Commands;
pub use crate::config::{Config, DEFAULT_HTTP_ADDR, OnOrUnset, Overrides, RuntimeConfig};
pub use crate::event::{EventEncoder, Message, PublishProperties, complete_event, routing_topic};
pub use crate::ops::metrics::Metrics;
/// Every kind [`Metrics::failures`] counts (the dead-letter kinds and `quarantined`).
pub use crate::ops::rule_metrics::REASONS as FAILURE_KINDS;
/// The WebAssembly engine, with its own API: [`engine::Engine`], [`engine::Rule`],
/// [`engine::Limits`], the rule ABI ([`engine::abi`]) and the compiled-code cache.
pub use crate::rules::engine;
pub use crate::rules::{DEFAULT_RULES_DIR, RulesConfig, default_cache_dir};
pub use crate::runtime::{Runtime, run};
/// A worker's batch, the spill's log and backlog: for the spill bench.
#[doc(hidden)]
pub use crate::sink::batch::WriteBatch;
pub use crate::sink::redis::{DEFAULT_REDIS_URL, RedisConfig};
#[doc(hidden)]
pub use crate::sink::spill::{Backlog, SpillLog};
pub use crate::sink::spill::{DEFAULT_SPILL_MAX_BYTES, DEFAULT_SPILL_SEGMENT_BYTES, SpillConfig};
pub use crate::source::broker::{Acl, BrokerConfig, BrokerTls, DEFAULT_BROKER_ADDR, Retained};
pub use crate::source::mqtt::{DEFAULT_MQTT_URL, MqttConfig, MqttProtocol, parse_mqtt_url};
pub use crate::tenancy::command_table::{DEFAULT_ALLOWED, SPECS, resolve_allowed};
pub use crate::tenancy::policy::{InvokeLimits, Quarantine, TenantPolicy};
pub use crate::tenancy::{DEFAULT_CPU_SHARE_PERCENT, DEFAULT_CPU_WINDOW, Tenants};
pub use crate::tls::{ClientTls, TlsFiles};
pub use crate::tools::{
    demo, fixture_redis, offline, record as capture, replay, rule_test, scaffold, simulate, status,
};
pub use crate::topic::{matches as topic_matches, validate_filter};

/// EMQX's event topics -> events, for the EMQX fixture tests.
#[doc(hidden)]
pub use crate::source::mqtt::emqx::to_event as emqx_to_event;
