//! Per-tenant CPU budget: how much of a worker's CPU time one tenant's rules may take
//! while other tenants' events wait for that worker.
//!
//! The deadline (`timeout_ms`) bounds one invocation; it does not bound a tenant. A rule
//! that burns its whole deadline on every event, or just under it, would otherwise take
//! a worker away from every tenant whose topics hash to that worker. So each worker
//! keeps, per tenant, the **CPU time** that tenant's invocations used in a sliding window
//! ([`CpuBudget::window`], default 1 s of wall time, kept in [`BUCKETS`] buckets). A
//! worker that was descheduled (the broker, Redis or another process took the core)
//! charges nobody for the time it did not run.
//!
//! How CPU time is measured without paying for it per event: reading a thread's CPU
//! clock is a system call (about 1.3 us on the project's VM, 30 times a wall-clock
//! read), so each metered invocation is charged its wall time (a vDSO read), and the
//! worker reads its CPU clock once at the start and once at the end of a **round** (the
//! run of messages it handles before it hands a batch to the Redis writer, up to 512
//! commands). [`TenantMeters::settle`] then scales the round's charges by the share of
//! the round's wall time the thread actually had the CPU: if the worker ran for 3 ms of
//! a 4 ms round, every charge of that round keeps three quarters of its wall time.
//! Within a round, before it is settled, charges count at their wall time, which can
//! only shed a tenant sooner, never later.
//!
//! Before invoking a rule the worker asks [`TenantMeters::admit`]. A tenant within its
//! share always runs. A tenant over its share is **shed** (the event goes to its
//! dead-letter stream with kind `cpu_budget`, `dispatch.rs`) only under contention: when
//! another tenant's events are waiting for this worker ([`Waiting`]) and that tenant has
//! had less than the one over its share, in proportion to their shares (used time
//! divided by share: weighted fair). An over-share tenant with the worker to itself
//! runs; so does one whose waiting neighbours have already had more than it, share for
//! share. The default tenant (share 100%, not metered) counts as having had nothing: a
//! named tenant over its share yields to the operator's rules.
//!
//! Shedding keeps per-topic order (the worker still takes messages in order, it just
//! does not run some) and leaves the bounded queues as they are: a tenant over budget
//! costs the others a few comparisons and a dead-letter entry per event, not its
//! deadline.
//!
//! Why per worker: the accounting lives in the worker's own memory, so the per-event
//! path has no atomics and no locks; a tenant's budget is a share of each worker's time.
//! A tenant whose share is 100% (the default tenant, by default) is not metered at all
//! and pays no clock reads. A tenant can overshoot its budget by at most one invocation
//! (one deadline) per window: the check is made before an invocation, whose length is
//! unknown.
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
    "tenant used {used_us} us of CPU on this worker in the last {window:?}, over its \
     {share_percent}% share ({allowance_us} us), while another tenant's events waited; \
     event shed, not run"
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

    /// Usage per percent of share: what weighted fairness compares.
    fn weighted(&self, budget: &CpuBudget) -> u64 {
        if budget.is_limited() {
            self.sum / u64::from(budget.share_percent.max(1))
        } else {
            0
        }
    }

    /// Removes up to `us` from bucket `bucket`, if it is still in the window.
    fn take_back(&mut self, bucket: u64, us: u64) {
        if bucket > self.head || bucket + (BUCKETS as u64) <= self.head {
            return;
        }
        let slot = (bucket % BUCKETS as u64) as usize;
        let d = us.min(self.buckets[slot]);
        self.buckets[slot] -= d;
        self.sum -= d;
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
    // Charges of the round not yet settled: (slot, bucket, microseconds).
    round: Vec<(usize, u64, u64)>,
}

