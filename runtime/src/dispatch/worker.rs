//! A worker thread's loop: takes messages from its queue (looking a little ahead to see
//! whose events wait, `cpu_budget.rs`), and for each runs the matching rules that are in
//! service (`tenancy/quarantine.rs`) and within their tenant's CPU share, encodes the
//! event once, invokes the rule (`rules/engine/`), checks its commands with the
//! tenant's policy (`tenancy/policy.rs`) and gathers them into one batch for the Redis
//! writer. What fails goes to `dead_letter.rs`. A rule with a canary has the canary
//! run on the same event after it (`canary.rs`), its time charged like the rule's.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::WorkerSetup;
use super::canary::{CanaryRunner, LiveRun};
use super::dead_letter::{FailureLog, dead_letter};
use super::reads::SinkReads;
use super::tap::Tap;
use crate::actions::MqttAction;
use crate::commands::Commands;
use crate::event::{EventEncoder, Message};
use crate::ops::metrics::Metrics;
use crate::record::Output;
use crate::rules::engine::{RedisReads, RuleError, thread_cpu_time};
use crate::rules::ruleset::{LoadedRule, Rules};
use crate::sink::batch::WriteBatch;
use crate::tenancy::cpu_budget::{OverBudget, TenantMeters, Waiting};
use crate::tenancy::quarantine::Service;

/// A worker hands its batch to the Redis writer at this many commands even if more
/// messages are waiting, to bound latency and memory.
const MAX_BATCH_COMMANDS: usize = 512;
/// Messages a worker takes from its queue ahead of the one it handles, so that it knows
/// which tenants have events waiting (`cpu_budget.rs`, [`Waiting`]).
const LOOKAHEAD: usize = 64;

/// One worker thread's state: its queue, the rule set it reads, its scratch space.
pub(super) struct Worker {
    rx: mpsc::Receiver<Message>,
    rules: Arc<Rules>,
    sink: mpsc::Sender<WriteBatch>,
    metrics: Arc<Metrics>,
    encoder: EventEncoder,
    event: Vec<u8>,
    matched: Vec<usize>,
    // One invocation's raw output, checked by the tenant's policy before it joins the
    // batch: Redis commands, and MQTT actions of v2 rules.
    scratch: Commands,
    actions: Vec<MqttAction>,
    // Reads of v2 rules (a `SinkReads`); lent to the engine for an invocation.
    reads: Option<Box<dyn RedisReads>>,
    // Whether MQTT actions go to the embedded broker (all kinds) or an external one
    // (publish only).
    embedded_broker: bool,
    failures: FailureLog,
    // Scratch space of canaries (`canary.rs`).
    canaries: CanaryRunner,
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
    // The recording, when `--record` is on.
    tap: Option<Tap>,
}

impl Worker {
    pub(super) fn new(
        rx: mpsc::Receiver<Message>,
        rules: Arc<Rules>,
        sink: mpsc::Sender<WriteBatch>,
        metrics: Arc<Metrics>,
        setup: &WorkerSetup<'_>,
    ) -> Worker {
        Worker {
            reads: Some(Box::new(SinkReads::new(sink.clone(), metrics.clone()))),
            rx,
            rules,
            sink,
            metrics,
            encoder: EventEncoder::new(setup.node),
            event: Vec::with_capacity(1024),
            matched: Vec::new(),
            scratch: Commands::new(),
            actions: Vec::new(),
            embedded_broker: setup.embedded_broker,
            failures: FailureLog::default(),
            canaries: CanaryRunner::default(),
            meters: TenantMeters::new(Instant::now()),
            ahead: VecDeque::with_capacity(LOOKAHEAD),
            waiting: Waiting::default(),
            tenants_of: Vec::new(),
            round: None,
            tap: setup.recorder.clone().map(Tap::new),
        }
    }

