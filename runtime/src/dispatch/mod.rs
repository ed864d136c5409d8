//! Messages -> matching rules -> commands, on a fixed pool of worker threads.
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
//! (`cpu_budget.rs`) and looks a little ahead in its queue ([`LOOKAHEAD`] messages) to
//! see whose events are waiting; while another tenant's events wait and that tenant has
//! had less than its share, an event for a tenant over its share is shed to the
//! tenant's dead-letter stream instead of run, in its place in the topic's order.
//!
//! What is never the rule's failure is never a dead letter: an invocation the host
//! starved of CPU (the deadline's wall-clock backstop, `engine/deadline.rs`) is run
//! again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::commands::Commands;
use crate::event::{EventEncoder, Message};
use crate::ops::metrics::Metrics;
use crate::rules::engine::{GUEST_THREAD_STACK, RuleError, thread_cpu_time};
use crate::rules::ruleset::{LoadedRule, Rules};
use crate::sink::batch::WriteBatch;
use crate::tenancy::cpu_budget::{OverBudget, TenantMeters, Waiting};
use crate::tenancy::quarantine::Service;

/// Native stack of a worker thread: at least four times wasmtime's wasm stack cap, so the
/// guest's stack and the host frames below it always fit (`engine/stack.rs`).
const WORKER_STACK: usize = GUEST_THREAD_STACK;
/// A worker hands its batch to the Redis writer at this many commands even if more
/// messages are waiting, to bound latency and memory.
const MAX_BATCH_COMMANDS: usize = 512;
/// At most one log line per rule per worker in this interval for failing invocations.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes of a failed event's payload kept in the dead-letter stream.
const DEAD_LETTER_PAYLOAD: usize = 16 * 1024;
/// Messages a worker takes from its queue ahead of the one it handles, so that it knows
/// which tenants have events waiting (`cpu_budget.rs`, [`Waiting`]).
const LOOKAHEAD: usize = 64;

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
pub fn start(
    workers: usize,
    queue: usize,
    node: &str,
    rules: Arc<Rules>,
    sink: mpsc::Sender<WriteBatch>,
    metrics: Arc<Metrics>,
) -> std::io::Result<(Dispatcher, Workers)> {
    let mut queues = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let (tx, rx) = mpsc::channel(queue);
        queues.push(tx);
        let mut worker = Worker {
            rx,
            rules: rules.clone(),
            sink: sink.clone(),
            metrics: metrics.clone(),
            encoder: EventEncoder::new(node),
            event: Vec::with_capacity(1024),
            matched: Vec::new(),
            scratch: Commands::new(),
            last_error_log: HashMap::new(),
            meters: TenantMeters::new(Instant::now()),
            ahead: VecDeque::with_capacity(LOOKAHEAD),
            waiting: Waiting::default(),
            tenants_of: Vec::new(),
            round: None,
        };
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

struct Worker {
    rx: mpsc::Receiver<Message>,
    rules: Arc<Rules>,
    sink: mpsc::Sender<WriteBatch>,
    metrics: Arc<Metrics>,
    encoder: EventEncoder,
    event: Vec<u8>,
    matched: Vec<usize>,
    // One invocation's raw output, checked by the tenant's policy before it joins the
    // batch.
    scratch: Commands,
    last_error_log: HashMap<Arc<str>, (Instant, u64)>,
    // Each tenant's CPU time on this worker, for its CPU share.
    meters: TenantMeters,
    // Messages taken from `rx` and not yet handled, each with the mask of the tenants
    // whose rules it matched when taken (0 while no tenant is metered).
    ahead: VecDeque<(Message, u64)>,
    // The tenants of the messages in `ahead`.
    waiting: Waiting,
    // Scratch for the matching at lookahead.
    tenants_of: Vec<usize>,
    // The thread's CPU clock and the wall clock at the first metered invocation of the
    // current round, if there was one.
    round: Option<(Duration, Instant)>,
}

impl Worker {
    fn run(&mut self) {
        let mut batch = WriteBatch::default();
        loop {
            if self.ahead.is_empty() {
                let Some(m) = self.rx.blocking_recv() else {
                    return;
                };
                self.take(m);
            }
            // Handle whatever else is already queued, so Redis sees big pipelines under
            // load and single commands, without delay, when idle.
            while batch.commands.len() < MAX_BATCH_COMMANDS && batch.done.len() < MAX_BATCH_COMMANDS
            {
                self.look_ahead();
                let Some((m, mask)) = self.ahead.pop_front() else {
                    break;
                };
                self.waiting.remove(mask);
                self.handle(&m, &mut batch);
            }
            self.settle_round();
            if !batch.is_empty() && self.sink.blocking_send(std::mem::take(&mut batch)).is_err() {
                tracing::error!("Redis writer stopped; worker exiting");
                return;
            }
        }
    }

    /// Ends the round of metered invocations, if one started: charges the tenants the
    /// CPU time the worker had in it (`cpu_budget.rs`).
    fn settle_round(&mut self) {
        if let Some((cpu0, wall0)) = self.round.take() {
            let cpu = thread_cpu_time().saturating_sub(cpu0);
            self.meters.settle(cpu, wall0.elapsed());
        }
    }

    /// Tops `ahead` up from the queue with messages that are already there.
    fn look_ahead(&mut self) {
        while self.ahead.len() < LOOKAHEAD {
            match self.rx.try_recv() {
                Ok(m) => self.take(m),
                Err(_) => break,
            }
        }
    }

    /// Puts `m` in `ahead`, noting which tenants' rules it is for when some tenant is
    /// metered (otherwise nobody asks, and the message is matched only once).
    fn take(&mut self, m: Message) {
        let set = self.rules.load();
        let mut mask = 0;
        if set.metered() {
            set.matching(&m.topic, &mut self.tenants_of);
            for &i in &self.tenants_of {
                let r = set.at(i);
                mask |= Waiting::mask_of(r.tenant_slot);
                self.waiting.note_budget(r.tenant_slot, r.policy.cpu);
            }
            self.waiting.add(mask);
        }
        self.ahead.push_back((m, mask));
    }

    fn handle(&mut self, m: &Message, batch: &mut WriteBatch) {
        if m.tracked {
            // Acknowledged once this batch's commands (which include this message's)
            // are written.
            batch.done.push(m.seq);
        }
        let set = self.rules.load();
        set.matching(&m.topic, &mut self.matched);
        if self.matched.is_empty() {
            Metrics::add(&self.metrics.messages_unmatched, 1);
            return;
        }
        // Encoded at the first invocation: an event that every matching rule sheds or
        // skips is never encoded.
        let mut encoded = false;
        let matched = std::mem::take(&mut self.matched);
        let now = Instant::now();
        for &i in &matched {
            let loaded = set.at(i);
            match loaded.health.check(now) {
                Service::InService => {}
                Service::Quarantined => {
                    Metrics::add(&self.metrics.quarantined_skips, 1);
                    continue;
                }
                Service::Restored => tracing::info!(
                    rule = %loaded.id,
                    tenant = %loaded.tenant,
                    version = loaded.version,
                    "rule {} is back from quarantine",
                    loaded.id
                ),
            }
            let policy = &loaded.policy;
            // Metered tenants pay two wall-clock reads per invocation, and two CPU-clock
            // reads per round; others none.
            let start = if policy.cpu.is_limited() {
                let start = Instant::now();
                if self.round.is_none() {
                    self.round = Some((thread_cpu_time(), start));
                }
                let admitted =
                    self.meters
                        .admit(loaded.tenant_slot, &policy.cpu, start, &self.waiting);
                // Over its share, a tenant still runs unless another tenant that has had
                // less is waiting: the share divides contended time, idle time is
                // anyone's.
                if let Err(over) = admitted {
                    self.shed(loaded, m, &over, batch);
                    continue;
                }
                Some(start)
            } else {
                None
            };
            if !encoded {
                self.encoder.publish_event(m, &mut self.event);
                encoded = true;
            }
            Metrics::add(&self.metrics.invocations, 1);
            let outcome = self
                .invoke(loaded, m)
                .map_err(|e| (e.kind(), e.to_string()));
            if let Some(start) = start {
                let end = Instant::now();
                self.meters
                    .charge(loaded.tenant_slot, &policy.cpu, end - start, end);
            }
            let outcome = outcome.and_then(|_| {
                policy
                    .apply(&self.scratch, &mut batch.commands)
                    .map_err(|e| (e.kind(), e.to_string()))
            });
            match outcome {
                Ok(()) if self.scratch.is_empty() => {}
                Ok(()) => batch.record_origin(loaded, &m.topic, self.scratch.len()),
                Err((kind, reason)) => self.failed(loaded, m, kind, &reason, batch, now),
            }
        }
        self.matched = matched;
    }

    /// Runs `loaded` on the encoded event into `scratch`. An invocation that the host
    /// starved of CPU until the wall-clock backstop ended it is not the rule's failure:
    /// it is logged and run again, as often as it takes (each run is still held to the
    /// rule's CPU deadline, so a rule that spins fails with `timeout`).
    fn invoke(&mut self, loaded: &Arc<LoadedRule>, m: &Message) -> Result<usize, RuleError> {
        loop {
            self.scratch.clear();
            match loaded
                .rule
                .invoke_with(&self.event, &mut self.scratch, &loaded.policy.limits)
            {
                Err(e @ RuleError::Stalled { .. }) => {
                    Metrics::add(&self.metrics.host_stalls, 1);
                    tracing::warn!(
                        rule = %loaded.id,
                        tenant = %loaded.tenant,
                        topic = %m.topic,
                        "rule {} {e}; running the event again (not the rule's failure)",
                        loaded.id
                    );
                }
                r => return r,
            }
        }
    }

    /// An event not run because its tenant is over its CPU share while another tenant's
    /// events wait: counted, logged
    /// (rate-limited) and written to the tenant's dead-letter stream. Not a failure of
    /// the rule, so it does not count towards quarantine.
    fn shed(
        &mut self,
        loaded: &Arc<LoadedRule>,
        m: &Message,
        over: &OverBudget,
        batch: &mut WriteBatch,
    ) {
        self.metrics.shed(&loaded.tenant);
        let reason = over.to_string();
        self.log_failure(loaded, &m.topic, OverBudget::KIND, &reason);
        self.dead_letter(loaded, m, OverBudget::KIND, &reason, batch);
    }

    /// A failed invocation: counted, logged (rate-limited), written to the tenant's
    /// dead-letter stream, and counted towards quarantine.
    fn failed(
        &mut self,
        loaded: &Arc<LoadedRule>,
        m: &Message,
        kind: &'static str,
        reason: &str,
        batch: &mut WriteBatch,
        now: Instant,
    ) {
        self.metrics.failure(&loaded.tenant, kind);
        self.log_failure(loaded, &m.topic, kind, reason);
        self.dead_letter(loaded, m, kind, reason, batch);
        let p = &loaded.policy;
        if let Some(backoff) = loaded.health.record_failure(&p.quarantine, now) {
            tracing::warn!(
                rule = %loaded.id,
                tenant = %loaded.tenant,
                version = loaded.version,
                "rule {} quarantined for {backoff:?} after {} failures within {:?}; \
                 drop in a fixed version to restore it sooner",
                loaded.id,
                p.quarantine.failures,
                p.quarantine.window
            );
        }
    }

    /// Writes `m` to its tenant's dead-letter stream with why it was not handled.
    fn dead_letter(
        &mut self,
        loaded: &Arc<LoadedRule>,
        m: &Message,
        kind: &'static str,
        reason: &str,
        batch: &mut WriteBatch,
    ) {
        let p = &loaded.policy;
        let version = loaded.version.to_string();
        let id = self.encoder.event_id(m);
        let ts = m.received_at.to_string();
        let maxlen = p.dead_letter_maxlen.to_string();
        let payload = &m.payload[..m.payload.len().min(DEAD_LETTER_PAYLOAD)];
        let fields: [&[u8]; 18] = [
            b"rule",
            loaded.id.as_bytes(),
            b"version",
            version.as_bytes(),
            b"topic",
            m.topic.as_bytes(),
            b"kind",
            kind.as_bytes(),
            b"reason",
            reason.as_bytes(),
            b"event_id",
            id.as_bytes(),
            b"timestamp",
            ts.as_bytes(),
            b"payload",
            payload,
            b"tenant",
            loaded.tenant.as_bytes(),
        ];
        batch.commands.push(
            [
                &b"XADD"[..],
                &p.dead_letter_key,
                b"MAXLEN",
                b"~",
                maxlen.as_bytes(),
                b"*",
            ]
            .into_iter()
            .chain(fields),
        );
        batch.record_origin(loaded, &m.topic, 1);
        Metrics::add(&self.metrics.dead_letters, 1);
    }

    fn log_failure(&mut self, rule: &LoadedRule, topic: &str, kind: &str, reason: &str) {
        let now = Instant::now();
        let entry = self
            .last_error_log
            .entry(rule.id.clone())
            .or_insert((now - ERROR_LOG_INTERVAL, 0));
        if now.duration_since(entry.0) >= ERROR_LOG_INTERVAL {
            let suppressed = std::mem::take(&mut entry.1);
            entry.0 = now;
            tracing::warn!(
                rule = %rule.id,
                tenant = %rule.tenant,
                version = rule.version,
                topic,
                kind,
                suppressed,
                "rule {} failed on {topic}: {reason}",
                rule.id
            );
        } else {
            entry.1 += 1;
        }
    }
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
