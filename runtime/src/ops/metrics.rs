//! Counters the runtime keeps about itself. The process-wide ones are plain atomics,
//! cheap to bump from any thread and read by tests and the demo; the per-rule and
//! per-tenant series are in [`Metrics::rules`] (`rule_metrics.rs`), the histograms in
//! `histogram.rs`. `exposition.rs` turns it all into `/metrics` with prometheus-client.
//!
//! Which library, and why: prometheus-client (the Prometheus project's Rust client) over
//! `metrics` + `metrics-exporter-prometheus`. The latter's handles are resolved through
//! a global recorder and its series cannot be removed (only expire when idle), while a
//! rule that is removed must lose its series at once; prometheus-client has typed label
//! sets, `Family::remove`, and `Collector`s that export values kept elsewhere (these
//! atomics) without copying them into the library's types.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;

use super::histogram::Histogram;
use super::rule_metrics::RuleFamilies;
use crate::ack::AckTracker;

/// Every counter by its exported name (without `wasmrule_` and `_total`, which the
/// encoder adds) and help text, in `/metrics` order.
#[allow(clippy::type_complexity)]
pub(super) const COUNTERS: &[(&str, &str, fn(&Metrics) -> &AtomicU64)] = &[
    (
        "record_events",
        "events written to the recording (--record)",
        |m| &m.record.events,
    ),
    (
        "record_bytes",
        "bytes written to the recording, record headers included",
        |m| &m.record.bytes,
    ),
    (
        "record_lost",
        "events not recorded because the recorder fell behind or could not write",
        |m| &m.record.lost,
    ),
    ("messages_received", "MQTT messages handed to rules", |m| {
        &m.messages_received
    }),
    (
        "messages_acked",
        "QoS 1/2 messages acknowledged after their writes",
        |m| &m.messages_acked,
    ),
    (
        "duplicates_dropped",
        "overlapping-subscription copies dropped",
        |m| &m.duplicates_dropped,
    ),
    ("messages_unmatched", "messages that matched no rule", |m| {
        &m.messages_unmatched
    }),
    ("invocations", "rule invocations", |m| &m.invocations),
    ("invocation_errors", "failed rule invocations", |m| {
        &m.invocation_errors
    }),
    ("commands_written", "commands Redis confirmed", |m| {
        &m.commands_written
    }),
    ("command_errors", "commands Redis refused", |m| {
        &m.command_errors
    }),
    (
        "redis_retries",
        "pipelines resent after a Redis failure",
        |m| &m.redis_retries,
    ),
    ("rule_loads", "rule versions loaded", |m| &m.rules_loaded),
    ("rule_load_errors", "rule files that failed to load", |m| {
        &m.load_errors
    }),
    (
        "spill_batches",
        "QoS 0 batches written to the spill while Redis was unreachable",
        |m| &m.spill_batches,
    ),
    ("spill_bytes", "bytes written to the spill", |m| {
        &m.spill_bytes
    }),
    (
        "spill_replayed_batches",
        "spilled batches replayed to Redis",
        |m| &m.spill_replayed,
    ),
    (
        "spill_full",
        "times the spill was full and wasmrule fell back to backpressure",
        |m| &m.spill_full,
    ),
    (
        "spill_dropped_records",
        "spilled records dropped on replay as torn or damaged",
        |m| &m.spill_dropped,
    ),
    (
        "redis_reads",
        "Redis reads v2 rules made (docs/abi.md)",
        |m| &m.redis_reads,
    ),
    (
        "mqtt_actions",
        "MQTT actions of v2 rules taken (publish, subscribe, unsubscribe, deliver)",
        |m| &m.mqtt_actions,
    ),
    (
        "quarantined_skips",
        "events not given to a rule because it was quarantined",
        |m| &m.quarantined_skips,
    ),
    (
        "dead_letters",
        "events written to a tenant's dead-letter stream",
        |m| &m.dead_letters,
    ),
    (
        "source_events_dropped",
        "embedded-broker events produced while shutting down, not run",
        |m| &m.source_events_dropped,
    ),
    (
        "events_shed",
        "events not run because their tenant was over its CPU share",
        |m| &m.events_shed,
    ),
    (
        "host_stalls",
        "invocations the host starved of CPU past the wall-clock backstop, run again",
        |m| &m.host_stalls,
    ),
    (
        "emqx_events_malformed",
        "EMQX client-event messages skipped: unreadable payload",
        |m| &m.emqx_events_malformed,
    ),
    (
        "mqtt_bytes_received",
        "payload bytes of the MQTT messages received",
        |m| &m.bytes_received,
    ),
    (
        "redis_pipelines",
        "pipelines sent to Redis (a resend counts again)",
        |m| &m.redis_pipelines,
    ),
    (
        "redis_flushes",
        "flushes sent to Redis: one pipeline each, or one per master in a cluster",
        |m| &m.redis_flushes,
    ),
    (
        "redis_redirects",
        "Redis Cluster MOVED and ASK replies followed",
        |m| &m.redis_redirects,
    ),
    (
        "redis_reconnects",
        "connections to Redis made after one was lost or refused",
        |m| &m.redis_reconnects,
    ),
    (
        "broker_client_connections",
        "clients that connected to the embedded broker",
        |m| &m.broker_connections,
    ),
    (
        "broker_subscriptions",
        "SUBSCRIBE filters the embedded broker accepted",
        |m| &m.broker_subscriptions,
    ),
];