impl TenantMeters {
    /// No usage yet; times are measured from `origin`.
    pub fn new(origin: Instant) -> Self {
        TenantMeters {
            origin,
            meters: Vec::new(),
            round: Vec::new(),
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

    /// Whether the tenant in `slot` may run an invocation starting at `now`, with
    /// `waiting` the tenants whose events wait for this worker.
    ///
    /// # Errors
    ///
    /// [`OverBudget`] when its invocations on this worker used its whole share of the
    /// window and a waiting tenant has had less than it, share for share.
    pub fn admit(
        &mut self,
        slot: usize,
        budget: &CpuBudget,
        now: Instant,
        waiting: &Waiting,
    ) -> Result<(), OverBudget> {
        if !budget.is_limited() {
            return Ok(());
        }
        let bucket = self.bucket(budget, now);
        let m = self.meter(slot);
        m.advance(bucket);
        let allowance_us = budget.allowance_us();
        let (used_us, weighted) = (m.sum, m.weighted(budget));
        if used_us < allowance_us {
            return Ok(());
        }
        let me = Waiting::bit(slot);
        let behind = waiting.tenants().any(|(bit, other)| {
            if bit == me {
                return false;
            }
            let b = self.bucket(&other, now);
            let m = self.meter(bit);
            m.advance(b);
            m.weighted(&other) < weighted
        });
        if behind {
            Err(OverBudget {
                used_us,
                allowance_us,
                share_percent: budget.share_percent,
                window: budget.window,
            })
        } else {
            Ok(())
        }
    }

    /// Charges the tenant in `slot` for an invocation that took `took` of wall time and
    /// ended at `end`, until the round is settled.
    pub fn charge(&mut self, slot: usize, budget: &CpuBudget, took: Duration, end: Instant) {
        if !budget.is_limited() {
            return;
        }
        let bucket = self.bucket(budget, end);
        let us = took.as_micros() as u64;
        self.meter(slot).add(bucket, us);
        match self.round.last_mut() {
            Some((s, b, n)) if *s == slot && *b == bucket => *n += us,
            _ => self.round.push((slot, bucket, us)),
        }
    }

    /// Whether the round has charges to settle.
    #[cfg(test)]
    fn in_round(&self) -> bool {
        !self.round.is_empty()
    }

    /// Ends a round in which the worker thread used `cpu` of CPU time over `wall` of
    /// wall time: takes back from each of the round's charges the part the thread spent
    /// descheduled.
    pub fn settle(&mut self, cpu: Duration, wall: Duration) {
        let round = std::mem::take(&mut self.round);
        if !wall.is_zero() && cpu < wall {
            let (cpu, wall) = (cpu.as_nanos() as u64, wall.as_nanos() as u64);
            for &(slot, bucket, us) in &round {
                let kept = (u128::from(us) * u128::from(cpu) / u128::from(wall)) as u64;
                self.meter(slot).take_back(bucket, us - kept);
            }
        }
        self.round = round;
        self.round.clear();
    }
}

/// Bits of [`Waiting`]: tenant slots at or above this share the last bit.
const WAITING_BITS: usize = 64;

/// The tenants whose events are queued for one worker and not yet handled: a count per
/// tenant slot, and each tenant's budget. A message's tenants are a bit mask
/// ([`Waiting::bit`]); slots from 63 on share the last bit, which can only hide a waiting
/// tenant (fewer sheds), never invent one.
#[derive(Debug)]
pub struct Waiting {
    counts: [u32; WAITING_BITS],
    budgets: [CpuBudget; WAITING_BITS],
    // Bits whose count is not zero.
    present: u64,
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting {
            counts: [0; WAITING_BITS],
            budgets: [CpuBudget::UNLIMITED; WAITING_BITS],
            present: 0,
        }
    }
}

impl Waiting {
    /// The bit (index) standing for tenant `slot`.
    pub fn bit(slot: usize) -> usize {
        slot.min(WAITING_BITS - 1)
    }

    /// The mask bit of tenant `slot`, to build a message's mask.
    pub fn mask_of(slot: usize) -> u64 {
        1 << Self::bit(slot)
    }

    /// Records tenant `slot`'s budget (as of the rule that matched a queued message).
    pub fn note_budget(&mut self, slot: usize, budget: CpuBudget) {
        self.budgets[Self::bit(slot)] = budget;
    }

    /// A queued message for the tenants in `mask`.
    pub fn add(&mut self, mask: u64) {
        let mut m = mask;
        while m != 0 {
            let bit = m.trailing_zeros() as usize;
            self.counts[bit] += 1;
            m &= m - 1;
        }
        self.present |= mask;
    }

    /// A message for the tenants in `mask` left the queue.
    pub fn remove(&mut self, mask: u64) {
        let mut m = mask;
        while m != 0 {
            let bit = m.trailing_zeros() as usize;
            self.counts[bit] = self.counts[bit].saturating_sub(1);
            if self.counts[bit] == 0 {
                self.present &= !(1 << bit);
            }
            m &= m - 1;
        }
    }

    /// Whether no tenant's event is waiting.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// The waiting tenants' bits and budgets.
    fn tenants(&self) -> impl Iterator<Item = (usize, CpuBudget)> + '_ {
        let mut m = self.present;
        std::iter::from_fn(move || {
            if m == 0 {
                return None;
            }
            let bit = m.trailing_zeros() as usize;
            m &= m - 1;
            Some((bit, self.budgets[bit]))
        })
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

    /// Tenant `slot` (with `budget`) has one event waiting.
    fn waiting(tenants: &[(usize, CpuBudget)]) -> Waiting {
        let mut w = Waiting::default();
        for &(slot, b) in tenants {
            w.note_budget(slot, b);
            w.add(Waiting::mask_of(slot));
        }
        w
    }

    #[test]
    fn sheds_once_the_share_is_used_while_another_tenant_waits() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let b = budget(10); // 100 ms per second
        let others = waiting(&[(1, b)]);
        let mut t = t0;
        // Ten 10 ms invocations: still within 100 ms until the last is charged.
        for _ in 0..10 {
            assert!(m.admit(0, &b, t, &others).is_ok());
            t += 10 * MS;
            m.charge(0, &b, 10 * MS, t);
        }
        let over = m.admit(0, &b, t, &others).unwrap_err();
        assert_eq!((over.used_us, over.allowance_us), (100_000, 100_000));
        assert!(over.to_string().contains("over its 10% share"), "{over}");
        // The waiting tenant itself, which has used nothing, runs.
        assert!(m.admit(1, &b, t, &waiting(&[(0, b)])).is_ok());
    }

