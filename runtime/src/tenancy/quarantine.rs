//! Taking a failing rule out of service for a while.
//!
//! Each loaded rule version has a [`RuleHealth`]. Failures (traps, timeouts, limits,
//! policy violations, reported errors) are recorded in a sliding window; when a tenant's
//! `quarantine.failures` happen within its `quarantine.window`, the rule is quarantined:
//! it receives no events until its backoff has passed (doubling at each repeat, up to an
//! hour) or a new version of its file is dropped in (a new version has a fresh health).
//! Quarantine takes a rule that keeps failing (say, burning its whole CPU deadline on
//! every event) out altogether; the tenant's CPU share (`cpu_budget.rs`) already keeps
//! it from taking the workers away from other tenants meanwhile.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::tenancy::policy::Quarantine;

const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The state of one loaded rule version.
#[derive(Debug)]
pub struct RuleHealth {
    origin: Instant,
    // Quarantined until this many microseconds after `origin`; 0 when in service. Read
    // on every event without locking.
    until_us: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failures: VecDeque<Instant>,
    quarantines: u32,
}

/// What [`RuleHealth::check`] found.
// `Service::InService` reads as meant; the lint only fires since the module is private.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    InService,
    Quarantined,
    /// The quarantine just ended: in service again.
    Restored,
}

impl Default for RuleHealth {
    fn default() -> Self {
        RuleHealth {
            origin: Instant::now(),
            until_us: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        }
    }
}

impl RuleHealth {
    /// A rule in service with no failures.
    pub fn new() -> Self {
        Self::default()
    }

    fn micros(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_micros() as u64
    }

    /// Whether the rule may receive an event now.
    pub fn check(&self, now: Instant) -> Service {
        let until = self.until_us.load(Ordering::Relaxed);
        if until == 0 {
            return Service::InService;
        }
        if self.micros(now) < until {
            return Service::Quarantined;
        }
        // One caller wins the reset and reports the restore.
        if self
            .until_us
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.lock().failures.clear();
            Service::Restored
        } else {
            Service::InService
        }
    }

    /// Whether the rule is quarantined at `now`, without ending a quarantine that is
    /// over (for `/metrics` and the console; [`RuleHealth::check`] ends it).
    pub fn is_quarantined(&self, now: Instant) -> bool {
        let until = self.until_us.load(Ordering::Relaxed);
        until != 0 && self.micros(now) < until
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain counters: consistent after any panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failure; returns the quarantine's length if this failure started one.
    pub fn record_failure(&self, q: &Quarantine, now: Instant) -> Option<Duration> {
        let mut s = self.lock();
        while s
            .failures
            .front()
            .is_some_and(|&t| now.duration_since(t) > q.window)
        {
            s.failures.pop_front();
        }
        s.failures.push_back(now);
        if s.failures.len() < q.failures as usize || self.until_us.load(Ordering::Relaxed) != 0 {
            return None;
        }
        let backoff = q
            .backoff
            .saturating_mul(1 << s.quarantines.min(16))
            .min(MAX_BACKOFF);
        s.quarantines += 1;
        s.failures.clear();
        self.until_us
            .store(self.micros(now + backoff).max(1), Ordering::Relaxed);
        Some(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> Quarantine {
        Quarantine {
            failures: 3,
            window: Duration::from_secs(10),
            backoff: Duration::from_secs(60),
        }
    }

    #[test]
    fn quarantines_after_n_failures_in_the_window() {
        let h = RuleHealth::new();
        let t0 = Instant::now();
        assert_eq!(h.record_failure(&q(), t0), None);
        // Outside the window: forgotten.
        assert_eq!(h.record_failure(&q(), t0 + Duration::from_secs(11)), None);
        assert_eq!(h.record_failure(&q(), t0 + Duration::from_secs(12)), None);
        assert_eq!(h.check(t0 + Duration::from_secs(12)), Service::InService);
        assert_eq!(
            h.record_failure(&q(), t0 + Duration::from_secs(13)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(h.check(t0 + Duration::from_secs(14)), Service::Quarantined);
        assert_eq!(h.check(t0 + Duration::from_secs(74)), Service::Restored);
        assert_eq!(h.check(t0 + Duration::from_secs(75)), Service::InService);
    }

    #[test]
    fn repeat_quarantines_back_off_longer() {
        let h = RuleHealth::new();
        let mut t = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..3 {
            for _ in 0..3 {
                t += Duration::from_millis(1);
                if let Some(d) = h.record_failure(&q(), t) {
                    lengths.push(d);
                    t += d;
                    h.check(t);
                }
            }
        }
        assert_eq!(
            lengths,
            vec![
                Duration::from_secs(60),
                Duration::from_secs(120),
                Duration::from_secs(240)
            ]
        );
    }
}
