//! Counters the runtime keeps about itself. Plain atomics: cheap to bump from any thread,
//! read by tests, the demo's live view, and `/metrics` (`http.rs`, Prometheus text
//! format from [`Metrics::prometheus`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Every counter by its exported name (without `wasmrule_`) and help text, in
/// `/metrics` order.
#[allow(clippy::type_complexity)]
const COUNTERS: &[(&str, &str, fn(&Metrics) -> &AtomicU64)] = &[
    (
        "messages_received_total",
        "MQTT messages handed to rules",
        |m| &m.messages_received,
    ),
    (
        "messages_acked_total",
        "QoS 1/2 messages acknowledged after their writes",
        |m| &m.messages_acked,
    ),
    (
        "duplicates_dropped_total",
        "overlapping-subscription copies dropped",
        |m| &m.duplicates_dropped,
    ),
    (
        "messages_unmatched_total",
        "messages that matched no rule",
        |m| &m.messages_unmatched,
    ),
    ("invocations_total", "rule invocations", |m| &m.invocations),
    ("invocation_errors_total", "failed rule invocations", |m| {
        &m.invocation_errors
    }),
    ("commands_written_total", "commands Redis confirmed", |m| {
        &m.commands_written
    }),
    ("command_errors_total", "commands Redis refused", |m| {
        &m.command_errors
    }),
    (
        "redis_retries_total",
        "pipelines resent after a Redis failure",
        |m| &m.redis_retries,
    ),
    ("rule_loads_total", "rule versions loaded", |m| {
        &m.rules_loaded
    }),
    (
        "rule_load_errors_total",
        "rule files that failed to load",
        |m| &m.load_errors,
    ),
    (
        "spill_batches_total",
        "QoS 0 batches written to the spill while Redis was unreachable",
        |m| &m.spill_batches,
    ),
    ("spill_bytes_total", "bytes written to the spill", |m| {
        &m.spill_bytes
    }),
    (
        "spill_replayed_batches_total",
        "spilled batches replayed to Redis",
        |m| &m.spill_replayed,
    ),
    (
        "spill_full_total",
        "times the spill was full and wasmrule fell back to backpressure",
        |m| &m.spill_full,
    ),
    (
        "spill_dropped_records_total",
        "spilled records dropped on replay as torn or damaged",
        |m| &m.spill_dropped,
    ),
    (
        "redis_reads_total",
        "Redis reads v2 rules made (docs/abi.md)",
        |m| &m.redis_reads,
    ),
    (
        "mqtt_actions_total",
        "MQTT actions of v2 rules taken (publish, subscribe, unsubscribe, deliver)",
        |m| &m.mqtt_actions,
    ),
    (
        "quarantined_skips_total",
        "events not given to a rule because it was quarantined",
        |m| &m.quarantined_skips,
    ),
    (
        "dead_letters_total",
        "events written to a tenant's dead-letter stream",
        |m| &m.dead_letters,
    ),
    (
        "source_events_dropped_total",
        "embedded-broker events produced while shutting down, not run",
        |m| &m.source_events_dropped,
    ),
    (
        "events_shed_total",
        "events not run because their tenant was over its CPU share",
        |m| &m.events_shed,
    ),
    (
        "host_stalls_total",
        "invocations the host starved of CPU past the wall-clock backstop, run again",
        |m| &m.host_stalls,
    ),
    (
        "emqx_events_malformed_total",
        "EMQX client-event messages skipped: unreadable payload",
        |m| &m.emqx_events_malformed,
    ),
];

/// A rule serving now, as `/metrics` labels it.
#[derive(Debug, Clone, Copy)]
pub struct RuleInfo<'a> {
    pub tenant: &'a str,
    /// The rule's id (its path under the rules directory, without `.wasm`).
    pub rule: &'a str,
    /// The manifest's version, the author's (`""` if none).
    pub version: &'a str,
    /// How many times this id has been loaded since start (1, then 2 after a
    /// replacement).
    pub generation: u64,
}