/// Counters since start. All monotonic but the gauges.
#[derive(Debug)]
pub struct Metrics {
    /// MQTT messages handed to the dispatcher.
    pub messages_received: AtomicU64,
    /// Copies of a message dropped because an overlapping subscription delivered it too.
    pub duplicates_dropped: AtomicU64,
    /// Messages that matched no rule.
    pub messages_unmatched: AtomicU64,
    /// Rule invocations, successful or not.
    pub invocations: AtomicU64,
    /// Invocations that failed (trap, limit, ABI violation, rule error).
    pub invocation_errors: AtomicU64,
    /// Commands Redis confirmed.
    pub commands_written: AtomicU64,
    /// Commands Redis answered with an error (wrong type, bad arguments).
    pub command_errors: AtomicU64,
    /// Pipelines sent again after a connection failure.
    pub redis_retries: AtomicU64,
    /// Rule versions loaded (first loads and replacements).
    pub rules_loaded: AtomicU64,
    /// Rule files that failed to load.
    pub load_errors: AtomicU64,
    /// QoS 1/2 messages acknowledged to the broker after their writes.
    pub messages_acked: AtomicU64,
    /// Connected to the MQTT broker now.
    pub mqtt_connected: AtomicBool,
    /// Connected to Redis now.
    pub redis_connected: AtomicBool,
    /// Events not given to a rule because it was quarantined.
    pub quarantined_skips: AtomicU64,
    /// Events written to a tenant's dead-letter stream.
    pub dead_letters: AtomicU64,
    /// What the recorder wrote and lost (`--record`, `record/writer.rs`).
    pub record: std::sync::Arc<crate::record::writer::RecordStats>,
    /// Batches of QoS 0 messages written to the spill while Redis was unreachable.
    pub spill_batches: AtomicU64,
    /// Bytes of batches written to the spill (encoded, without record headers).
    pub spill_bytes: AtomicU64,
    /// Spilled batches replayed to Redis.
    pub spill_replayed: AtomicU64,
    /// Times the spill was full and wasmrule fell back to backpressure.
    pub spill_full: AtomicU64,
    /// Spilled records dropped as torn or damaged on replay.
    pub spill_dropped: AtomicU64,
    /// Redis reads of v2 rules sent to the writer.
    pub redis_reads: AtomicU64,
    /// MQTT actions of v2 rules taken.
    pub mqtt_actions: AtomicU64,
    /// Gauge: bytes the spill's files take on disk now.
    pub spill_disk_bytes: AtomicU64,
    /// Gauge: batches waiting in memory behind the spill (QoS 1/2, or not fitting).
    pub spill_held: AtomicU64,
    /// Events not run because their tenant was over its CPU share (`cpu_budget.rs`).
    pub events_shed: AtomicU64,
    /// Invocations the wall-clock backstop ended because the host gave them too little
    /// CPU (not the rule's failure; each was run again, `engine/deadline.rs`).
    pub host_stalls: AtomicU64,
    /// Broker events (embedded broker) produced while shutting down, after the
    /// dispatcher had stopped taking them.
    pub source_events_dropped: AtomicU64,
    /// Messages on EMQX client-event topics whose payload could not be read
    /// (`mqtt.emqx_events`); skipped and acknowledged.
    pub emqx_events_malformed: AtomicU64,
    /// Payload bytes of the messages received (MQTT or the embedded broker).
    pub bytes_received: AtomicU64,
    /// Pipelines sent to Redis.
    pub redis_pipelines: AtomicU64,
    /// Flushes sent to Redis (one pipeline, or one per cluster master).
    pub redis_flushes: AtomicU64,
    /// Redis Cluster redirects (`MOVED`, `ASK`) followed.
    pub redis_redirects: AtomicU64,
    /// Connections to Redis made after one was lost or could not be made.
    pub redis_reconnects: AtomicU64,
    /// Replies "not now" (`LOADING`, `BUSY`, ...) to commands, sent again.
    pub redis_busy: AtomicU64,
    /// Clients that connected to the embedded broker.
    pub broker_connections: AtomicU64,
    /// Clients that disconnected from the embedded broker.
    pub broker_disconnections: AtomicU64,
    /// SUBSCRIBE filters the embedded broker accepted.
    pub broker_subscriptions: AtomicU64,
    /// Commands per pipeline sent to Redis.
    pub redis_pipeline_commands: Histogram,
    /// Time from sending a pipeline to Redis to its replies.
    pub redis_write_seconds: Histogram,
    /// Time from a message's receipt to Redis' confirmation of the last write of its
    /// batch, observed once per batch for its oldest message.
    pub message_latency_seconds: Histogram,
    /// Messages the embedded broker dropped, by reason (`drop_reason` of
    /// `source/broker/reason.rs`).
    pub broker_drops: prometheus_client::metrics::family::Family<DropLabels, Counter>,
    /// Per-rule and per-tenant series.
    pub rules: Arc<RuleFamilies>,
    /// Canary series (`canary_metrics.rs`).
    pub canaries: Arc<super::canary_metrics::CanaryFamilies>,
    // The source's acknowledgement tracker, for the acks pending (external broker).
    acks: OnceLock<Arc<AckTracker>>,
}

