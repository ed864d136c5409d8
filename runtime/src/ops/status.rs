//! `/api/status`: the state of a running wasmrule as JSON, for the web console
//! (`console.html`) and `wasmrule status`: connections, totals, every serving rule
//! (file, name, version, tenant, filters, state, counts, last error, its canary's
//! comparison), the canaries without a live rule, the files that did not load, every
//! tenant (share, sheds, quarantine, dead letters, time).
//!
//! Counters are totals since start; the console and `wasmrule status` turn two
//! readings into rates. Does not own the numbers (`metrics.rs`, `rule_metrics.rs`).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::canary_metrics::DiffSample;
use super::metrics::Metrics;
use crate::rules::ruleset::{LoadedRule, Rules};

/// The whole answer.
#[derive(Debug, Serialize)]
pub struct Status {
    pub uptime_seconds: f64,
    pub mqtt_connected: bool,
    pub redis_connected: bool,
    pub totals: Totals,
    pub rules: Vec<RuleStatus>,
    /// Canaries loaded with no live rule to shadow (idle).
    pub idle_canaries: Vec<CanaryStatus>,
    /// Rule files whose latest content was refused, by rule id, with the reason.
    pub load_errors: BTreeMap<String, String>,
    pub tenants: Vec<TenantStatus>,
}

/// Process-wide totals since start.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Totals {
    pub messages_received: u64,
    pub messages_unmatched: u64,
    pub invocations: u64,
    pub invocation_errors: u64,
    pub commands_written: u64,
    pub command_errors: u64,
    pub dead_letters: u64,
    pub events_shed: u64,
    pub quarantined_skips: u64,
    pub messages_acked: u64,
}

/// One serving rule version.
#[derive(Debug, Serialize)]
pub struct RuleStatus {
    pub id: String,
    pub tenant: String,
    pub file: String,
    pub name: String,
    pub version: String,
    pub generation: u64,
    pub filters: Vec<String>,
    /// `serving` or `quarantined`.
    pub state: &'static str,
    pub matched: u64,
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<&'static str, u64>,
    pub commands: u64,
    pub invocations: u64,
    pub invocation_seconds: f64,
    /// The reason and text of the last failure, if any.
    pub last_error: Option<(String, String)>,
    /// The rule's canary, if one is loaded (docs/canary.md).
    pub canary: Option<CanaryStatus>,
}

/// A canary version and how its output compares with the live version's.
#[derive(Debug, Serialize)]
pub struct CanaryStatus {
    /// The id of the rule it shadows.
    pub rule: String,
    pub file: String,
    pub version: String,
    pub generation: u64,
    /// `comparing`, `quarantined`, or `idle` (no live rule).
    pub state: &'static str,
    /// Events it ran on and was compared.
    pub events: u64,
    /// Events on which its output differed from the live version's.
    pub diffs: u64,
    /// `diffs` / `events` in percent (0 before the first event).
    pub diff_rate_percent: f64,
    pub failures: BTreeMap<&'static str, u64>,
    /// The last differences, oldest first.
    pub samples: Vec<DiffSample>,
}

impl CanaryStatus {
    fn read(c: &LoadedRule, idle: bool, now: Instant) -> Option<CanaryStatus> {
        let m = &c.canary.as_ref()?.meters;
        let (events, diffs) = (m.events.get(), m.diffs.get());
        Some(CanaryStatus {
            rule: c.id.to_string(),
            file: c.path.display().to_string(),
            version: c.version().to_owned(),
            generation: c.generation,
            state: if idle {
                "idle"
            } else if c.health.is_quarantined(now) {
                "quarantined"
            } else {
                "comparing"
            },
            events,
            diffs,
            diff_rate_percent: if events == 0 {
                0.0
            } else {
                diffs as f64 * 100.0 / events as f64
            },
            failures: m.failures().into_iter().collect(),
            samples: m.samples(),
        })
    }
}

/// One tenant with serving rules.
#[derive(Debug, Serialize)]
pub struct TenantStatus {
    pub tenant: String,
    pub cpu_share_percent: u32,
    pub rules: usize,
    pub quarantined: usize,
    pub shed: u64,
    pub dead_letters: u64,
    pub cpu_seconds: f64,
}

impl Status {
    /// The process-wide totals now.
    pub fn totals(metrics: &Metrics) -> Totals {
        let g = Metrics::get;
        Totals {
            messages_received: g(&metrics.messages_received),
            messages_unmatched: g(&metrics.messages_unmatched),
            invocations: g(&metrics.invocations),
            invocation_errors: g(&metrics.invocation_errors),
            commands_written: g(&metrics.commands_written),
            command_errors: g(&metrics.command_errors),
            dead_letters: g(&metrics.dead_letters),
            events_shed: g(&metrics.events_shed),
            quarantined_skips: g(&metrics.quarantined_skips),
            messages_acked: g(&metrics.messages_acked),
        }
    }

    /// Reads it all now.
    pub fn read(metrics: &Metrics, rules: &Rules, started: Instant) -> Status {
        let set = rules.snapshot();
        let now = Instant::now();
        let mut tenants: BTreeMap<&str, TenantStatus> = BTreeMap::new();
        let mut out = Vec::with_capacity(set.len());
        for r in set.iter() {
            let quarantined = r.health.is_quarantined(now);
            let m = &r.meters;
            let failures: BTreeMap<&'static str, u64> = m.failures().into_iter().collect();
            out.push(RuleStatus {
                id: r.id.to_string(),
                tenant: r.tenant.to_string(),
                file: r.path.display().to_string(),
                name: r.rule.manifest().name.clone(),
                version: r.version().to_owned(),
                generation: r.generation,
                filters: r.rule.manifest().filters.clone(),
                state: if quarantined {
                    "quarantined"
                } else {
                    "serving"
                },
                matched: m.matched.get(),
                ok: m.ok.get(),
                failed: failures.values().sum(),
                failures,
                commands: m.commands.get(),
                invocations: m.invocation.count(),
                invocation_seconds: m.invocation.sum(),
                last_error: m.last_error().map(|(k, e)| (k.to_owned(), e)),
                canary: set
                    .canary(&r.id)
                    .and_then(|c| CanaryStatus::read(c, false, now)),
            });
            let t = tenants.entry(&r.tenant).or_insert_with(|| {
                let (shed, dead_letters, cpu_seconds) = metrics.rules.tenant(&r.tenant);
                TenantStatus {
                    tenant: r.tenant.to_string(),
                    cpu_share_percent: r.policy.cpu.share_percent,
                    rules: 0,
                    quarantined: 0,
                    shed,
                    dead_letters,
                    cpu_seconds,
                }
            });
            t.rules += 1;
            t.quarantined += usize::from(quarantined);
        }
        Status {
            uptime_seconds: started.elapsed().as_secs_f64(),
            mqtt_connected: Metrics::is(&metrics.mqtt_connected),
            redis_connected: Metrics::is(&metrics.redis_connected),
            totals: Status::totals(metrics),
            rules: out,
            idle_canaries: set
                .canaries()
                .filter(|c| set.get(&c.id).is_none())
                .filter_map(|c| CanaryStatus::read(c, true, now))
                .collect(),
            load_errors: rules.load_errors(),
            tenants: tenants.into_values().collect(),
        }
    }
}
