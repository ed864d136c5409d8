//! Everything the Redis writer has taken but not yet written, in order, while the spill
//! is in use: records in the [`SpillLog`], and batches that must stay in memory (those
//! with QoS 1/2 messages, and any that did not fit on disk), each tagged with the log
//! position it belongs at.
//!
//! This file decides where a batch goes and hands out replay chunks in arrival order; it
//! does not talk to Redis or acknowledge anything (`sink/redis/` does, with the
//! batches [`Backlog::commit`] returns). See `spill/mod.rs` for the reasoning.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::ops::metrics::Metrics;
use crate::sink::batch::WriteBatch;
use crate::sink::spill::log::{AppendError, Pos, SpillLog};

/// The log and the in-memory batches, in one order.
pub struct Backlog {
    log: SpillLog,
    /// In arrival order; each is written after every record before its position and
    /// before every record at or after it.
    held: VecDeque<(Pos, WriteBatch)>,
    /// Commands plus messages in `held`.
    held_weight: usize,
    /// Above this `held_weight`, no more batches are taken (backpressure).
    max_held: usize,
    /// A spill-full episode is under way.
    full: bool,
    episode: Option<Episode>,
    /// Records that passed their checksum but did not decode (a newer format?).
    undecodable: u64,
    encoded: Vec<u8>,
    metrics: Arc<Metrics>,
}

/// One stretch from the first batch spilled to the backlog being empty again, for the
/// log line that closes it.
struct Episode {
    started: Instant,
    spilled: u64,
    spilled_bytes: u64,
    replay_started: Option<Instant>,
    replayed: u64,
    replayed_commands: u64,
}

/// The next pipeline to replay: records read from the log and in-memory batches, in
/// order. Writing it and then calling [`Backlog::commit`] consumes it; dropping it
/// unwritten leaves the backlog as it was.
pub struct Chunk {
    items: Vec<Item>,
    /// Where the log is read up to.
    end: Pos,
    /// In-memory batches included (the first ones of `held`).
    held: usize,
}

enum Item {
    Spilled(WriteBatch),
    Held(usize),
}

impl Chunk {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl Backlog {
    /// A backlog over `log`, keeping at most about `max_held` commands and messages in
    /// memory before refusing more (see [`Backlog::accepts`]).
    pub fn new(log: SpillLog, max_held: usize, metrics: Arc<Metrics>) -> Backlog {
        let b = Backlog {
            log,
            held: VecDeque::new(),
            held_weight: 0,
            max_held: max_held.max(1),
            full: false,
            episode: None,
            undecodable: 0,
            encoded: Vec::new(),
            metrics,
        };
        b.update_gauges();
        b
    }

    /// Whether nothing waits: the writer may take the direct path.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.log.is_empty()
    }