    #[test]
    fn an_over_share_tenant_with_the_worker_to_itself_runs() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let b = budget(10);
        m.charge(0, &b, 900 * MS, t0 + 950 * MS);
        // Nobody waits, or only its own events wait: not contention.
        assert!(m.admit(0, &b, t0 + 960 * MS, &Waiting::default()).is_ok());
        assert!(m.admit(0, &b, t0 + 960 * MS, &waiting(&[(0, b)])).is_ok());
    }

    #[test]
    fn contention_is_weighted_by_share() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let (small, big) = (budget(10), budget(50));
        let t = t0 + 500 * MS;
        // Tenant 0 (10%) used 150 ms: 15 ms per percent. Tenant 1 (50%) used 600 ms:
        // 12 ms per percent. Both are over their shares.
        m.charge(0, &small, 150 * MS, t);
        m.charge(1, &big, 600 * MS, t);
        // Tenant 0 has had more for its share: it yields to tenant 1 ...
        assert!(m.admit(0, &small, t, &waiting(&[(1, big)])).is_err());
        // ... and tenant 1 runs although tenant 0 waits.
        assert!(m.admit(1, &big, t, &waiting(&[(0, small)])).is_ok());
    }

    #[test]
    fn a_named_tenant_over_its_share_yields_to_the_default_tenant() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let b = budget(10);
        m.charge(0, &b, 200 * MS, t0 + 300 * MS);
        let default_waits = waiting(&[(1, CpuBudget::UNLIMITED)]);
        assert!(m.admit(0, &b, t0 + 300 * MS, &default_waits).is_err());
        // The default tenant itself is never metered.
        assert!(
            m.admit(1, &CpuBudget::UNLIMITED, t0, &waiting(&[(0, b)]))
                .is_ok()
        );
    }

    #[test]
    fn usage_leaves_the_window_as_time_passes() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let b = budget(10);
        let others = waiting(&[(0, b)]);
        m.charge(3, &b, 150 * MS, t0 + 150 * MS);
        assert!(m.admit(3, &b, t0 + 200 * MS, &others).is_err());
        // Still within the window 0.9 s later...
        assert!(m.admit(3, &b, t0 + 1000 * MS, &others).is_err());
        // ... and forgotten once its bucket falls out of it.
        assert!(m.admit(3, &b, t0 + 1200 * MS, &others).is_ok());
        // A long idle gap empties every bucket.
        m.charge(3, &b, 200 * MS, t0 + 1400 * MS);
        assert!(m.admit(3, &b, t0 + 60_000 * MS, &others).is_ok());
    }

    #[test]
    fn settling_a_round_takes_back_the_time_the_worker_was_descheduled() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let b = budget(10);
        let others = waiting(&[(1, b)]);
        // 120 ms of wall time charged in one round, in which the thread had the CPU for
        // only half of the round: 60 ms stay, under the 100 ms share.
        m.charge(0, &b, 80 * MS, t0 + 80 * MS);
        m.charge(0, &b, 40 * MS, t0 + 120 * MS);
        assert!(m.in_round());
        assert!(
            m.admit(0, &b, t0 + 120 * MS, &others).is_err(),
            "before settling"
        );
        m.settle(60 * MS, 120 * MS);
        assert!(!m.in_round());
        assert!(m.admit(0, &b, t0 + 120 * MS, &others).is_ok());
        assert_eq!(m.meters[0].sum, 60_000);
        // A round the thread ran through keeps its charges whole.
        m.charge(0, &b, 50 * MS, t0 + 170 * MS);
        m.settle(50 * MS, 50 * MS);
        assert_eq!(m.meters[0].sum, 110_000);
    }

    #[test]
    fn a_full_share_is_not_metered() {
        let t0 = Instant::now();
        let mut m = TenantMeters::new(t0);
        let b = CpuBudget::UNLIMITED;
        m.charge(0, &b, 10_000 * MS, t0 + 10_000 * MS);
        assert!(
            m.admit(0, &b, t0 + MS, &waiting(&[(1, budget(10))]))
                .is_ok()
        );
        assert!(m.meters.is_empty(), "unlimited tenants take no memory");
    }

    #[test]
    fn waiting_counts_each_tenants_messages() {
        let mut w = Waiting::default();
        let two = Waiting::mask_of(2) | Waiting::mask_of(5);
        w.add(two);
        w.add(Waiting::mask_of(2));
        w.remove(two);
        assert_eq!(w.tenants().map(|(b, _)| b).collect::<Vec<_>>(), [2]);
        w.remove(Waiting::mask_of(2));
        assert!(w.is_empty());
        // Slots past the mask's width share its last bit.
        assert_eq!(Waiting::bit(70), 63);
    }
}
