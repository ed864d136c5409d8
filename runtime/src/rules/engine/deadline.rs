//! The per-invocation deadline in CPU time, on top of wasmtime's epoch interruption.
//!
//! The epoch ticker advances every [`TICK`] of wall time. A fresh store's epoch deadline
//! is one tick away, so an invocation that finishes before the next tick (nearly all of
//! them: a typical rule takes microseconds) never reaches [`at_deadline`] and reads no
//! clock at all. One that crosses a tick gets the callback, which reads the worker
//! thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`) the first time as a mark, and from
//! then on compares the CPU time the thread used since the mark with the rule's budget:
//! under budget, the deadline is moved ahead by half the ticks the budget has left (at
//! least one); at or over it, the invocation is interrupted and fails with `timeout`.
//! Halving, rather than moving by all that is left, keeps the overshoot within one tick
//! although a tick (the ticker thread's 1 ms sleep) lasts a little longer than 1 ms, and
//! longer still on a loaded machine: a runaway rule costs a handful of checks, a
//! well-behaved one none.
//!
//! So time the thread spends descheduled (other processes, the broker and Redis on the
//! same cores, a hypervisor's steal) is not charged to the rule. Before the first check
//! the invocation ran for at most one tick, which is charged as a whole tick (the most
//! it can have used; reading the clock at the start would cost every event a system
//! call). A rule that spins is therefore stopped within one tick of its budget, after
//! it (at the earliest one tick before it, if it started just before a tick), and a
//! rule that uses less than its budget minus one tick is never stopped.
//!
//! CPU time cannot see a thread that is stopped or starved for good (a paused VM, a
//! `SIGSTOP`, a machine thrashing on swap). A wall-clock backstop,
//! [`wall_backstop`], measured from the first check, catches those; it ends the
//! invocation as `RuleError::Stalled`, which the caller
//! treats as the host's failure, not the rule's (the event is run again, never
//! dead-lettered).
//!
//! This file does not know about tenants or CPU shares (`cpu_budget.rs` meters those).

use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

/// Length of one epoch tick: the resolution of the CPU deadline.
pub(super) const TICK: Duration = Duration::from_millis(1);

/// The least wall time an invocation may take before the backstop ends it.
const MIN_WALL_BACKSTOP: Duration = Duration::from_secs(1);
/// The backstop as a multiple of the CPU budget, when that is longer.
const WALL_BACKSTOP_FACTOR: u32 = 10;

/// How long, in wall time, an invocation with a CPU budget of `budget` may run before it
/// is ended as stalled: ten times its budget, and at least one second.
pub fn wall_backstop(budget: Duration) -> Duration {
    budget
        .saturating_mul(WALL_BACKSTOP_FACTOR)
        .max(MIN_WALL_BACKSTOP)
}

/// One invocation's deadline state, kept in the store's data.
#[derive(Debug, Clone)]
pub(super) struct Deadline {
    /// CPU time the invocation may use.
    budget: Duration,
    /// Wall time after the first check at which the invocation counts as stalled.
    backstop: Duration,
    /// Thread CPU time and wall time at the first check, once there has been one.
    mark: Option<(Duration, Instant)>,
    /// Set when the backstop, not the budget, ended the invocation.
    pub(super) stalled: Option<Stall>,
}

/// What the backstop saw when it ended an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stall {
    pub(super) wall: Duration,
    pub(super) cpu: Duration,
}

impl Deadline {
    pub(super) fn new(budget: Duration) -> Deadline {
        Deadline {
            budget,
            backstop: wall_backstop(budget),
            mark: None,
            stalled: None,
        }
    }

    /// The decision at an epoch deadline, given the thread's CPU clock and the time now.
    fn check(&mut self, cpu: Duration, now: Instant) -> UpdateDeadline {
        // The first check comes at the first tick after the invocation started, so
        // before it the invocation used at most about one tick of CPU: charge that
        // tick whole (no clock was read at the start, the fast path reads none).
        let (cpu0, wall0) = *self.mark.get_or_insert((cpu.saturating_sub(TICK), now));
        let used = cpu.saturating_sub(cpu0);
        if used >= self.budget {
            return UpdateDeadline::Interrupt;
        }
        let wall = now.saturating_duration_since(wall0);
        if wall >= self.backstop {
            self.stalled = Some(Stall { wall, cpu: used });
            return UpdateDeadline::Interrupt;
        }
        // Half of what is left: a tick lasts at least 1 ms but may last longer, so the
        // budget could run out before all of its ticks have passed.
        let left = self.budget - used;
        UpdateDeadline::Continue((ticks(left) / 2).max(1))
    }
}