/// Counters since start. All monotonic.
#[derive(Debug, Default)]
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
    /// Failed invocations, and shed events (`cpu_budget`), by tenant and kind:
    /// `timeout`, `memory`, `command_not_allowed`...
    failures_by_kind: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
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

    /// Counts one failed invocation of a tenant's rule.
    pub fn failure(&self, tenant: &str, kind: &'static str) {
        Self::add(&self.invocation_errors, 1);
        self.count_kind(tenant, kind);
    }

    /// Counts one event shed because its tenant was over its CPU share.
    pub fn shed(&self, tenant: &str) {
        Self::add(&self.events_shed, 1);
        self.count_kind(tenant, crate::tenancy::cpu_budget::OverBudget::KIND);
    }

    fn by_kind(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<&'static str, u64>>> {
        // Plain counters: consistent after a panic elsewhere.
        self.failures_by_kind
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn count_kind(&self, tenant: &str, kind: &'static str) {
        let mut m = self.by_kind();
        // Look up by &str first: no allocation once the tenant has been seen.
        let kinds = match m.get_mut(tenant) {
            Some(k) => k,
            None => m.entry(tenant.to_owned()).or_default(),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }

    /// Failed invocations (or, for `cpu_budget`, shed events) of `tenant`'s rules of
    /// `kind` so far.
    pub fn failures(&self, tenant: &str, kind: &str) -> u64 {
        self.by_kind()
            .get(tenant)
            .and_then(|k| k.get(kind))
            .copied()
            .unwrap_or(0)
    }

    /// Sets a connection flag.
    pub fn set(flag: &AtomicBool, value: bool) {
        flag.store(value, Ordering::Relaxed);
    }

    /// Reads a connection flag.
    pub fn is(flag: &AtomicBool) -> bool {
        flag.load(Ordering::Relaxed)
    }

    /// The counters in Prometheus text exposition format, with one
    /// `wasmrule_rule_info` series per rule serving now.
    pub fn prometheus(&self, serving: &[RuleInfo<'_>]) -> String {
        let rules_loaded_now = serving.len();
        let mut out = String::new();
        for (name, help, counter) in COUNTERS {
            out.push_str(&format!(
                "# HELP wasmrule_{name} {help}\n# TYPE wasmrule_{name} counter\nwasmrule_{name} {}\n",
                Self::get(counter(self))
            ));
        }
        out.push_str(
            "# HELP wasmrule_invocation_failures_total failed invocations and shed events by tenant and kind\n\
             # TYPE wasmrule_invocation_failures_total counter\n",
        );
        for (tenant, kinds) in self.by_kind().iter() {
            for (kind, n) in kinds {
                out.push_str(&format!(
                    "wasmrule_invocation_failures_total{{tenant={tenant:?},kind=\"{kind}\"}} {n}\n"
                ));
            }
        }
        for (name, help, v) in self.gauges(rules_loaded_now) {
            out.push_str(&format!(
                "# HELP wasmrule_{name} {help}\n# TYPE wasmrule_{name} gauge\nwasmrule_{name} {v}\n"
            ));
        }
        out.push_str(
            "# HELP wasmrule_rule_info rules serving now: version is the manifest's (the \
             author's), generation counts the loads of the file since start\n\
             # TYPE wasmrule_rule_info gauge\n",
        );
        for r in serving {
            out.push_str(&format!(
                "wasmrule_rule_info{{tenant={:?},rule={:?},version={:?},generation=\"{}\"}} 1\n",
                r.tenant, r.rule, r.version, r.generation
            ));
        }
        out
    }

    /// Every gauge by its exported name and help text, with its value now.
    fn gauges(&self, rules_loaded_now: usize) -> [(&'static str, &'static str, u64); 5] {
        [
            ("rules", "rules serving now", rules_loaded_now as u64),
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
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter in the table is exported with its own value.
    #[test]
    fn every_counter_is_exported() {
        let m = Metrics::default();
        for (i, (_, _, counter)) in COUNTERS.iter().enumerate() {
            Metrics::store(counter(&m), 1000 + i as u64);
        }
        let text = m.prometheus(&[]);
        for (i, (name, _, _)) in COUNTERS.iter().enumerate() {
            assert!(
                text.contains(&format!("\nwasmrule_{name} {}\n", 1000 + i)),
                "{name}"
            );
        }
        Metrics::add(&m.quarantined_skips, 1);
        assert!(
            m.prometheus(&[])
                .contains("wasmrule_quarantined_skips_total ")
        );
    }
}