    /// Whether batches wait in memory (they are lost if the process stops now, and
    /// QoS 1/2 ones are then redelivered by the broker).
    pub fn holds_memory(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether the writer should take another batch. False means backpressure.
    pub fn accepts(&self) -> bool {
        self.held_weight < self.max_held
    }

    /// The spill's on-disk size.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// Takes `batch` behind everything already waiting: into the log if it has no
    /// QoS 1/2 message and fits, else into memory.
    pub fn push(&mut self, batch: WriteBatch) {
        if !batch.is_tracked() {
            self.encoded.clear();
            batch.encode(&mut self.encoded);
            match self.log.append(&self.encoded) {
                Ok(()) => {
                    let bytes = self.encoded.len() as u64;
                    Metrics::add(&self.metrics.spill_batches, 1);
                    Metrics::add(&self.metrics.spill_bytes, bytes);
                    let e = self.episode.get_or_insert_with(|| {
                        tracing::warn!(
                            dir_bytes = self.log.bytes(),
                            "Redis unreachable: spilling QoS 0 batches to disk until it returns"
                        );
                        Episode {
                            started: Instant::now(),
                            spilled: 0,
                            spilled_bytes: 0,
                            replay_started: None,
                            replayed: 0,
                            replayed_commands: 0,
                        }
                    });
                    e.spilled += 1;
                    e.spilled_bytes += bytes;
                    self.end_full();
                    self.update_gauges();
                    return;
                }
                Err(e) => self.start_full(&e),
            }
        }
        self.held_weight += weight(&batch);
        self.held.push_back((self.log.end(), batch));
        self.update_gauges();
    }

    fn start_full(&mut self, e: &AppendError) {
        if std::mem::replace(&mut self.full, true) {
            return;
        }
        Metrics::add(&self.metrics.spill_full, 1);
        tracing::warn!(
            "{e}; QoS 0 batches now wait in memory, then wasmrule stops reading from the \
             broker, which may drop QoS 0 messages, until replay frees space"
        );
    }

    fn end_full(&mut self) {
        if std::mem::replace(&mut self.full, false) {
            tracing::info!("the spill takes batches again");
        }
    }

    /// The next pipeline of about `max_commands` commands, in order. Reads the log; does
    /// not change what waits.
    pub fn chunk(&mut self, max_commands: usize) -> Chunk {
        let mut at = self.log.start();
        let mut items = Vec::new();
        let mut commands = 0;
        let mut held = 0;
        loop {
            let record = self.log.read(at);
            // In-memory batches due before this record (or, at the end, all of them).
            let upto = record.as_ref().map_or_else(|| self.log.end(), |r| r.at);
            while let Some((pos, b)) = self.held.get(held) {
                if *pos > upto {
                    break;
                }
                commands += b.commands.len();
                items.push(Item::Held(held));
                held += 1;
            }
            let Some(record) = record else {
                at = upto;
                break;
            };
            if commands >= max_commands {
                at = record.at;
                break;
            }
            at = record.next;
            match WriteBatch::decode(&record.payload) {
                Ok(b) => {
                    commands += b.commands.len();
                    items.push(Item::Spilled(b));
                }
                Err(e) => {
                    self.undecodable += 1;
                    tracing::error!("dropping a spilled batch: {e}");
                }
            }
        }
        let e = self.episode.as_mut();
        if let Some(e) = e.filter(|e| e.replay_started.is_none()) {
            e.replay_started = Some(Instant::now());
        }
        Chunk {
            items,
            end: at,
            held,
        }
    }

    /// The batches of `chunk`, in order, to write.
    pub fn batches<'a>(&'a self, chunk: &'a Chunk) -> Vec<&'a WriteBatch> {
        chunk
            .items
            .iter()
            .map(|i| match i {
                Item::Spilled(b) => b,
                Item::Held(i) => &self.held[*i].1,
            })
            .collect()
    }

    /// `chunk` is written: forgets it, and returns its in-memory batches, whose messages
    /// the caller reports as done.
    pub fn commit(&mut self, chunk: Chunk) -> Vec<WriteBatch> {
        let mut replayed = 0;
        let mut commands = 0;
        for i in &chunk.items {
            if let Item::Spilled(b) = i {
                replayed += 1;
                commands += b.commands.len() as u64;
            }
        }
        Metrics::add(&self.metrics.spill_replayed, replayed);
        if chunk.end > self.log.start() {
            self.log.commit(chunk.end);
        }
        let written: Vec<WriteBatch> = self.held.drain(..chunk.held).map(|(_, b)| b).collect();
        self.held_weight -= written.iter().map(weight).sum::<usize>();
        if let Some(e) = &mut self.episode {
            e.replayed += replayed;
            e.replayed_commands += commands;
        }
        if self.log.is_empty() {
            self.end_full();
        }
        if self.is_empty() {
            self.finish_episode();
        }
        self.update_gauges();
        written
    }

    fn finish_episode(&mut self) {
        let Some(e) = self.episode.take() else {
            return;
        };
        let replay = e.replay_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        tracing::info!(
            spilled = e.spilled,
            spilled_bytes = e.spilled_bytes,
            replayed = e.replayed,
            replayed_commands = e.replayed_commands,
            "spill drained: {} batches ({} commands) replayed in {replay:.2} s, \
             {:.0} commands/s; {:.1} s after the first was spilled",
            e.replayed,
            e.replayed_commands,
            e.replayed_commands as f64 / replay.max(1e-3),
            e.started.elapsed().as_secs_f64()
        );
    }

    fn update_gauges(&self) {
        Metrics::store(&self.metrics.spill_disk_bytes, self.log.bytes());
        Metrics::store(&self.metrics.spill_held, self.held.len() as u64);
        Metrics::store(
            &self.metrics.spill_dropped,
            self.log.dropped() + self.undecodable,
        );
    }
}

/// What a batch costs in memory, in the units of `max_held`: its commands and messages,
/// at least 1.
fn weight(b: &WriteBatch) -> usize {
    (b.commands.len() + b.done.len()).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch writing `SET <topic> <n>`, tracked (QoS 1) when `seq` is given.
    fn batch(topic: &str, n: u32, seq: Option<u64>) -> WriteBatch {
        let mut b = WriteBatch::default();
        b.commands.push(["SET", topic, &n.to_string()]);
        b.done.extend(seq);
        b
    }

    fn label(b: &WriteBatch) -> String {
        b.commands.get(0).unwrap().to_string()
    }

    fn backlog(dir: &std::path::Path, max_bytes: u64, max_held: usize) -> Backlog {
        let log = SpillLog::open(dir, max_bytes, 64 << 10).unwrap();
        Backlog::new(log, max_held, Arc::new(Metrics::default()))
    }

    /// Replays everything in chunks of `per_chunk` commands; returns the labels in
    /// write order and the sequence numbers reported done.
    fn drain(b: &mut Backlog, per_chunk: usize) -> (Vec<String>, Vec<u64>) {
        let (mut order, mut done) = (Vec::new(), Vec::new());
        while !b.is_empty() {
            let chunk = b.chunk(per_chunk);
            order.extend(b.batches(&chunk).into_iter().map(label));
            for w in b.commit(chunk) {
                done.extend(w.done);
            }
        }
        (order, done)
    }

    #[test]
    fn tracked_batches_stay_in_memory_in_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = backlog(dir.path(), 1 << 20, 100);
        b.push(batch("a", 1, None));
        b.push(batch("a", 2, Some(10)));
        b.push(batch("a", 3, None));
        b.push(batch("b", 1, None));
        b.push(batch("a", 4, Some(11)));
        b.push(batch("a", 5, Some(12)));
        b.push(batch("a", 6, None));
        assert!(b.holds_memory());
        assert_eq!(Metrics::get(&b.metrics.spill_batches), 4);
        for per_chunk in [1, 2, 100] {
            let dir = tempfile::tempdir().unwrap();
            let mut c = backlog(dir.path(), 1 << 20, 100);
            for (n, seq) in [
                (1, None),
                (2, Some(10)),
                (3, None),
                (4, Some(11)),
                (5, None),
            ] {
                c.push(batch("a", n, seq));
            }
            let (order, done) = drain(&mut c, per_chunk);
            assert_eq!(
                order,
                (1..=5).map(|n| format!("SET a {n}")).collect::<Vec<_>>(),
                "chunks of {per_chunk}"
            );
            assert_eq!(done, vec![10, 11]);
        }
        let (order, _) = drain(&mut b, 3);
        assert_eq!(
            order,
            [
                "SET a 1", "SET a 2", "SET a 3", "SET b 1", "SET a 4", "SET a 5", "SET a 6"
            ]
        );
        assert!(!b.holds_memory());
        assert_eq!(Metrics::get(&b.metrics.spill_replayed), 4);
        assert_eq!(Metrics::get(&b.metrics.spill_disk_bytes), 0);
    }

