//! Per-tenant CPU budget: how much of a worker's time one tenant's rules may take.
//!
//! The deadline (`timeout_ms`) bounds one invocation; it does not bound a tenant. A rule
//! that burns its whole deadline on every event, or just under it, would otherwise take
//! a worker away from every tenant whose topics hash to that worker. So each worker
//! keeps, per tenant, the wall time that tenant's invocations took in a sliding window
//! ([`CpuBudget::window`], default 1 s, kept in [`BUCKETS`] buckets). Before invoking a
//! rule the worker asks [`TenantMeters::admit`]: if the rule's tenant has already used
//! its share of the window on this worker and other messages are waiting for the
//! worker, the event is **shed** rather than run: it goes to the tenant's dead-letter
//! stream with kind `cpu_budget` and is counted (`dispatch.rs`). The share divides
//! contended time; a worker with nothing else queued runs the event anyway, so a
//! tenant is not shed for using time nobody else wanted. Shedding keeps per-topic order (the worker still takes messages in
//! order, it just does not run some) and leaves the bounded queues as they are: a
//! tenant over budget costs the others one clock read and a dead-letter entry per
//! event, not its deadline.
//!
//! Why per worker: the accounting lives in the worker's own memory, so the per-event
//! path has no atomics and no locks; a tenant's budget is a share of each worker's time.
//! Why wall time: it is what the deadline measures too, and what other tenants lose; a
//! clock read is a vDSO call (tens of nanoseconds), where thread CPU time is a system
//! call. A tenant whose share is 100% (the default tenant, by default) is not metered at
//! all. A tenant can overshoot its budget by at most one invocation (one deadline) per
//! window: the check is made before an invocation, whose length is unknown.
//!
//! This file does not decide what happens to a shed event (`dispatch.rs`) or read the
//! configuration (`config.rs`).

use std::time::{Duration, Instant};

/// Buckets of the sliding window: usage older than the window is forgotten one bucket
/// (a tenth of the window) at a time.
pub const BUCKETS: usize = 10;

/// A tenant's CPU budget on each worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuBudget {
    /// Share of each worker's time, in percent (1..=100); 100 means not metered.
    pub share_percent: u32,
    /// Length of the sliding window the share is measured over.
    pub window: Duration,
}

impl CpuBudget {
    /// No budget: the tenant may use all of a worker's time.
    pub const UNLIMITED: CpuBudget = CpuBudget {
        share_percent: 100,
        window: Duration::from_secs(1),
    };

    /// Whether the tenant is metered at all.
    pub fn is_limited(&self) -> bool {
        self.share_percent < 100
    }

    /// Microseconds of worker time the tenant may use per window.
    pub fn allowance_us(&self) -> u64 {
        self.window.as_micros() as u64 * u64::from(self.share_percent) / 100
    }

    fn bucket_us(&self) -> u64 {
        (self.window.as_micros() as u64 / BUCKETS as u64).max(1)
    }
}

/// A tenant over its budget: what it used of the window, and what it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant used {used_us} us of this worker's last {window:?}, over its {share_percent}% \
     share ({allowance_us} us); event shed, not run"
)]
pub struct OverBudget {
    pub used_us: u64,
    pub allowance_us: u64,
    pub share_percent: u32,
    pub window: Duration,
}

impl OverBudget {
    /// The kind counted and written to the dead-letter stream.
    pub const KIND: &'static str = "cpu_budget";
}

/// One tenant's usage on one worker: a ring of buckets and their sum.
#[derive(Debug, Default, Clone)]
struct Meter {
    buckets: [u64; BUCKETS],
    sum: u64,
    // Absolute number of the current bucket (time since the worker's origin divided by
    // the bucket length).
    head: u64,
}

impl Meter {
    /// Moves the window so that bucket `now` is the current one, forgetting what fell
    /// out of it.
    fn advance(&mut self, now: u64) {
        if now <= self.head {
            return;
        }
        let steps = (now - self.head).min(BUCKETS as u64);
        for i in 1..=steps {
            let slot = ((self.head + i) % BUCKETS as u64) as usize;
            self.sum -= self.buckets[slot];
            self.buckets[slot] = 0;
        }
        self.head = now;
    }

