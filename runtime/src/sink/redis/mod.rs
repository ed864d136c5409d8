//! Writes rules' commands to Redis in pipelines, in the order workers queued them.
//!
//! One task owns one connection (`connection.rs`: a server, the master the sentinels
//! name, or a Redis Cluster, `cluster.rs`) and keeps one flush in flight: it takes
//! every batch already queued (up to `max_pipeline` commands), sends them as one
//! pipeline (in a cluster, one per master, concurrently), checks each reply, and only
//! then takes more. A lost connection or a reply timeout sends the unconfirmed
//! commands again after reconnecting (with backoff), so nothing is dropped; commands
//! that had already been applied are applied twice
//! (at-least-once, see docs/delivery.md). Replies Redis gives while it cannot serve
//! (`LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`) are retried the same way. Any other
//! error reply (`WRONGTYPE`, wrong arguments) is the command's fault: it is logged with
//! the rule and topic that produced it and counted, never retried.
//!
//! With the spill on (`[redis.spill]`), a lost connection hands the pipeline to the
//! outage loop (`outage.rs`) instead of waiting: QoS 0 batches go to disk and the
//! writer keeps taking batches until Redis returns. `writer.rs` keeps the connection and
//! the sending; this file picks the loop; `outage.rs` decides what waits where;
//! `config.rs` is the `[redis]` section. Not here: the spill's files (`sink/spill/`),
//! what the commands are (`dispatch/`), acknowledging to the broker (`ack.rs`, `source/`).

mod cluster;
mod config;
mod connection;
mod outage;
mod writer;
pub(crate) use writer::{cmd_of, reply_of};

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::ack::Completions;
use crate::ops::metrics::Metrics;
use crate::sink::batch::WriteBatch;
use crate::sink::mqtt::{ActionQueue, ActionSink};
use crate::sink::spill::{Backlog, SpillLog};
use outage::SpillingWriter;
use writer::{IDLE_CHECK, Writer};

pub use config::{DEFAULT_REDIS_URL, RedisConfig};
pub(crate) use config::{RawRedis, redact_url};

/// With the spill on, batches that must wait in memory (QoS 1/2 ones, and any the
/// spill cannot take) may hold this many pipelines' worth of commands and messages
/// before the writer stops taking more: room for the broker's in-flight window of
/// QoS 1/2 messages beside the QoS 0 ones that share their batches.
const HELD_PIPELINES: usize = 16;

/// Writes batches until the channel closes and everything received is written, and
/// reports each batch's messages to `completions` once its commands are. With a `spill`,
/// batches of QoS 0 messages go to disk while Redis is unreachable (`spill/`). A
/// batch's MQTT actions go to `actions` once its commands are written.
pub async fn run(
    config: RedisConfig,
    rx: mpsc::Receiver<WriteBatch>,
    metrics: Arc<Metrics>,
    completions: Completions,
    spill: Option<SpillLog>,
    actions: Option<ActionSink>,
) {
    let max_held = config.max_pipeline * HELD_PIPELINES;
    let (queue, action_task) = match actions {
        Some(sink) => {
            let (q, t) = ActionQueue::start(sink, completions.clone(), metrics.clone());
            (Some(q), Some(t))
        }
        None => (None, None),
    };
    let writer = Writer::new(config, metrics.clone(), queue);
    match spill {
        None => direct(writer, rx, completions).await,
        Some(log) => {
            let mut task = SpillingWriter {
                writer,
                rx,
                completions,
                backlog: Backlog::new(log, max_held, metrics),
            };
            task.run().await;
        }
    }
    // The writer (and its queue handle) is gone: the action task finishes the queue.
    if let Some(t) = action_task {
        let _ = t.await;
    }
    tracing::debug!("Redis writer drained and stopped");
}

/// Without a spill: each pipeline is retried until Redis takes it, and meanwhile
/// nothing more is taken (backpressure).
async fn direct(mut writer: Writer, mut rx: mpsc::Receiver<WriteBatch>, completions: Completions) {
    // Connect before the first write so readiness is known from the start, and check
    // the connection while idle so it stays known.
    let mut idle = tokio::time::interval(IDLE_CHECK);
    while let Some(batches) = writer.take(&mut rx, &mut idle).await {
        let refs: Vec<&WriteBatch> = batches.iter().collect();
        writer.write(&refs).await;
        drop(refs);
        for b in batches {
            writer.finish(b, &completions).await;
        }
    }
}
