//! The worker's side of a recording (`--record`, `record/`): one record per event that
//! matched a rule, holding the event as the rules got it and, per rule, the reads it
//! made and what it returned (or why it did not run or failed). Built in a buffer the
//! worker keeps, framed into the worker's chunk, which goes to the recorder thread at
//! the end of the worker's round (or when full).

use crate::actions::MqttAction;
use crate::commands::Commands;
use crate::event::Message;
use crate::record::ReadEntry;
use crate::record::format::{Encoder, frame};
use crate::record::writer::{CHUNK, Recorder};
use crate::rules::ruleset::LoadedRule;

/// One worker's recording tap.
pub(super) struct Tap {
    recorder: Recorder,
    buf: Vec<u8>,
    // Framed records not yet handed over, and how many.
    chunk: Vec<u8>,
    chunk_events: u64,
    // Where the record's invocation count is, to fill in at the end.
    count_at: usize,
    count: usize,
    open: bool,
    /// The reads of the v2 invocation being recorded.
    pub(super) reads: Vec<ReadEntry>,
}

impl Tap {
    pub(super) fn new(recorder: Recorder) -> Tap {
        Tap {
            recorder,
            buf: Vec::new(),
            chunk: Vec::new(),
            chunk_events: 0,
            count_at: 0,
            count: 0,
            open: false,
            reads: Vec::new(),
        }
    }

    /// Starts the record of `m`, encoded as `event`.
    pub(super) fn begin(&mut self, m: &Message, event: &[u8]) {
        self.buf.clear();
        let mut e = Encoder(&mut self.buf);
        e.event(m.received_at, &m.topic, event);
        self.count_at = self.buf.len();
        Encoder(&mut self.buf).invocations(0);
        self.count = 0;
        self.open = true;
    }

    /// Adds one rule's invocation: its output, or the kind of its failure (or of why
    /// it was not run: `quarantined`, `cpu_budget`).
    pub(super) fn invocation(
        &mut self,
        loaded: &LoadedRule,
        commands: &Commands,
        actions: &[MqttAction],
        error: Option<&str>,
    ) {
        if !self.open {
            return;
        }
        Encoder(&mut self.buf).invocation(
            &loaded.id,
            loaded.version(),
            &self.reads,
            commands,
            actions,
            error,
        );
        self.reads.clear();
        self.count += 1;
    }

    /// Ends the record: framed into the chunk, handed over if the chunk is full.
    pub(super) fn finish(&mut self) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        let at = self.count_at;
        self.buf[at..at + 4].copy_from_slice(&(self.count as u32).to_le_bytes());
        if self.chunk.capacity() == 0 {
            self.chunk.reserve(CHUNK + self.buf.len() + 8);
        }
        frame(&self.buf, &mut self.chunk);
        self.chunk_events += 1;
        if self.chunk.len() >= CHUNK {
            self.flush();
        }
    }

    /// Hands the records of the chunk to the recorder (the worker's round ended).
    pub(super) fn flush(&mut self) {
        if self.chunk_events > 0 {
            let events = std::mem::take(&mut self.chunk_events);
            self.recorder.send(std::mem::take(&mut self.chunk), events);
        }
    }
}
