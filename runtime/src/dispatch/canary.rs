//! Running a rule's canary (`NAME.canary.wasm`, docs/canary.md) on the event its live
//! version just ran on, and comparing the two outputs. The canary's output is never
//! written or sent: what it produced is compared with what the live version produced
//! (the raw commands and actions, before the tenant's policy, or the failure's kind)
//! by `record/diff.rs`, counted (`ops/canary_metrics.rs`), and a difference is kept as
//! a sample: in memory for the console, and, at most `rules.canary_samples_per_second`
//! a second, as an `XADD` to the tenant's bounded diff stream in the worker's batch.
//!
//! A canary's reads (ABI v2) are answered from the reads the live version made on the
//! same event, each at most once (`record/reads.rs`); a read the live version did not
//! make gets `unavailable`. So a canary sees the Redis the live version saw and never
//! adds a read to Redis or sends the worker's pending writes ahead.
//!
//! A canary that fails (trap, timeout, fuel, ...) fails on its own: counted in the
//! canary's failures, rate-limited in the log, towards the canary's own quarantine;
//! never a dead letter, never the live version's failure. Charging its time to the
//! tenant's CPU share is the worker's (`worker.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dead_letter::FailureLog;
use crate::actions::MqttAction;
use crate::commands::Commands;
use crate::event::{EventEncoder, Message};
use crate::ops::canary_metrics::DiffSample;
use crate::record::reads::RecordedReads;
use crate::record::{Output, ReadEntry, diff};
use crate::rules::engine::{RedisReads, RuleError};
use crate::rules::ruleset::{Canary, LoadedRule};
use crate::sink::batch::WriteBatch;
use crate::tenancy::quarantine::Service;

/// A worker's scratch space for canaries.
#[derive(Default)]
pub(super) struct CanaryRunner {
    scratch: Commands,
    actions: Vec<MqttAction>,
    failures: FailureLog,
}

/// The live version's side of one comparison.
pub(super) struct LiveRun<'a> {
    pub(super) rule: &'a LoadedRule,
    pub(super) output: Output,
    /// The reads it made, with their replies (ABI v2).
    pub(super) reads: Vec<ReadEntry>,
}

impl CanaryRunner {
    /// Runs `canary` on the encoded `event` of `m` and compares its output with
    /// `live`'s. Returns the time the canary took, or `None` if it did not run (it is
    /// quarantined).
    pub(super) fn run(
        &mut self,
        canary: &Arc<LoadedRule>,
        encoder: &EventEncoder,
        event: &[u8],
        m: &Message,
        live: LiveRun<'_>,
        batch: &mut WriteBatch,
    ) -> Option<Duration> {
        let now = Instant::now();
        // Only canaries are handed here; a live rule has no `canary` part.
        let state = canary.canary.as_deref()?;
        match canary.health.check(now) {
            Service::InService => {}
            Service::Quarantined => {
                state.meters.failed("quarantined");
                return None;
            }
            Service::Restored => tracing::info!(
                rule = %canary.id,
                tenant = %canary.tenant,
                version = canary.version(),
                "canary of {} is back from quarantine",
                canary.id
            ),
        }
        let began = now;
        let result = self.invoke(canary, event, live.reads);
        let took = began.elapsed();
        canary.meters.invocation.observe_duration(took);
        canary.meters.tenant_seconds.add(took);
        let error = match result {
            Ok(()) => None,
            // Not the canary's output: the host starved it; nothing to compare.
            Err(RuleError::Stalled { .. }) => return Some(took),
            Err(e) => {
                self.failed(canary, state, m, &e, now);
                Some(e.kind().to_owned())
            }
        };
        let ours = Output {
            commands: if error.is_some() {
                Commands::new()
            } else {
                std::mem::take(&mut self.scratch)
            },
            actions: if error.is_some() {
                Vec::new()
            } else {
                std::mem::take(&mut self.actions)
            },
            error,
        };
        state.meters.events.inc();
        if !diff::compare(&live.output, &ours).is_empty() {
            state.meters.diffs.inc();
            let sample = DiffSample {
                topic: m.topic.clone(),
                event_id: encoder.event_id(m),
                live: live.output.lines(),
                canary: ours.lines(),
            };
            if state.meters.may_write_sample() {
                write_sample(canary, state, live.rule, m, &sample, batch);
            }
            state.meters.keep(sample);
        }
        // The buffers back, for the next canary.
        self.scratch = ours.commands;
        self.actions = ours.actions;
        Some(took)
    }

    fn invoke(
        &mut self,
        canary: &LoadedRule,
        event: &[u8],
        reads: Vec<ReadEntry>,
    ) -> Result<(), RuleError> {
        self.scratch.clear();
        self.actions.clear();
        let limits = &canary.policy.limits;
        if canary.rule.abi() >= 2 {
            let mut port: Option<Box<dyn RedisReads>> =
                Some(Box::new(RecordedReads::new(reads, None)));
            canary.rule.invoke_actions(
                event,
                &mut self.scratch,
                &mut self.actions,
                limits,
                &mut port,
            )
        } else {
            canary.rule.invoke_with(event, &mut self.scratch, limits)
        }
        .map(|_| ())
    }

    /// A failed canary invocation: the canary's failure only.
    fn failed(
        &mut self,
        canary: &LoadedRule,
        state: &Canary,
        m: &Message,
        e: &RuleError,
        now: Instant,
    ) {
        let kind = e.kind();
        state.meters.failed(kind);
        self.failures
            .failed(canary, &m.topic, kind, &format!("canary: {e}"));
        let q = &canary.policy.quarantine;
        if let Some(backoff) = canary.health.record_failure(q, now) {
            tracing::warn!(
                rule = %canary.id,
                tenant = %canary.tenant,
                version = canary.version(),
                topic = %m.topic,
                "canary of {} quarantined for {backoff:?} after {} failures within {:?}; \
                 the live version is not affected",
                canary.id,
                q.failures,
                q.window
            );
        }
    }
}

/// Queues the `XADD` of one difference to the tenant's diff stream of the rule.
fn write_sample(
    canary: &LoadedRule,
    state: &Canary,
    live: &LoadedRule,
    m: &Message,
    sample: &DiffSample,
    batch: &mut WriteBatch,
) {
    let ts = m.received_at.to_string();
    let live_lines = sample.live.join("\n");
    let canary_lines = sample.canary.join("\n");
    let fields: [&[u8]; 16] = [
        b"rule",
        canary.id.as_bytes(),
        b"live_version",
        live.version().as_bytes(),
        b"canary_version",
        canary.version().as_bytes(),
        b"topic",
        m.topic.as_bytes(),
        b"event_id",
        sample.event_id.as_bytes(),
        b"timestamp",
        ts.as_bytes(),
        b"live",
        live_lines.as_bytes(),
        b"canary",
        canary_lines.as_bytes(),
    ];
    batch.commands.push(
        [
            &b"XADD"[..],
            &state.stream_key,
            b"MAXLEN",
            b"~",
            state.stream_maxlen.as_bytes(),
            b"*",
        ]
        .into_iter()
        .chain(fields),
    );
    batch.record_origin(canary, &m.topic, 1);
}