    #[test]
    fn an_unwritten_chunk_is_offered_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = backlog(dir.path(), 1 << 20, 100);
        b.push(batch("a", 1, None));
        b.push(batch("a", 2, Some(7)));
        let first: Vec<String> = {
            let chunk = b.chunk(100);
            b.batches(&chunk).into_iter().map(label).collect()
        };
        // Redis went away mid-write: the chunk is dropped, not committed.
        let (again, done) = drain(&mut b, 100);
        assert_eq!(first, again);
        assert_eq!(done, vec![7]);
    }

    #[test]
    fn when_full_batches_wait_in_memory_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        // Room for a few records only.
        let mut b = backlog(dir.path(), 64 << 10, 4);
        let big = |n: u32| {
            let mut w = WriteBatch::default();
            w.commands
                .push(["SET", "a", &n.to_string(), &"v".repeat(20_000)]);
            w
        };
        let mut n = 0;
        while !b.holds_memory() {
            n += 1;
            b.push(big(n));
        }
        assert_eq!(Metrics::get(&b.metrics.spill_full), 1);
        assert!(b.accepts());
        while b.accepts() {
            n += 1;
            b.push(big(n));
        }
        assert_eq!(
            Metrics::get(&b.metrics.spill_full),
            1,
            "one episode, one count"
        );
        assert_eq!(Metrics::get(&b.metrics.spill_held), 4);
        assert!(b.log_bytes() <= 64 << 10);
        let (order, _) = drain(&mut b, 2);
        let got: Vec<u32> = order
            .iter()
            .map(|l| l.split(' ').nth(2).unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            got,
            (1..=n).collect::<Vec<_>>(),
            "in order despite the overflow"
        );
        // Spilling again starts a new episode when it fills again.
        while !b.holds_memory() {
            n += 1;
            b.push(big(n));
        }
        assert_eq!(Metrics::get(&b.metrics.spill_full), 2);
    }

    #[test]
    fn a_torn_record_from_a_crash_is_skipped_and_the_rest_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = backlog(dir.path(), 1 << 20, 100);
        for n in 1..=3 {
            b.push(batch("a", n, None));
        }
        drop(b);
        let seg = dir.path().join(format!("{:020}.seg", 1));
        let len = seg.metadata().unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();

        // The next process: its new batches queue behind the old ones.
        let mut b = backlog(dir.path(), 1 << 20, 100);
        assert!(!b.is_empty());
        b.push(batch("a", 4, Some(1)));
        b.push(batch("a", 5, None));
        let (order, done) = drain(&mut b, 100);
        assert_eq!(order, ["SET a 1", "SET a 2", "SET a 4", "SET a 5"]);
        assert_eq!(done, vec![1]);
        assert_eq!(Metrics::get(&b.metrics.spill_dropped), 1);
    }
}
