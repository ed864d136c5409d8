//! Counters the runtime keeps about itself. Plain atomics: cheap to bump from any thread,
//! read by tests, the periodic status line, and (later) a metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

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
}
