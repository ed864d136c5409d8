//! Messages -> matching rules -> commands, on a fixed pool of worker threads. This file
//! routes (a topic to its worker's queue); `worker.rs` is the worker's loop (quarantine,
//! CPU share, encoding, invoking, the policy check); `dead_letter.rs` writes what could
//! not be handled to the tenant's dead-letter stream and logs it. Not here: what a rule
//! may do (`tenancy/`), running wasm (`rules/engine/`), writing to Redis (`sink/`).
//!
//! Each message goes to the worker chosen by a hash of its topic, so messages on one
//! topic are handled, and their commands queued for Redis, in the order they were
//! received. Queues are bounded: when workers fall behind, [`Dispatcher::dispatch`]
//! waits, which pauses the MQTT reader and lets TCP push back on the broker.
//!
//! Workers are OS threads with large stacks, never tokio tasks: wasm runs here, not in
//! the MQTT poll loop, and a guest cannot exhaust the thread's stack (wasmtime's
//! `max_wasm_stack` is at most a quarter of it, `engine/stack.rs`).
//!
//! Fairness between tenants sharing a worker: each worker meters its tenants' CPU time
//! (`cpu_budget.rs`) and looks a little ahead in its queue (`LOOKAHEAD` messages) to
//! see whose events are waiting; while another tenant's events wait and that tenant has
//! had less than its share, an event for a tenant over its share is shed to the
//! tenant's dead-letter stream instead of run, in its place in the topic's order.
//!
//! What is never the rule's failure is never a dead letter: an invocation the host
//! starved of CPU (the deadline's wall-clock backstop, `engine/deadline.rs`) is run
//! again.

mod canary;
mod dead_letter;
mod reads;
mod tap;
mod worker;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::event::Message;
use crate::ops::metrics::Metrics;
use crate::rules::engine::GUEST_THREAD_STACK;
use crate::rules::ruleset::Rules;
use crate::sink::batch::WriteBatch;
use worker::Worker;

/// Native stack of a worker thread: at least four times wasmtime's wasm stack cap, so the
/// guest's stack and the host frames below it always fit (`engine/stack.rs`).
const WORKER_STACK: usize = GUEST_THREAD_STACK;
/// Hands messages to workers.
#[derive(Clone)]
pub struct Dispatcher {
    queues: Arc<[mpsc::Sender<Message>]>,
}

/// The worker threads, to join at shutdown.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Waits until every worker has drained its queue and exited (all [`Dispatcher`]
    /// clones must be dropped first).
    pub fn join(self) {
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
    }
}

/// Starts `workers` threads reading from queues of `queue` messages each.
///
/// # Errors
///
/// When a thread cannot be spawned.
/// How the workers run.
pub struct WorkerSetup<'a> {
    /// Worker threads.
    pub workers: usize,
    /// Messages each worker's queue holds.
    pub queue: usize,
    /// `node` in events.
    pub node: &'a str,
    /// Whether MQTT actions go to the embedded broker (which also takes subscribe,
    /// unsubscribe and deliver) rather than to an external one (publish only).
    pub embedded_broker: bool,
    /// Where workers record what rules see and do (`--record`), if anywhere.
    pub recorder: Option<crate::record::writer::Recorder>,
}

pub fn start(
    setup: WorkerSetup<'_>,
    rules: Arc<Rules>,
    sink: mpsc::Sender<WriteBatch>,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Dispatcher, Workers)> {
    let workers = setup.workers;
    let mut queues = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = mpsc::channel(setup.queue);
        queues.push(tx);
        let mut worker = Worker::new(rx, rules.clone(), sink.clone(), metrics.clone(), &setup);
        threads.push(
            std::thread::Builder::new()
                .name(format!("wasmrule-worker-{i}"))
                .stack_size(WORKER_STACK)
                .spawn(move || worker.run())?,
        );
    }
    Ok((
        Dispatcher {
            queues: queues.into(),
        },
        Workers { threads },
    ))
}

impl Dispatcher {
    /// Queues `m` for the worker that owns its topic, waiting while that queue is full.
    ///
    /// # Errors
    ///
    /// When the workers have stopped; the message is returned.
    pub async fn dispatch(&self, m: Message) -> Result<(), Message> {
        let i = (topic_hash(&m.topic) % self.queues.len() as u64) as usize;
        self.queues[i].send(m).await.map_err(|e| e.0)
    }
}

/// FNV-1a: fast, stable, good enough to spread topics over a few workers.
fn topic_hash(topic: &str) -> u64 {
    topic.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::topic_hash;

    #[test]
    fn topic_hash_is_stable() {
        // Ordering per topic relies on the same topic always mapping to one worker.
        assert_eq!(topic_hash("a/b"), topic_hash("a/b"));
        assert_ne!(topic_hash("a/b"), topic_hash("a/c"));
    }
}
