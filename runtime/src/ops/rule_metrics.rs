//! Per-rule and per-tenant series: what each rule version matched, handled, failed (by
//! reason) and produced, how long its invocations took, and each tenant's time, sheds
//! and dead letters.
//!
//! The per-event path never looks a label up. A rule version gets its handles once, at
//! load ([`RuleFamilies::meters`]), and keeps them in its `LoadedRule`
//! ([`RuleMeters`]): a counter bump is one relaxed atomic add on a counter the rule owns.
//! A failure reason's counter is resolved at the rule's first failure of that reason
//! and kept in a `OnceLock`.
//!
//! Cardinality is bounded by what is loaded: series are labelled by tenant, rule and
//! version, and a version's series are removed from `/metrics` when the last
//! `LoadedRule` holding them is dropped (the rule was removed, or replaced by another
//! version, and its in-flight events have finished). Two loads of the same
//! tenant, rule and version (a rebuild without a version bump) share their series,
//! which then count on. Tenant series stay while the process runs: tenants come from
//! the configuration and the rules directory's folders, not from messages.
//!
//! Does not own the global counters (`metrics.rs`) or the HTTP side (`http.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::registry::Registry;

use super::histogram::{Histogram, SecondsCounter};

/// Why an event did not end as a rule's commands: the dead-letter kinds
/// (docs/security.md) and `quarantined` (skipped, not run). Anything else is `other`.
pub const REASONS: [&str; 17] = [
    "rule_error",
    "timeout",
    "out_of_fuel",
    "memory",
    "stack",
    "trap",
    "output_too_large",
    "too_many_commands",
    "abi",
    "instantiate",
    "command_not_allowed",
    "command_arity",
    "unbounded_stream",
    "key_too_long",
    "cpu_budget",
    "quarantined",
    "other",
];

/// A rule version's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub tenant: String,
    pub rule: String,
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleReasonLabels {
    tenant: String,
    rule: String,
    version: String,
    reason: &'static str,
}

/// A tenant's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

/// The labels of `wasmrule_invocation_failures_total`, the per-tenant failures
/// (docs/security.md); `kind` is one of [`REASONS`] but `quarantined`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantKindLabels {
    pub tenant: String,
    pub kind: &'static str,
}

/// Builds a histogram of seconds for a family's new series.
#[derive(Clone, Copy, Debug)]
struct Seconds;

impl MetricConstructor<Histogram> for Seconds {
    fn new_metric(&self) -> Histogram {
        Histogram::seconds()
    }
}

/// The families of per-rule and per-tenant series, and the count of live rule versions
/// per label set (to remove a version's series with its last holder).
#[derive(Debug)]
pub struct RuleFamilies {
    matched: Family<RuleLabels, Counter>,
    ok: Family<RuleLabels, Counter>,
    failed: Family<RuleReasonLabels, Counter>,
    commands: Family<RuleLabels, Counter>,
    invocation: Family<RuleLabels, Histogram, Seconds>,
    tenant_seconds: Family<TenantLabels, SecondsCounter>,
    tenant_shed: Family<TenantLabels, Counter>,
    tenant_dead_letters: Family<TenantLabels, Counter>,
    tenant_failures: Family<TenantKindLabels, Counter>,
    live: Holders,
}

impl Default for RuleFamilies {
    fn default() -> Self {
        RuleFamilies {
            matched: Family::default(),
            ok: Family::default(),
            failed: Family::default(),
            commands: Family::default(),
            invocation: Family::new_with_constructor(Seconds),
            tenant_seconds: Family::default(),
            tenant_shed: Family::default(),
            tenant_dead_letters: Family::default(),
            tenant_failures: Family::default(),
            live: Holders::default(),
        }
    }
}

