//! The worker's side of a recording (`--record`, `record/`): one record per event that
//! matched a rule, holding the event as the rules got it and, per rule, the reads it
//! made and what it returned (or why it did not run or failed). Built in a buffer the
//! worker keeps, handed whole to the recorder thread.

use crate::actions::MqttAction;
use crate::commands::Commands;
use crate::event::Message;
use crate::record::ReadEntry;
use crate::record::format::Encoder;
use crate::record::writer::Recorder;
use crate::rules::ruleset::LoadedRule;

/// One worker's recording tap.
pub(super) struct Tap {
    recorder: Recorder,
    buf: Vec<u8>,
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
            count_at: 0,
            count: 0,
            open: false,
            reads: Vec::new(),
        }
    }

    /// Starts the record of `m`, encoded as `event`.
    pub(super) fn begin(&mut self, m: &Message, event: &[u8]) {
        self.buf = Vec::with_capacity(event.len() + m.topic.len() + 128);
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

    /// Hands the record to the recorder.
    pub(super) fn finish(&mut self) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        let at = self.count_at;
        self.buf[at..at + 4].copy_from_slice(&(self.count as u32).to_le_bytes());
        self.recorder.send(std::mem::take(&mut self.buf));
    }
}
