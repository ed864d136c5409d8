//! A worker's Redis reads for ABI v2 rules: the [`RedisReads`] the engine calls from
//! inside an invocation. A read is checked and namespaced by the rule's tenant policy
//! (`tenancy/read_table.rs`), then sent to the Redis writer **behind the worker's
//! pending writes**, in the same batch: the writer runs it once those writes are
//! confirmed, on the same connection, so it sees them ("read your writes",
//! docs/abi.md). The worker waits for the reply at most the time the deadline leaves.
//!
//! The worker's pending batch lives here while a v2 rule runs (the engine owns the
//! port for the invocation), and goes back to the worker after it.

use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::commands::Commands;
use crate::ops::metrics::Metrics;
use crate::record::ReadEntry;
use crate::rules::engine::{ReadCode, RedisReads, Reply};
use crate::sink::batch::{ReadRequest, WriteBatch};
use crate::tenancy::policy::TenantPolicy;

/// How often a read polls the writer's full queue for room.
const QUEUE_POLL: Duration = Duration::from_micros(200);

/// The worker's port to Redis for reads.
pub(super) struct SinkReads {
    sink: mpsc::Sender<WriteBatch>,
    metrics: Arc<Metrics>,
    /// The policy of the rule being run.
    pub(super) policy: Option<Arc<TenantPolicy>>,
    /// The worker's pending batch while a v2 rule runs.
    pub(super) batch: WriteBatch,
    /// When set, every read is appended here with its result, as the rule asked for it
    /// (a recording, or a canary that must see the same replies).
    pub(super) log: Option<Vec<ReadEntry>>,
}

impl SinkReads {
    pub(super) fn new(sink: mpsc::Sender<WriteBatch>, metrics: Arc<Metrics>) -> SinkReads {
        SinkReads {
            sink,
            metrics,
            policy: None,
            batch: WriteBatch::default(),
            log: None,
        }
    }
}

impl RedisReads for SinkReads {
    fn read(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
        max_reply: usize,
    ) -> Result<Reply, ReadCode> {
        let reply = self.read_redis(args, timeout, max_reply);
        if let Some(log) = &mut self.log {
            log.push(ReadEntry {
                request: args.iter().map(|a| a.to_vec()).collect(),
                reply: reply.clone(),
            });
        }
        reply
    }
}

impl SinkReads {
    fn read_redis(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
        _max_reply: usize,
    ) -> Result<Reply, ReadCode> {
        let policy = self.policy.as_ref().ok_or(ReadCode::NotAllowed)?;
        let mut command = Commands::new();
        policy.apply_read(args, &mut command)?;
        let deadline = Instant::now() + timeout;
        let (tx, rx) = sync_channel(1);
        let mut batch = std::mem::take(&mut self.batch);
        batch.read = Some(Box::new(ReadRequest::new(command, deadline, tx)));
        Metrics::add(&self.metrics.redis_reads, 1);
        // Not `blocking_send`: with Redis down and the writer's queue full it would
        // wait for Redis, and a read must not outlast its budget. A batch that cannot
        // be queued in time comes back to the worker, writes and all.
        let mut batch = Some(batch);
        while let Some(b) = batch.take() {
            match self.sink.try_send(b) {
                Ok(()) => {}
                Err(TrySendError::Full(b)) if Instant::now() < deadline => {
                    std::thread::sleep(QUEUE_POLL);
                    batch = Some(b);
                }
                Err(TrySendError::Full(mut b) | TrySendError::Closed(mut b)) => {
                    b.read = None;
                    self.batch = b;
                    return Err(ReadCode::Unavailable);
                }
            }
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                Err(ReadCode::Unavailable)
            }
        }
    }
}