/// The label of `wasmrule_broker_dropped_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DropLabels {
    pub reason: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            messages_received: AtomicU64::new(0),
            duplicates_dropped: AtomicU64::new(0),
            messages_unmatched: AtomicU64::new(0),
            invocations: AtomicU64::new(0),
            invocation_errors: AtomicU64::new(0),
            commands_written: AtomicU64::new(0),
            command_errors: AtomicU64::new(0),
            redis_retries: AtomicU64::new(0),
            rules_loaded: AtomicU64::new(0),
            load_errors: AtomicU64::new(0),
            messages_acked: AtomicU64::new(0),
            mqtt_connected: AtomicBool::new(false),
            redis_connected: AtomicBool::new(false),
            quarantined_skips: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            record: std::sync::Arc::default(),
            spill_batches: AtomicU64::new(0),
            spill_bytes: AtomicU64::new(0),
            spill_replayed: AtomicU64::new(0),
            spill_full: AtomicU64::new(0),
            spill_dropped: AtomicU64::new(0),
            redis_reads: AtomicU64::new(0),
            mqtt_actions: AtomicU64::new(0),
            spill_disk_bytes: AtomicU64::new(0),
            spill_held: AtomicU64::new(0),
            events_shed: AtomicU64::new(0),
            host_stalls: AtomicU64::new(0),
            source_events_dropped: AtomicU64::new(0),
            emqx_events_malformed: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            redis_pipelines: AtomicU64::new(0),
            redis_flushes: AtomicU64::new(0),
            redis_redirects: AtomicU64::new(0),
            redis_reconnects: AtomicU64::new(0),
            redis_busy: AtomicU64::new(0),
            broker_connections: AtomicU64::new(0),
            broker_disconnections: AtomicU64::new(0),
            broker_subscriptions: AtomicU64::new(0),
            redis_pipeline_commands: Histogram::sizes(),
            redis_write_seconds: Histogram::seconds(),
            message_latency_seconds: Histogram::seconds(),
            broker_drops: Default::default(),
            rules: Arc::default(),
            canaries: Arc::default(),
            acks: OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge, or a counter kept elsewhere.
    pub fn store(counter: &AtomicU64, v: u64) {
        counter.store(v, Ordering::Relaxed);
    }

    /// Failed invocations (or, for `cpu_budget`, shed events) of `tenant`'s rules of
    /// `kind` so far.
    pub fn failures(&self, tenant: &str, kind: &str) -> u64 {
        self.rules.failures(tenant, kind)
    }

    /// Counts a message the embedded broker dropped.
    pub fn broker_dropped(&self, reason: &str) {
        self.broker_drops
            .get_or_create(&DropLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Hands over the source's acknowledgement tracker, whose pending count
    /// `/metrics` shows.
    pub fn track_acks(&self, tracker: Arc<AckTracker>) {
        let _ = self.acks.set(tracker);
    }

    /// QoS 1/2 messages received from the external broker and not yet acknowledged.
    pub fn acks_pending(&self) -> u64 {
        self.acks.get().map_or(0, |t| t.outstanding() as u64)
    }

    /// Sets a connection flag.
    pub fn set(flag: &AtomicBool, value: bool) {
        flag.store(value, Ordering::Relaxed);
    }

    /// Reads a connection flag.
    pub fn is(flag: &AtomicBool) -> bool {
        flag.load(Ordering::Relaxed)
    }

    /// Every gauge by its exported name and help text, with its value now.
    pub(super) fn gauges(&self) -> [(&'static str, &'static str, u64); 6] {
        [
            (
                "mqtt_connected",
                "1 when connected to the broker",
                Self::is(&self.mqtt_connected) as u64,
            ),
            (
                "redis_connected",
                "1 when connected to Redis",
                Self::is(&self.redis_connected) as u64,
            ),
            (
                "spill_disk_bytes",
                "bytes the spill takes on disk now",
                Self::get(&self.spill_disk_bytes),
            ),
            (
                "spill_held_batches",
                "batches waiting in memory behind the spill",
                Self::get(&self.spill_held),
            ),
            (
                "mqtt_acks_pending",
                "QoS 1/2 messages from the broker in flight: received, not yet acknowledged (their writes are not all confirmed)",
                self.acks_pending(),
            ),
            (
                "broker_clients",
                "clients connected to the embedded broker now",
                Self::get(&self.broker_connections)
                    .saturating_sub(Self::get(&self.broker_disconnections)),
            ),
        ]
    }
}