    /// Takes messages until the queue is closed and empty; hands each round's batch to
    /// the Redis writer.
    pub(super) fn run(&mut self) {
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
            if let Some(tap) = &mut self.tap {
                tap.flush();
            }
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

    /// Runs every rule matching `m` that is in service and within its tenant's CPU
    /// share; their checked commands, or dead letters, go into `batch`.
    fn handle(&mut self, m: &Message, batch: &mut WriteBatch) {
        self.run_matching(m, batch);
        if m.tracked {
            // Acknowledged once this batch's commands (which include this message's)
            // are written. Noted after the rules ran: a v2 rule's read sends the batch
            // so far ahead of it, and this message is not done then.
            batch.done.push(m.seq);
        }
        batch.note_received(m.received_at);
    }

    fn run_matching(&mut self, m: &Message, batch: &mut WriteBatch) {
        let set = self.rules.load();
        set.matching(&m.topic, &mut self.matched);
        if self.matched.is_empty() {
            Metrics::add(&self.metrics.messages_unmatched, 1);
            return;
        }
        // Encoded at the first invocation: an event that every matching rule sheds or
        // skips is never encoded.
        let mut encoded = false;
        if let Some(tap) = &mut self.tap {
            // A recording keeps every matched event, run or not.
            self.encoder.publish_event(m, &mut self.event);
            encoded = true;
            tap.begin(m, &self.event);
        }
        let matched = std::mem::take(&mut self.matched);
        let now = Instant::now();
        for &i in &matched {
            let loaded = set.at(i);
            loaded.meters.matched.inc();
            if !self.in_service(loaded, now) {
                self.tap_skipped(loaded, "quarantined");
                continue;
            }
            let Ok(start) = self.admit(loaded, m, batch) else {
                self.tap_skipped(loaded, OverBudget::KIND);
                continue;
            };
            if !encoded {
                self.encoder.publish_event(m, &mut self.event);
                encoded = true;
            }
            self.run_rule(loaded, set.canary_at(i), m, start, batch, now);
        }
        self.matched = matched;
        if let Some(tap) = &mut self.tap {
            tap.finish();
        }
    }

    /// Records that `loaded` was not run on the event (`kind`: why).
    fn tap_skipped(&mut self, loaded: &LoadedRule, kind: &str) {
        if let Some(tap) = &mut self.tap {
            tap.invocation(loaded, &Commands::new(), &[], Some(kind));
        }
    }

    /// Whether `loaded` is out of quarantine (counting a skip if not).
    fn in_service(&self, loaded: &LoadedRule, now: Instant) -> bool {
        match loaded.health.check(now) {
            Service::InService => {}
            Service::Quarantined => {
                Metrics::add(&self.metrics.quarantined_skips, 1);
                loaded.meters.failed("quarantined", None);
                return false;
            }
            Service::Restored => tracing::info!(
                rule = %loaded.id,
                tenant = %loaded.tenant,
                version = loaded.version(),
                generation = loaded.generation,
                "rule {} is back from quarantine",
                loaded.id
            ),
        }
        true
    }

    /// The CPU share's admission: `Ok` with the invocation's start for a metered tenant
    /// (`None` for one without a share), `Err` when the event was shed.
    fn admit(
        &mut self,
        loaded: &Arc<LoadedRule>,
        m: &Message,
        batch: &mut WriteBatch,
    ) -> Result<Option<Instant>, ()> {
        let policy = &loaded.policy;
        // Metered tenants pay two wall-clock reads per invocation, and two CPU-clock
        // reads per round; others none.
        if !policy.cpu.is_limited() {
            return Ok(None);
        }
        let start = Instant::now();
        if self.round.is_none() {
            self.round = Some((thread_cpu_time(), start));
        }
        let admitted = self
            .meters
            .admit(loaded.tenant_slot, &policy.cpu, start, &self.waiting);
        // Over its share, a tenant still runs unless another tenant that has had
        // less is waiting: the share divides contended time, idle time is
        // anyone's.
        if let Err(over) = admitted {
            self.shed(loaded, m, &over, batch);
            return Err(());
        }
        Ok(Some(start))
    }

    /// One invocation on the encoded event: charged to the tenant's meter if `start`,
    /// its output checked by the tenant's policy into `batch`, or a failure; then the
    /// rule's `canary`, if it has one, on the same event.
    fn run_rule(
        &mut self,
        loaded: &Arc<LoadedRule>,
        canary: Option<&Arc<LoadedRule>>,
        m: &Message,
        start: Option<Instant>,
        batch: &mut WriteBatch,
        now: Instant,
    ) {
        let policy = &loaded.policy;
        Metrics::add(&self.metrics.invocations, 1);
        // A metered tenant's start is taken already: two clock reads either way.
        let began = start.unwrap_or_else(Instant::now);
        // The live version's reads, for its canary to be answered from and for the
        // recording.
        let log_reads = (canary.is_some() || self.tap.is_some()) && loaded.rule.abi() >= 2;
        let outcome = self
            .invoke(loaded, m, batch, log_reads)
            .map_err(|e| (e.kind(), e.to_string()));
        let reads = if log_reads {
            self.port().log.take().unwrap_or_default()
        } else {
            Vec::new()
        };
        let end = Instant::now();
        let took = end - began;
        loaded.meters.invocation.observe_duration(took);
        loaded.meters.tenant_seconds.add(took);
        if start.is_some() {
            self.meters
                .charge(loaded.tenant_slot, &policy.cpu, took, end);
        }
        // What the canary is compared with: the output as the rule returned it.
        let live = canary.map(|_| LiveRun {
            rule: loaded,
            output: match &outcome {
                Ok(_) => Output {
                    commands: self.scratch.clone(),
                    actions: self.actions.clone(),
                    error: None,
                },
                Err((kind, _)) => Output {
                    error: Some((*kind).to_owned()),
                    ..Output::default()
                },
            },
            reads: reads.clone(),
        });
        let outcome = outcome
            .and_then(|_| self.check_actions(loaded))
            .and_then(|_| {
                policy
                    .apply(&self.scratch, &mut batch.commands)
                    .map_err(|e| (e.kind(), e.to_string()))
            });
        if let Some(tap) = &mut self.tap {
            let error = outcome.as_ref().err().map(|(kind, _)| *kind);
            tap.reads = reads;
            tap.invocation(loaded, &self.scratch, &self.actions, error);
        }
        match outcome {
            Ok(()) => {
                loaded.meters.ok.inc();
                if !self.scratch.is_empty() {
                    loaded.meters.commands.inc_by(self.scratch.len() as u64);
                    batch.record_origin(loaded, &m.topic, self.scratch.len());
                }
                batch.actions.append(&mut self.actions);
            }
            Err((kind, reason)) => self.failed(loaded, m, kind, &reason, batch, now),
        }
        if let (Some(canary), Some(live)) = (canary, live) {
            self.run_canary(canary, m, live, start.is_some(), batch);
        }
    }

    /// The canary's run after the live version's, its time charged to the tenant's
    /// CPU share like the live version's (when the tenant has one).
    fn run_canary(
        &mut self,
        canary: &Arc<LoadedRule>,
        m: &Message,
        live: LiveRun<'_>,
        metered: bool,
        batch: &mut WriteBatch,
    ) {
        let took = self
            .canaries
            .run(canary, &self.encoder, &self.event, m, live, batch);
        if let (Some(took), true) = (took, metered) {
            let p = &canary.policy;
            self.meters
                .charge(canary.tenant_slot, &p.cpu, took, Instant::now());
        }
    }

    /// Runs `loaded` on the encoded event into `scratch`. An invocation that the host
    /// starved of CPU until the wall-clock backstop ended it is not the rule's failure:
    /// it is logged and run again, as often as it takes (each run is still held to the
    /// rule's CPU deadline, so a rule that spins fails with `timeout`).
    fn invoke(
        &mut self,
        loaded: &Arc<LoadedRule>,
        m: &Message,
        batch: &mut WriteBatch,
        log_reads: bool,
    ) -> Result<usize, RuleError> {
        loop {
            self.scratch.clear();
            self.actions.clear();
            let r = if loaded.rule.abi() >= 2 {
                self.invoke_v2(loaded, batch, log_reads)
            } else {
                loaded
                    .rule
                    .invoke_with(&self.event, &mut self.scratch, &loaded.policy.limits)
            };
            match r {
                Err(e @ RuleError::Stalled { .. }) => {
                    Metrics::add(&self.metrics.host_stalls, 1);
                    tracing::warn!(
                        rule = %loaded.id,
                        tenant = %loaded.tenant,
                        version = loaded.version(),
                        generation = loaded.generation,
                        topic = %m.topic,
                        "rule {} {e}; running the event again (not the rule's failure)",
                        loaded.id
                    );
                }
                r => return r,
            }
        }
    }

    /// A v2 invocation: the worker's pending batch is lent to the reads port, so that a
    /// read can send it ahead of itself, and taken back after.
    fn invoke_v2(
        &mut self,
        loaded: &Arc<LoadedRule>,
        batch: &mut WriteBatch,
        log_reads: bool,
    ) -> Result<usize, RuleError> {
        let port = self.port();
        port.policy = Some(loaded.policy.clone());
        port.batch = std::mem::take(batch);
        // Each attempt's own reads (a stalled attempt is run again).
        if log_reads {
            port.log = Some(Vec::new());
        }
        let r = loaded.rule.invoke_actions(
            &self.event,
            &mut self.scratch,
            &mut self.actions,
            &loaded.policy.limits,
            &mut self.reads,
        );
        let port = self.port();
        *batch = std::mem::take(&mut port.batch);
        port.policy = None;
        r
    }

    fn port(&mut self) -> &mut SinkReads {
        // The engine gives the port back after every invocation, and a worker only
        // ever stores a `SinkReads` there.
        let reads: &mut dyn std::any::Any = self
            .reads
            .as_deref_mut()
            .expect("the engine gives the reads port back");
        reads
            .downcast_mut::<SinkReads>()
            .expect("a worker's reads port is a SinkReads")
    }

    /// The invocation's MQTT actions against the tenant's policy and what the broker
    /// connection can do.
    fn check_actions(&self, loaded: &LoadedRule) -> Result<(), (&'static str, String)> {
        if self.actions.is_empty() {
            return Ok(());
        }
        // The tenant's policy first: what it may not do at all is refused as such,
        // whatever the broker could do.
        loaded
            .policy
            .check_actions(&self.actions)
            .map_err(|e| (e.kind(), e.to_string()))?;
        match self
            .actions
            .iter()
            .find(|a| a.needs_embedded_broker() && !self.embedded_broker)
        {
            Some(a) => Err((
                "action_unsupported",
                format!(
                    "{} needs the embedded broker (--embedded-broker); with an external \
                     broker rules can only publish",
                    a.kind()
                ),
            )),
            None => Ok(()),
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
        Metrics::add(&self.metrics.events_shed, 1);
        loaded.meters.failed(OverBudget::KIND, None);
        loaded.meters.dead_letter();
        let reason = over.to_string();
        self.failures
            .failed(loaded, &m.topic, OverBudget::KIND, &reason);
        dead_letter(&self.encoder, loaded, m, OverBudget::KIND, &reason, batch);
        Metrics::add(&self.metrics.dead_letters, 1);
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
        Metrics::add(&self.metrics.invocation_errors, 1);
        loaded.meters.failed(kind, Some(reason));
        loaded.meters.dead_letter();
        self.failures.failed(loaded, &m.topic, kind, reason);
        dead_letter(&self.encoder, loaded, m, kind, reason, batch);
        Metrics::add(&self.metrics.dead_letters, 1);
        let p = &loaded.policy;
        if let Some(backoff) = loaded.health.record_failure(&p.quarantine, now) {
            tracing::warn!(
                rule = %loaded.id,
                tenant = %loaded.tenant,
                version = loaded.version(),
                generation = loaded.generation,
                topic = %m.topic,
                "rule {} quarantined for {backoff:?} after {} failures within {:?}; \
                 drop in a fixed version to restore it sooner",
                loaded.id,
                p.quarantine.failures,
                p.quarantine.window
            );
        }
    }
}
