//! Acknowledge-after-write: a QoS 1/2 message is acknowledged to the broker only once
//! every Redis command its rules produced has been confirmed (or refused by Redis for
//! good), and acknowledgements leave in the order the messages arrived, as MQTT
//! requires (MQTT 3.1.1 4.6, MQTT 5 4.6).
//!
//! The MQTT source registers each QoS 1/2 message as it arrives; the Redis writer
//! reports messages as done once written. Messages finish out of order (different
//! workers, different pipelines); the tracker holds back an acknowledgement until every
//! earlier one can go too. A message whose acknowledgement never leaves is redelivered
//! by the broker: at-least-once.
//!
//! On a disconnect, pending acknowledgements belong to a session state the broker may no
//! longer have; they are dropped (the broker redelivers those messages) rather than sent
//! on the new connection, where a packet id could name a different message.
//!
//! This file does not talk to the broker: it returns the tokens to acknowledge, and the
//! source sends them.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// What is needed to acknowledge one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    /// Connection the message arrived on.
    pub generation: u64,
    pub pkid: u16,
    /// 1 or 2.
    pub qos: u8,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    // Messages awaiting acknowledgement, in arrival order.
    pending: VecDeque<(u64, AckToken)>,
    // Finished messages not yet at the head of `pending`.
    done: HashSet<u64>,
}

/// Orders acknowledgements. Shared by the MQTT source and the Redis writer.
#[derive(Debug, Default)]
pub struct AckTracker {
    state: Mutex<State>,
}

impl AckTracker {
    /// A tracker for connection generation 0.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across a panic elsewhere: every method finishes
        // its change before returning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current connection generation, for new tokens.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// A new connection: forget what is pending on the old one.
    pub fn new_connection(&self) -> u64 {
        let mut s = self.lock();
        s.generation += 1;
        s.pending.clear();
        s.done.clear();
        s.generation
    }

    /// Registers message `seq` (in arrival order) to be acknowledged with `token`.
    pub fn received(&self, seq: u64, token: AckToken) {
        let mut s = self.lock();
        if token.generation == s.generation {
            s.pending.push_back((seq, token));
        }
    }

    /// Marks messages as written; returns the tokens that may be acknowledged now, in
    /// order. Unknown sequence numbers (QoS 0, or an old connection) are ignored.
    pub fn completed(&self, seqs: impl IntoIterator<Item = u64>) -> Vec<AckToken> {
        let mut s = self.lock();
        for seq in seqs {
            // `pending` is in arrival order, and sequence numbers grow with arrival.
            if s.pending.binary_search_by_key(&seq, |(p, _)| *p).is_ok() {
                s.done.insert(seq);
            }
        }
        let mut ready = Vec::new();
        while let Some(&(seq, token)) = s.pending.front() {
            if !s.done.remove(&seq) {
                break;
            }
            s.pending.pop_front();
            ready.push(token);
        }
        ready
    }

    /// Messages received but not yet acknowledged.
    pub fn outstanding(&self) -> usize {
        self.lock().pending.len()
    }
}

/// Where finished messages are reported: marks them in the tracker and passes on the
/// acknowledgements that became due. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Completions {
    tracker: Arc<AckTracker>,
    due: mpsc::UnboundedSender<Vec<AckToken>>,
    streams: Arc<StreamAcks>,
}

/// Redis stream entries (`source/redis/streams.rs`) waiting for their rules' writes,
/// by message sequence number; finished ones go to the stream reader, which
/// acknowledges them with `XACK`. Order does not matter there: each entry is
/// acknowledged by id.
#[derive(Debug, Default)]
pub struct StreamAcks {
    // Whether any entry was ever registered: the MQTT path pays one atomic load.
    active: std::sync::atomic::AtomicBool,
    pending: Mutex<std::collections::HashMap<u64, StreamEntry>>,
    done: Mutex<Option<mpsc::UnboundedSender<StreamEntry>>>,
}

/// One stream entry: its stream key (namespaced) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub key: Vec<u8>,
    pub id: String,
}

impl StreamAcks {
    /// Finished entries go to `tx` from now on.
    pub fn reader(&self, tx: mpsc::UnboundedSender<StreamEntry>) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// Message `seq` carries `entry`, to acknowledge once it is done.
    pub fn register(&self, seq: u64, entry: StreamEntry) {
        self.active
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, entry);
    }

    fn completed(&self, seqs: &[u64]) {
        if !self.active.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        for seq in seqs {
            if let Some(e) = pending.remove(seq)
                && let Some(tx) = done.as_ref()
            {
                let _ = tx.send(e);
            }
        }
    }
}

impl Completions {
    /// A handle reporting to `tracker`, sending due acknowledgements to `due`. The
    /// channel holds at most the broker's in-flight window of tokens.
    pub fn new(tracker: Arc<AckTracker>, due: mpsc::UnboundedSender<Vec<AckToken>>) -> Self {
        Completions {
            tracker,
            due,
            streams: Arc::default(),
        }
    }

    /// Where Redis stream entries are registered for acknowledgement.
    pub fn stream_acks(&self) -> Arc<StreamAcks> {
        self.streams.clone()
    }

    /// Messages `seqs` are written (or failed for good): acknowledge what is now due.
    pub fn done(&self, seqs: &[u64]) {
        if seqs.is_empty() {
            return;
        }
        self.streams.completed(seqs);
        let ready = self.tracker.completed(seqs.iter().copied());
        if !ready.is_empty() {
            // The receiver only goes away at shutdown, when acks no longer matter.
            let _ = self.due.send(ready);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(g: u64, pkid: u16) -> AckToken {
        AckToken {
            generation: g,
            pkid,
            qos: 1,
        }
    }

    #[test]
    fn acknowledges_in_arrival_order() {
        let t = AckTracker::new();
        for (seq, pkid) in [(10, 1), (11, 2), (12, 3)] {
            t.received(seq, tok(0, pkid));
        }
        assert_eq!(t.completed([12]), vec![]);
        assert_eq!(t.completed([11]), vec![]);
        assert_eq!(t.completed([10]), vec![tok(0, 1), tok(0, 2), tok(0, 3)]);
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn unknown_completions_are_ignored() {
        let t = AckTracker::new();
        t.received(5, tok(0, 9));
        assert_eq!(t.completed([4, 6]), vec![]);
        assert_eq!(t.completed([5]), vec![tok(0, 9)]);
    }

    #[test]
    fn a_new_connection_drops_pending_acks() {
        let t = AckTracker::new();
        t.received(1, tok(0, 1));
        t.received(2, tok(0, 2));
        assert_eq!(t.new_connection(), 1);
        // Messages from the old connection finishing now must not be acknowledged.
        assert_eq!(t.completed([1, 2]), vec![]);
        // Tokens minted for the old generation are refused.
        t.received(3, tok(0, 3));
        assert_eq!(t.outstanding(), 0);
        t.received(4, tok(1, 1));
        assert_eq!(t.completed([4]), vec![tok(1, 1)]);
    }
}
