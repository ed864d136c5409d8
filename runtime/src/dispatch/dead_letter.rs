//! What could not be handled: an event a rule failed on, or one shed for its tenant's
//! CPU share, goes to the tenant's dead-letter stream (an `XADD` in the worker's batch,
//! so it keeps its place in the topic's order) and to the log, at most one line per
//! rule per second ([`FailureLog`]). Counting and quarantine are the worker's
//! (`worker.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{EventEncoder, Message};
use crate::rules::ruleset::LoadedRule;
use crate::sink::batch::WriteBatch;

/// Bytes of a failed event's payload kept in the dead-letter stream.
const DEAD_LETTER_PAYLOAD: usize = 16 * 1024;
/// At most one log line per rule per worker in this interval for failing invocations.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Queues the `XADD` of `m` to its tenant's dead-letter stream, with why it was not
/// handled (`kind`, `reason`), in `batch`.
pub(super) fn dead_letter(
    encoder: &EventEncoder,
    loaded: &Arc<LoadedRule>,
    m: &Message,
    kind: &'static str,
    reason: &str,
    batch: &mut WriteBatch,
) {
    let p = &loaded.policy;
    let generation = loaded.generation.to_string();
    let id = encoder.event_id(m);
    let ts = m.received_at.to_string();
    let maxlen = p.dead_letter_maxlen.to_string();
    let payload = &m.payload[..m.payload.len().min(DEAD_LETTER_PAYLOAD)];
    let fields: [&[u8]; 20] = [
        b"rule",
        loaded.id.as_bytes(),
        b"version",
        loaded.version().as_bytes(),
        b"generation",
        generation.as_bytes(),
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
}

/// Rate-limited failure lines, per rule: the first in each interval is logged with how
/// many were suppressed since the last.
#[derive(Default)]
pub(super) struct FailureLog {
    /// Per rule id: when a line was last logged, and failures since then not logged.
    last: HashMap<Arc<str>, (Instant, u64)>,
}

impl FailureLog {
    /// Logs (or counts as suppressed) that `rule` failed on `topic`.
    pub(super) fn failed(&mut self, rule: &LoadedRule, topic: &str, kind: &str, reason: &str) {
        let now = Instant::now();
        let entry = self
            .last
            .entry(rule.id.clone())
            .or_insert((now - ERROR_LOG_INTERVAL, 0));
        if now.duration_since(entry.0) >= ERROR_LOG_INTERVAL {
            let suppressed = std::mem::take(&mut entry.1);
            entry.0 = now;
            tracing::warn!(
                rule = %rule.id,
                tenant = %rule.tenant,
                version = rule.version(),
                generation = rule.generation,
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