impl RuleFamilies {
    /// Registers every family (names without the `wasmrule_` prefix; counters get
    /// `_total` from the encoder).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "rule_matched",
            "events that matched the rule's filters (before quarantine and CPU share)",
            self.matched.clone(),
        );
        r.register(
            "rule_ok",
            "invocations that ended in commands that passed the tenant's policy (or none)",
            self.ok.clone(),
        );
        r.register(
            "rule_failed",
            "events that did not end as the rule's commands, by reason (a dead-letter kind, or quarantined)",
            self.failed.clone(),
        );
        r.register(
            "rule_commands",
            "commands the rule produced that passed the tenant's policy",
            self.commands.clone(),
        );
        r.register(
            "rule_invocation_seconds",
            "time of one invocation of the rule (wall clock on the worker thread)",
            self.invocation.clone(),
        );
        r.register(
            "tenant_cpu_seconds",
            "time the tenant's rule invocations took on worker threads (wall clock of each invocation; a worker runs one at a time)",
            self.tenant_seconds.clone(),
        );
        r.register(
            "tenant_shed",
            "events of the tenant not run because it was over its CPU share",
            self.tenant_shed.clone(),
        );
        r.register(
            "tenant_dead_letters",
            "events written to the tenant's dead-letter stream",
            self.tenant_dead_letters.clone(),
        );
        r.register(
            "invocation_failures",
            "failed invocations and shed events by tenant and kind",
            self.tenant_failures.clone(),
        );
    }

    /// The handles of a rule version being loaded. Its series appear on `/metrics` now
    /// and go when the last [`RuleMeters`] of these labels is dropped.
    pub fn meters(self: &Arc<Self>, tenant: &str, rule: &str, version: &str) -> RuleMeters {
        let labels = RuleLabels {
            tenant: tenant.to_owned(),
            rule: rule.to_owned(),
            version: version.to_owned(),
        };
        let tenant = TenantLabels {
            tenant: tenant.to_owned(),
        };
        // Under `live`, so that a drop of the previous holder of these labels cannot
        // remove the series between this count and the lookups below.
        self.live.hold(&labels);
        RuleMeters {
            matched: self.matched.get_or_create_owned(&labels),
            ok: self.ok.get_or_create_owned(&labels),
            commands: self.commands.get_or_create_owned(&labels),
            invocation: self.invocation.get_or_create_owned(&labels),
            tenant_seconds: self.tenant_seconds.get_or_create_owned(&tenant),
            tenant_shed: self.tenant_shed.get_or_create_owned(&tenant),
            tenant_dead_letters: self.tenant_dead_letters.get_or_create_owned(&tenant),
            failed: Default::default(),
            last_error: Mutex::new(None),
            labels,
            families: self.clone(),
        }
    }

    /// Failed invocations (or, for `cpu_budget`, shed events) of `tenant`'s rules of
    /// `kind` so far.
    pub fn failures(&self, tenant: &str, kind: &str) -> u64 {
        let Some(kind) = REASONS.iter().find(|k| **k == kind) else {
            return 0;
        };
        self.tenant_failures
            .get(&TenantKindLabels {
                tenant: tenant.to_owned(),
                kind,
            })
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// The tenant's shed events and dead letters so far, and the time its invocations
    /// took.
    pub fn tenant(&self, tenant: &str) -> (u64, u64, f64) {
        let t = TenantLabels {
            tenant: tenant.to_owned(),
        };
        (
            self.tenant_shed.get(&t).map(|c| c.get()).unwrap_or(0),
            self.tenant_dead_letters
                .get(&t)
                .map(|c| c.get())
                .unwrap_or(0),
            self.tenant_seconds
                .get(&t)
                .map(|c| c.seconds())
                .unwrap_or(0.0),
        )
    }

    fn release(&self, labels: &RuleLabels) {
        self.live.release(labels, || {
            self.matched.remove(labels);
            self.ok.remove(labels);
            self.commands.remove(labels);
            self.invocation.remove(labels);
            for reason in REASONS {
                self.failed.remove(&RuleReasonLabels {
                    tenant: labels.tenant.clone(),
                    rule: labels.rule.clone(),
                    version: labels.version.clone(),
                    reason,
                });
            }
        });
    }
}

/// How many loaded versions hold each label set's series, so that the series go with
/// their last holder (rule and canary series alike).
#[derive(Debug, Default)]
pub(super) struct Holders(Mutex<HashMap<RuleLabels, usize>>);

impl Holders {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RuleLabels, usize>> {
        // A count per label set: consistent after a panic elsewhere.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more holder of `labels`. Before the series are looked up, so that the
    /// previous holder's drop cannot remove them in between.
    pub(super) fn hold(&self, labels: &RuleLabels) {
        *self.lock().entry(labels.clone()).or_insert(0) += 1;
    }

    /// One holder fewer; `remove` (the series' removal) runs, under the lock, when it
    /// was the last.
    pub(super) fn release(&self, labels: &RuleLabels, remove: impl FnOnce()) {
        let mut held = self.lock();
        let Some(n) = held.get_mut(labels) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            held.remove(labels);
            remove();
        }
    }
}

