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

use crate::commands::Commands;
use crate::ops::metrics::Metrics;
use crate::rules::engine::{ReadCode, RedisReads, Reply};
use crate::sink::batch::{ReadRequest, WriteBatch};
use crate::tenancy::policy::TenantPolicy;

/// The worker's port to Redis for reads.
pub(super) struct SinkReads {
    sink: mpsc::Sender<WriteBatch>,
    metrics: Arc<Metrics>,
    /// The policy of the rule being run.
    pub(super) policy: Option<Arc<TenantPolicy>>,
    /// The worker's pending batch while a v2 rule runs.
    pub(super) batch: WriteBatch,
}

impl SinkReads {
    pub(super) fn new(sink: mpsc::Sender<WriteBatch>, metrics: Arc<Metrics>) -> SinkReads {
        SinkReads {
            sink,
            metrics,
            policy: None,
            batch: WriteBatch::default(),
        }
    }
}

impl RedisReads for SinkReads {
    fn read(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
        _max_reply: usize,
    ) -> Result<Reply, ReadCode> {
        let policy = self.policy.as_ref().ok_or(ReadCode::NotAllowed)?;
        let mut command = Commands::new();
        policy.apply_read(args, &mut command)?;
        let (tx, rx) = sync_channel(1);
        let mut batch = std::mem::take(&mut self.batch);
        batch.read = Some(Box::new(ReadRequest::new(
            command,
            Instant::now() + timeout,
            tx,
        )));
        Metrics::add(&self.metrics.redis_reads, 1);
        if self.sink.blocking_send(batch).is_err() {
            return Err(ReadCode::Unavailable);
        }
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                Err(ReadCode::Unavailable)
            }
        }
    }
}