/// Whole ticks in `d`, rounded up.
pub(super) fn ticks(d: Duration) -> u64 {
    d.as_nanos().div_ceil(TICK.as_nanos()) as u64
}

/// The decision at an epoch deadline of an invocation whose state is `deadline`: the
/// body of the store's epoch-deadline callback (see the module docs).
pub(super) fn at_deadline(deadline: &mut Deadline) -> UpdateDeadline {
    deadline.check(thread_cpu_time(), Instant::now())
}

/// CPU time the calling thread has used (user and system), from
/// `CLOCK_THREAD_CPUTIME_ID`. A system call, not a vDSO read: only called off the fast
/// path.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        // Only fails for an unsupported clock id, which Linux always supports for the
        // calling thread; zero makes every check see no CPU used, leaving the backstop.
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn is_interrupt(u: &UpdateDeadline) -> bool {
        matches!(u, UpdateDeadline::Interrupt)
    }

    fn continued(u: &UpdateDeadline) -> Option<u64> {
        match u {
            UpdateDeadline::Continue(n) => Some(*n),
            _ => None,
        }
    }

    #[test]
    fn the_first_check_charges_a_tick_and_extends_by_half_the_rest() {
        let mut d = Deadline::new(10 * MS);
        let t0 = Instant::now();
        // 1 ms charged for the first tick; half of the 9 ms left.
        assert_eq!(continued(&d.check(5 * MS, t0)), Some(4));
    }

    #[test]
    fn descheduled_time_is_not_charged() {
        let mut d = Deadline::new(10 * MS);
        let t0 = Instant::now();
        d.check(MS, t0);
        // 50 ms of wall time pass while the thread gets 1 ms more of CPU: not a timeout
        // (2 ms charged with the first tick), and the next check is half of the 8 ticks
        // left away.
        let u = d.check(2 * MS, t0 + 50 * MS);
        assert_eq!(continued(&u), Some(4));
        assert!(d.stalled.is_none());
    }

    #[test]
    fn a_rule_that_used_its_budget_is_interrupted() {
        let mut d = Deadline::new(10 * MS);
        let t0 = Instant::now();
        d.check(3 * MS, t0);
        assert!(continued(&d.check(11 * MS, t0 + 9 * MS)).is_some());
        // 1 ms charged for the first tick, 9 ms since: the budget.
        assert!(is_interrupt(&d.check(12 * MS, t0 + 10 * MS)));
        assert!(d.stalled.is_none(), "a timeout, not a stall");
    }

    #[test]
    fn less_than_a_tick_left_still_waits_one_tick() {
        let mut d = Deadline::new(10 * MS);
        let t0 = Instant::now();
        d.check(Duration::ZERO, t0);
        let u = d.check(10 * MS - Duration::from_micros(1), t0 + 10 * MS);
        assert_eq!(continued(&u), Some(1));
    }

    #[test]
    fn the_wall_backstop_ends_a_starved_invocation_as_stalled() {
        let mut d = Deadline::new(10 * MS);
        assert_eq!(wall_backstop(10 * MS), Duration::from_secs(1));
        let t0 = Instant::now();
        d.check(Duration::ZERO, t0);
        assert!(is_interrupt(&d.check(MS, t0 + Duration::from_secs(1))));
        assert_eq!(
            d.stalled,
            Some(Stall {
                wall: Duration::from_secs(1),
                cpu: MS
            })
        );
    }

    #[test]
    fn long_budgets_get_a_proportional_backstop() {
        assert_eq!(
            wall_backstop(Duration::from_secs(2)),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn the_thread_clock_moves_with_work_and_not_with_sleep() {
        let a = thread_cpu_time();
        std::thread::sleep(20 * MS);
        let b = thread_cpu_time();
        assert!(b - a < 15 * MS, "sleeping used {:?} of CPU", b - a);
        let mut x = 0u64;
        while thread_cpu_time() - b < 5 * MS {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(thread_cpu_time() - b >= 5 * MS && x > 0);
    }
}
