//! `/metrics`: one prometheus-client [`Registry`] over everything `metrics.rs` and
//! `rule_metrics.rs` keep, plus what is read from the serving rule set at scrape time
//! (which rules serve, which are quarantined). Encoded in the OpenMetrics text format,
//! which Prometheus asks for and reads.
//!
//! Does not own the values (`metrics.rs`) or the HTTP side (`http.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::metrics::{COUNTERS, Metrics};
use crate::rules::ruleset::Rules;

/// The content type of [`Exposition::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything `/metrics` shows, registered once.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// The registry over `metrics` and the rules serving in `rules`.
    pub fn new(metrics: Arc<Metrics>, rules: Arc<Rules>) -> Exposition {
        let mut r = Registry::with_prefix("wasmrule");
        metrics.rules.register(&mut r);
        metrics.canaries.register(&mut r);
        r.register(
            "redis_pipeline_commands",
            "commands per pipeline sent to Redis",
            metrics.redis_pipeline_commands.clone(),
        );
        r.register(
            "redis_write_seconds",
            "time from sending a pipeline to Redis to its replies",
            metrics.redis_write_seconds.clone(),
        );
        r.register(
            "message_latency_seconds",
            "time from a message's receipt by wasmrule to Redis' confirmation of its batch's writes (the oldest message of each written batch)",
            metrics.message_latency_seconds.clone(),
        );
        r.register(
            "broker_dropped",
            "messages the embedded broker dropped, by reason",
            metrics.broker_drops.clone(),
        );
        r.register_collector(Box::new(Globals(metrics)));
        r.register_collector(Box::new(Serving(rules)));
        Exposition { registry: r }
    }

    /// The text for one scrape.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process-wide counters and gauges, read from their atomics at scrape time.
#[derive(Debug)]
struct Globals(Arc<Metrics>);

impl Collector for Globals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &*self.0;
        for (name, help, counter) in COUNTERS {
            let c = ConstCounter::new(Metrics::get(counter(m)));
            c.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        for (name, help, v) in m.gauges() {
            let g = ConstGauge::new(v as i64);
            g.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let mut errors = encoder.encode_descriptor(
            "redis_errors",
            "Redis failures by kind: connection (a pipeline lost with its connection, sent again), refused (a command Redis answered with an error), busy (LOADING, BUSY and the like, sent again)",
            None,
            MetricType::Counter,
        )?;
        for (kind, n) in [
            ("connection", &m.redis_retries),
            ("refused", &m.command_errors),
            ("busy", &m.redis_busy),
        ] {
            ConstCounter::new(Metrics::get(n)).encode(errors.encode_family(&[("kind", kind)])?)?;
        }
        Ok(())
    }
}

/// What the serving rule set says at scrape time.
struct Serving(Arc<Rules>);

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Serving")
    }
}

impl Collector for Serving {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let set = self.0.snapshot();
        let now = Instant::now();
        ConstGauge::new(set.len() as i64).encode(encoder.encode_descriptor(
            "rules",
            "rules serving now",
            None,
            MetricType::Gauge,
        )?)?;
        let mut info = encoder.encode_descriptor(
            "rule_info",
            "rules serving now: version is the manifest's (the author's), generation counts the loads of the file since start",
            None,
            MetricType::Gauge,
        )?;
        for r in set.iter() {
            let generation = r.generation.to_string();
            let labels = [
                ("tenant", &*r.tenant),
                ("rule", &*r.id),
                ("version", r.version()),
                ("generation", &generation),
            ];
            ConstGauge::new(1).encode(info.encode_family(&labels)?)?;
        }
        let mut quarantined = encoder.encode_descriptor(
            "rule_quarantined",
            "1 while the rule version is quarantined (its events are skipped)",
            None,
            MetricType::Gauge,
        )?;
        let mut by_tenant: BTreeMap<&str, i64> = BTreeMap::new();
        for r in set.iter() {
            let q = r.health.is_quarantined(now);
            *by_tenant.entry(&r.tenant).or_default() += i64::from(q);
            let labels = [
                ("tenant", &*r.tenant),
                ("rule", &*r.id),
                ("version", r.version()),
            ];
            ConstGauge::new(i64::from(q)).encode(quarantined.encode_family(&labels)?)?;
        }
        let mut tenants = encoder.encode_descriptor(
            "tenant_rules_quarantined",
            "the tenant's rules quarantined now",
            None,
            MetricType::Gauge,
        )?;
        for (tenant, n) in by_tenant {
            ConstGauge::new(n).encode(tenants.encode_family(&[("tenant", tenant)])?)?;
        }
        Ok(())
    }
}
