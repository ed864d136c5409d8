//! A canary's series and samples: how many events it was compared on, on how many its
//! output differed from the live version's, how often it failed (by reason), and the
//! last few differences, for `/metrics`, the status JSON and the console
//! (docs/canary.md).
//!
//! Like `rule_metrics.rs`, handles are resolved once, when the canary is loaded
//! ([`CanaryFamilies::meters`]), and a version's series leave `/metrics` with the last
//! [`CanaryMeters`] holding them. The rate limit of the diff stream lives here too,
//! because every worker shares it. Does not compare outputs (`record/diff.rs`) or write
//! the stream (`dispatch/canary.rs`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::rule_metrics::{Holders, REASONS, RuleLabels};

/// Differences kept in memory per canary for the status JSON and the console.
pub const SAMPLES_KEPT: usize = 5;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CanaryReasonLabels {
    tenant: String,
    rule: String,
    version: String,
    reason: &'static str,
}

/// One event on which a canary's output differed from the live version's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiffSample {
    pub topic: String,
    pub event_id: String,
    /// The live version's output, one line per command, action or error.
    pub live: Vec<String>,
    /// The canary's.
    pub canary: Vec<String>,
}

/// The families of canary series.
#[derive(Debug, Default)]
pub struct CanaryFamilies {
    events: Family<RuleLabels, Counter>,
    diffs: Family<RuleLabels, Counter>,
    failures: Family<CanaryReasonLabels, Counter>,
    live: Holders,
}

impl CanaryFamilies {
    /// Registers the families (names without the `wasmrule_` prefix).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "canary_events",
            "events a canary ran on and whose output was compared with the live version's",
            self.events.clone(),
        );
        r.register(
            "canary_diffs",
            "events on which a canary's output differed from the live version's",
            self.diffs.clone(),
        );
        r.register(
            "canary_failures",
            "canary invocations that failed, by reason (never the live version's failure)",
            self.failures.clone(),
        );
    }

    /// The handles of a canary of rule `rule` at `version` being loaded;
    /// `samples_per_second` bounds the differences a second that go to its diff stream
    /// (`rules.canary_samples_per_second`, docs/configuration.md).
    pub fn meters(
        self: &Arc<Self>,
        tenant: &str,
        rule: &str,
        version: &str,
        samples_per_second: u32,
    ) -> CanaryMeters {
        let labels = RuleLabels {
            tenant: tenant.to_owned(),
            rule: rule.to_owned(),
            version: version.to_owned(),
        };
        self.live.hold(&labels);
        CanaryMeters {
            events: self.events.get_or_create_owned(&labels),
            diffs: self.diffs.get_or_create_owned(&labels),
            failed: Default::default(),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES_KEPT)),
            samples_per_second,
            window: AtomicU64::new(0),
            in_window: AtomicU32::new(0),
            labels,
            families: self.clone(),
        }
    }

    fn release(&self, labels: &RuleLabels) {
        self.live.release(labels, || {
            self.events.remove(labels);
            self.diffs.remove(labels);
            for reason in REASONS {
                self.failures.remove(&CanaryReasonLabels {
                    tenant: labels.tenant.clone(),
                    rule: labels.rule.clone(),
                    version: labels.version.clone(),
                    reason,
                });
            }
        });
    }
}

/// One canary version's handles and samples.
#[derive(Debug)]
pub struct CanaryMeters {
    pub events: Counter,
    pub diffs: Counter,
    failed: [OnceLock<Counter>; REASONS.len()],
    samples: Mutex<VecDeque<DiffSample>>,
    samples_per_second: u32,
    // The second (since the epoch) of the current sampling window and the samples
    // written to the stream in it, shared by the workers.
    window: AtomicU64,
    in_window: AtomicU32,
    labels: RuleLabels,
    families: Arc<CanaryFamilies>,
}

impl CanaryMeters {
    /// Counts a failed canary invocation for `reason` (a [`REASONS`] entry, else
    /// `other`).
    pub fn failed(&self, reason: &str) {
        let i = REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REASONS.len() - 1);
        self.failed[i]
            .get_or_init(|| {
                let l = &self.labels;
                self.families
                    .failures
                    .get_or_create_owned(&CanaryReasonLabels {
                        tenant: l.tenant.clone(),
                        rule: l.rule.clone(),
                        version: l.version.clone(),
                        reason: REASONS[i],
                    })
            })
            .inc();
    }

    /// Failures so far by reason, those that happened.
    pub fn failures(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.failed)
            .filter_map(|(r, c)| c.get().map(|c| (*r, c.get())))
            .collect()
    }

    /// Keeps `sample` among the last [`SAMPLES_KEPT`].
    pub fn keep(&self, sample: DiffSample) {
        // Skipped when another worker holds it: the samples are examples, not a log.
        if let Ok(mut s) = self.samples.try_lock() {
            if s.len() == SAMPLES_KEPT {
                s.pop_front();
            }
            s.push_back(sample);
        }
    }

    /// The last differences, oldest first.
    pub fn samples(&self) -> Vec<DiffSample> {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.iter().cloned().collect()
    }

    /// Whether one more sample may go to the diff stream this second (at most
    /// `samples_per_second`, over all workers).
    pub fn may_write_sample(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let window = self.window.load(Ordering::Relaxed);
        if window != now
            && self
                .window
                .compare_exchange(window, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_window.store(0, Ordering::Relaxed);
        }
        self.in_window.fetch_add(1, Ordering::Relaxed) < self.samples_per_second
    }
}

impl Drop for CanaryMeters {
    fn drop(&mut self) {
        self.families.release(&self.labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_has_its_series_while_loaded_and_samples_are_bounded() {
        let f = Arc::new(CanaryFamilies::default());
        let m = f.meters("default", "r", "2", 3);
        m.events.inc();
        m.diffs.inc();
        m.failed("trap");
        let mut r = Registry::with_prefix("wasmrule");
        f.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains(
                r#"wasmrule_canary_diffs_total{tenant="default",rule="r",version="2"} 1"#
            ),
            "{text}"
        );
        assert_eq!(m.failures(), vec![("trap", 1)]);
        // Three per second: a fourth in the same second is refused (unless the second
        // turned meanwhile, when at most three more pass).
        let passed = (0..4).filter(|_| m.may_write_sample()).count();
        assert!(passed == 3 || passed == 4);
        for i in 0..10 {
            m.keep(DiffSample {
                topic: format!("t/{i}"),
                event_id: String::new(),
                live: vec![],
                canary: vec![],
            });
        }
        let s = m.samples();
        assert_eq!(s.len(), SAMPLES_KEPT);
        assert_eq!(s[SAMPLES_KEPT - 1].topic, "t/9");
        drop(m);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(!text.contains(r#"rule="r""#), "{text}");
    }
}