    fn add(&mut self, now: u64, us: u64) {
        self.advance(now);
        self.buckets[(self.head % BUCKETS as u64) as usize] += us;
        self.sum += us;
    }
}

/// One worker's meters, one per tenant, indexed by the tenant's slot (a small number
/// given to each tenant at load, `LoadedRule::tenant_slot`).
#[derive(Debug)]
pub struct TenantMeters {
    origin: Instant,
    meters: Vec<Meter>,
}

impl TenantMeters {
    /// No usage yet; times are measured from `origin`.
    pub fn new(origin: Instant) -> Self {
        TenantMeters {
            origin,
            meters: Vec::new(),
        }
    }

    fn meter(&mut self, slot: usize) -> &mut Meter {
        if slot >= self.meters.len() {
            self.meters.resize(slot + 1, Meter::default());
        }
        &mut self.meters[slot]
    }

    fn bucket(&self, budget: &CpuBudget, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_micros() as u64 / budget.bucket_us()
    }

    /// Whether the tenant in `slot` may run an invocation starting at `now`.
    ///
    /// # Errors
    ///
    /// [`OverBudget`] when its invocations on this worker used its whole share of the
    /// window.
    pub fn admit(
        &mut self,
        slot: usize,
        budget: &CpuBudget,
        now: Instant,
    ) -> Result<(), OverBudget> {
        if !budget.is_limited() {
            return Ok(());
        }
        let bucket = self.bucket(budget, now);
        let m = self.meter(slot);
        m.advance(bucket);
        let allowance_us = budget.allowance_us();
        if m.sum < allowance_us {
            Ok(())
        } else {
            Err(OverBudget {
                used_us: m.sum,
                allowance_us,
                share_percent: budget.share_percent,
                window: budget.window,
            })
        }
    }

    /// Charges the tenant in `slot` for an invocation that ran from `start` to `end`.
    pub fn charge(&mut self, slot: usize, budget: &CpuBudget, start: Instant, end: Instant) {
        if !budget.is_limited() {
            return;
        }
        let bucket = self.bucket(budget, end);
        let us = end.saturating_duration_since(start).as_micros() as u64;
        self.meter(slot).add(bucket, us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(share: u32) -> CpuBudget {
        CpuBudget {
            share_percent: share,
            window: Duration::from_secs(1),
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn sheds_once_the_share_of_the_window_is_used() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let b = budget(10); // 100 ms per second
        let mut t = t0;
        // Nine 10 ms invocations: still within 100 ms.
        for _ in 0..9 {
            assert!(m.admit(0, &b, t).is_ok());
            m.charge(0, &b, t, t + 10 * MS);
            t += 10 * MS;
        }
        assert!(m.admit(0, &b, t).is_ok());
        m.charge(0, &b, t, t + 10 * MS);
        t += 10 * MS;
        let over = m.admit(0, &b, t).unwrap_err();
        assert_eq!((over.used_us, over.allowance_us), (100_000, 100_000));
        assert!(over.to_string().contains("over its 10% share"), "{over}");
        // Another tenant on the same worker is not affected.
        assert!(m.admit(1, &b, t).is_ok());
    }

    #[test]
    fn usage_leaves_the_window_as_time_passes() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let b = budget(10);
        m.charge(3, &b, t0, t0 + 150 * MS);
        assert!(m.admit(3, &b, t0 + 200 * MS).is_err());
        // Still within the window 0.9 s later...
        assert!(m.admit(3, &b, t0 + 1000 * MS).is_err());
        // ... and forgotten once its bucket falls out of it.
        assert!(m.admit(3, &b, t0 + 1200 * MS).is_ok());
        // A long idle gap empties every bucket.
        m.charge(3, &b, t0 + 1200 * MS, t0 + 1400 * MS);
        assert!(m.admit(3, &b, t0 + 60_000 * MS).is_ok());
    }

    #[test]
    fn a_full_share_is_not_metered() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let b = CpuBudget::UNLIMITED;
        m.charge(0, &b, t0, t0 + 10_000 * MS);
        assert!(m.admit(0, &b, t0 + MS).is_ok());
        assert!(m.meters.is_empty(), "unlimited tenants take no memory");
    }
}
