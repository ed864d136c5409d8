//! A Prometheus histogram kept in atomics, for the per-event path: observing a value is
//! a short scan of a dozen bounds and two relaxed atomic adds, with no lock and no
//! allocation. prometheus-client encodes it (it implements the library's
//! [`EncodeMetric`]); only the storage is ours, because the library's own `Histogram`
//! takes a mutex on every `observe` (its source says so: "TODO: Consider using
//! atomics"), and a worker observes once per invocation.
//!
//! Values are whole units (nanoseconds, commands) so that the sum is an integer add;
//! they are divided by `per_unit` into the exported unit (seconds) at scrape time
//! (a division by 1e9 rounds 5000 ns to exactly the float `5e-6`; a product would not).
//!
//! Does not own what is measured or the names (`metrics.rs`, `rule_metrics.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds for times, in nanoseconds: 5 us to 10 s. A rule's invocation is a few
/// microseconds; a Redis round trip a few hundred; an outage seconds.
pub const TIME_BOUNDS_NS: &[u64] = &[
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// Upper bounds for pipeline sizes, in commands.
pub const SIZE_BOUNDS: &[u64] = &[1, 2, 5, 10, 25, 50, 100, 250, 512, 1024, 4096];

/// A histogram with fixed bounds; clones share the counts.
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bounds: &'static [u64],
    // One more than `bounds`: the last is +Inf.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    // Whole units per exported unit (1e9 nanoseconds a second).
    per_unit: f64,
}

impl Histogram {
    /// A histogram over `bounds` (ascending, in whole units), exported divided by
    /// `per_unit`.
    pub fn new(bounds: &'static [u64], per_unit: f64) -> Histogram {
        Histogram {
            inner: Arc::new(Inner {
                bounds,
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum: AtomicU64::new(0),
                per_unit,
            }),
        }
    }

    /// A histogram of durations, exported in seconds.
    pub fn seconds() -> Histogram {
        Histogram::new(TIME_BOUNDS_NS, 1e9)
    }

    /// A histogram of sizes (commands in a pipeline).
    pub fn sizes() -> Histogram {
        Histogram::new(SIZE_BOUNDS, 1.0)
    }

    /// Counts one value.
    #[inline]
    pub fn observe(&self, v: u64) {
        let i = self.inner.bounds.partition_point(|&b| b < v);
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        self.inner.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Counts one duration (nanoseconds, saturating at ~584 years).
    #[inline]
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Values counted so far.
    pub fn count(&self) -> u64 {
        self.inner
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Sum of the values counted so far, in the exported unit.
    pub fn sum(&self) -> f64 {
        self.inner.sum.load(Ordering::Relaxed) as f64 / self.inner.per_unit
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.inner;
        // Per-bucket counts (the encoder makes them cumulative); read each once so
        // that the count is their sum even while workers observe.
        let buckets: Vec<(f64, u64)> = inner
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let le = match inner.bounds.get(i) {
                    Some(&b) => b as f64 / inner.per_unit,
                    None => f64::INFINITY,
                };
                (le, c.load(Ordering::Relaxed))
            })
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum(), count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A counter of seconds kept as whole nanoseconds (one atomic add per charge), exported
/// as a float.
#[derive(Debug, Clone, Default)]
pub struct SecondsCounter {
    nanos: Arc<AtomicU64>,
}

impl SecondsCounter {
    /// Adds a duration.
    #[inline]
    pub fn add(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(ns, Ordering::Relaxed);
    }

    /// The total in seconds.
    pub fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

impl TypedMetric for SecondsCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for SecondsCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, f64, f64>(&self.seconds(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_are_cumulative_with_inf_and_seconds() {
        let h = Histogram::seconds();
        h.observe(3_000); // <= 5 us
        h.observe(5_000); // on the bound: <= 5 us
        h.observe(7_000); // <= 10 us
        h.observe(u64::MAX / 2); // +Inf
        let mut r = Registry::default();
        r.register("t", "test", h.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains("t_bucket{le=\"0.000005\"} 2\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"0.00001\"} 3\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("t_count 4\n"), "{text}");
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn seconds_counter_exports_seconds() {
        let c = SecondsCounter::default();
        c.add(Duration::from_millis(1500));
        let mut r = Registry::default();
        r.register("cpu_seconds", "test", c);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains("cpu_seconds_total 1.5\n"), "{text}");
    }
}