/// One rule version's handles: bumped by the workers with no lookup.
#[derive(Debug)]
pub struct RuleMeters {
    pub matched: Counter,
    pub ok: Counter,
    pub commands: Counter,
    pub invocation: Histogram,
    pub tenant_seconds: SecondsCounter,
    tenant_shed: Counter,
    tenant_dead_letters: Counter,
    // Per reason (index in REASONS): this rule's counter and its tenant's.
    failed: [OnceLock<(Counter, Counter)>; REASONS.len()],
    last_error: Mutex<Option<(&'static str, String)>>,
    labels: RuleLabels,
    families: Arc<RuleFamilies>,
}

impl RuleMeters {
    /// Counts one event that did not end as the rule's commands, for `reason` (a
    /// [`REASONS`] entry; others count as `other`), and keeps `detail` as the rule's
    /// last error. A shed (`cpu_budget`) counts for the tenant too.
    pub fn failed(&self, reason: &'static str, detail: Option<&str>) {
        let i = REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REASONS.len() - 1);
        let (rule, tenant) = self.failed[i].get_or_init(|| {
            let f = &self.families;
            let l = &self.labels;
            let rule = f.failed.get_or_create_owned(&RuleReasonLabels {
                tenant: l.tenant.clone(),
                rule: l.rule.clone(),
                version: l.version.clone(),
                reason: REASONS[i],
            });
            let tenant = f.tenant_failures.get_or_create_owned(&TenantKindLabels {
                tenant: l.tenant.clone(),
                kind: REASONS[i],
            });
            (rule, tenant)
        });
        rule.inc();
        if REASONS[i] != "quarantined" {
            tenant.inc();
        }
        if REASONS[i] == "cpu_budget" {
            self.tenant_shed.inc();
        }
        if let Some(detail) = detail {
            // Skipped when another worker is writing it: it is the last error either way.
            if let Ok(mut last) = self.last_error.try_lock() {
                *last = Some((REASONS[i], detail.to_owned()));
            }
        }
    }

    /// Counts one dead letter of the rule's tenant.
    pub fn dead_letter(&self) {
        self.tenant_dead_letters.inc();
    }

    /// The reason and text of the rule's last failure, if it failed.
    pub fn last_error(&self) -> Option<(&'static str, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Failures so far by reason, those that happened.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.failed)
            .filter_map(|(r, c)| c.get().map(|(c, _)| (*r, c.get())))
            .collect()
    }
}

impl Drop for RuleMeters {
    fn drop(&mut self) {
        self.families.release(&self.labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(f: &RuleFamilies) -> String {
        let mut r = Registry::with_prefix("wasmrule");
        f.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        text
    }

    #[test]
    fn a_rule_has_its_series_while_loaded() {
        let f = Arc::new(RuleFamilies::default());
        let m = f.meters("acme", "acme/r", "1.0.0");
        m.matched.inc();
        m.ok.inc();
        m.failed("timeout", Some("ran past 10ms"));
        m.failed("cpu_budget", None);
        let text = scrape(&f);
        let labels = r#"tenant="acme",rule="acme/r",version="1.0.0""#;
        assert!(
            text.contains(&format!("wasmrule_rule_matched_total{{{labels}}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "wasmrule_rule_failed_total{{{labels},reason=\"timeout\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(r#"wasmrule_tenant_shed_total{tenant="acme"} 1"#),
            "{text}"
        );
        assert_eq!(f.failures("acme", "timeout"), 1);
        assert_eq!(f.failures("acme", "cpu_budget"), 1);
        assert_eq!(m.last_error().unwrap().0, "timeout");
        // A reload of the same version shares the series; dropping the first keeps
        // them, dropping the last removes them.
        let again = f.meters("acme", "acme/r", "1.0.0");
        drop(m);
        again.matched.inc();
        assert!(
            scrape(&f).contains(&format!("wasmrule_rule_matched_total{{{labels}}} 2\n")),
            "{}",
            scrape(&f)
        );
        drop(again);
        let text = scrape(&f);
        assert!(!text.contains("acme/r"), "{text}");
        // The tenant's series stay.
        assert!(text.contains(r#"wasmrule_tenant_shed_total{tenant="acme"} 1"#));
    }

    #[test]
    fn unknown_reasons_count_as_other() {
        let f = Arc::new(RuleFamilies::default());
        let m = f.meters("t", "t/r", "");
        m.failed("something_new", None);
        assert_eq!(m.failures(), vec![("other", 1)]);
    }
}
