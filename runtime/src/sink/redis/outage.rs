//! The Redis writer's loop when the spill is on: the direct path while nothing waits,
//! the outage loop while Redis is unreachable, and replay until the backlog is empty.
//!
//! - **Direct**: as without the spill (`mod.rs`), one pipeline at a time; a lost
//!   connection moves the pipeline's unwritten batches into the [`Backlog`].
//! - **Outage** (backlog not empty, no connection): reconnect with backoff and, while
//!   the attempt runs, keep taking batches into the backlog as long as it accepts them.
//!   Taking never waits for a connection attempt, so a slow or black-holed Redis does
//!   not pause the pipeline.
//! - **Replay** (backlog not empty, connected): move what is queued into the backlog
//!   (so nothing overtakes it), write the backlog's next chunk, repeat; when it is
//!   empty, back to direct.
//!
//! At shutdown, when Redis is unreachable and nothing waits in memory, the writer stops
//! at once: the spill keeps the rest for the next start. Batches in memory (QoS 1/2)
//! are retried until the shutdown timeout, as without the spill.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::writer::{BACKOFF_MAX, BACKOFF_MIN, IDLE_CHECK, Writer, commands_of, connect};
use crate::ack::Completions;
use crate::rules::engine::ReadCode;
use crate::sink::batch::WriteBatch;
use crate::sink::spill::Backlog;

/// The Redis writer's task with the spill on.
pub(super) struct SpillingWriter {
    /// The connection and the sending.
    pub writer: Writer,
    /// Batches from the workers, in order.
    pub rx: mpsc::Receiver<WriteBatch>,
    /// Where written batches' messages are reported.
    pub completions: Completions,
    /// What waits: records in the spill and batches held in memory.
    pub backlog: Backlog,
}

impl SpillingWriter {
    /// Runs the writer until the channel is closed and everything taken is written (or,
    /// if Redis is unreachable then, safely on disk).
    pub async fn run(&mut self) {
        let mut idle = tokio::time::interval(IDLE_CHECK);
        let mut open = true;
        loop {
            if self.backlog.is_empty() {
                if !open {
                    break;
                }
                let Some(batches) = self.writer.take(&mut self.rx, &mut idle).await else {
                    break;
                };
                self.write_direct(batches).await;
            } else if self.writer.is_connected() {
                open &= self.take_queued();
                self.replay().await;
            } else if !open && !self.backlog.holds_memory() {
                tracing::info!(
                    spill_bytes = self.backlog.log_bytes(),
                    "stopping while Redis is unreachable; the spill is replayed at the next start"
                );
                break;
            } else {
                open = self.outage(open).await;
            }
        }
    }

    /// One pipeline straight to Redis; on a lost connection its unwritten batches join
    /// the backlog, in order.
    async fn write_direct(&mut self, batches: Vec<WriteBatch>) {
        let w = &mut self.writer;
        if !w.is_connected() {
            w.check().await;
        }
        let refs: Vec<&WriteBatch> = batches.iter().collect();
        let mut todo = commands_of(&refs);
        let sent = w.send(&refs, &mut todo).await;
        drop(refs);
        let mut unwritten = vec![false; batches.len()];
        if sent.is_err() {
            for &(b, _) in &todo {
                unwritten[b] = true;
            }
        }
        for (mut b, unwritten) in batches.into_iter().zip(unwritten) {
            if unwritten {
                if let Some(read) = b.read.take() {
                    read.answer(Err(ReadCode::Unavailable));
                }
                self.backlog.push(b);
            } else {
                self.writer.finish(b, &self.completions).await;
            }
        }
    }

    /// Moves the batches already queued into the backlog while it accepts them.
    /// Returns false once the channel is closed.
    fn take_queued(&mut self) -> bool {
        while self.backlog.accepts() {
            match self.rx.try_recv() {
                Ok(b) => admit(b, &mut self.backlog, &self.completions),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    /// Writes the backlog's next chunk; forgets it only once Redis has taken all of it.
    async fn replay(&mut self) {
        let chunk = self.backlog.chunk(self.writer.max_pipeline());
        let batches = self.backlog.batches(&chunk);
        let mut todo = commands_of(&batches);
        let sent = self.writer.send(&batches, &mut todo).await;
        drop(batches);
        if sent.is_ok() {
            for b in self.backlog.commit(chunk) {
                self.writer.finish(b, &self.completions).await;
            }
        }
    }

    /// Reconnects with backoff, taking batches into the backlog meanwhile. Returns once
    /// connected, or once the channel closes with nothing in memory; the result says
    /// whether the channel is still open.
    async fn outage(&mut self, mut open: bool) -> bool {
        let mut backoff = BACKOFF_MIN;
        let mut attempts = 0u32;
        loop {
            let config = self.writer.config().clone();
            let attempt = async move {
                tokio::time::sleep(backoff).await;
                connect(&config).await
            };
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    r = &mut attempt => break r,
                    b = self.rx.recv(), if open && self.backlog.accepts() => match b {
                        Some(b) => admit(b, &mut self.backlog, &self.completions),
                        None => {
                            open = false;
                            if !self.backlog.holds_memory() {
                                return false;
                            }
                        }
                    },
                }
            };
            match result {
                Ok(conn) => {
                    self.writer.connected(conn, attempts);
                    return open;
                }
                Err(e) => {
                    // One line at the first failure, then one per ~10 attempts.
                    if attempts.is_multiple_of(10) {
                        tracing::warn!(
                            spill_bytes = self.backlog.log_bytes(),
                            "cannot connect to Redis ({}): {e}; retrying, spilling meanwhile",
                            self.writer.url()
                        );
                    }
                    attempts += 1;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// A batch taken while the backlog is in use. Its read is answered `unavailable`: it
/// could not see the writes waiting ahead of it. One with nothing to write and no
/// actions has nothing to wait for: its messages are done (acknowledgements still
/// leave in arrival order).
fn admit(mut b: WriteBatch, backlog: &mut Backlog, completions: &Completions) {
    if let Some(read) = b.read.take() {
        read.answer(Err(ReadCode::Unavailable));
    }
    if b.commands.is_empty() && b.actions.is_empty() {
        completions.done(&b.done);
    } else {
        backlog.push(b);
    }
}
