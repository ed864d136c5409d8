//! One connection to Redis and what to do with it: take a pipeline's worth of batches,
//! send them, check each reply, reconnect with backoff. Both loops of the writer
//! (`mod.rs` without the spill, `outage.rs` with it) drive a [`Writer`].

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::mpsc;

use super::config::RedisConfig;
use super::connection::Conn;
pub(crate) use super::connection::connect;
use crate::ack::Completions;
use crate::ops::metrics::Metrics;
use crate::rules::engine::{ReadCode, Reply};
use crate::sink::batch::{ReadRequest, WriteBatch};
use crate::sink::mqtt::ActionQueue;

pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often an idle writer checks its connection (PING), for `/readyz`.
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The connection was lost while sending; what was not confirmed is still to send.
#[derive(Debug)]
pub(crate) struct Lost;

/// Every command of `batches`, as (batch, command) indices.
pub(crate) fn commands_of(batches: &[&WriteBatch]) -> Vec<(usize, usize)> {
    batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| (0..batch.commands.len()).map(move |c| (b, c)))
        .collect()
}

/// One connection to Redis and what to do with it.
pub(crate) struct Writer {
    config: RedisConfig,
    conn: Option<Conn>,
    metrics: Arc<Metrics>,
    /// Where v2 rules' MQTT actions go, once their batch's writes are confirmed.
    actions: Option<ActionQueue>,
    // Failed connection attempts of `check` in a row, to log the first and every tenth.
    check_failures: u32,
    // Whether a connection was ever made: later ones count as reconnects.
    connected_once: bool,
}

impl Writer {
    /// Not connected yet: the first [`Writer::take`] or [`Writer::check`] connects.
    pub(crate) fn new(
        config: RedisConfig,
        metrics: Arc<Metrics>,
        actions: Option<ActionQueue>,
    ) -> Writer {
        Writer {
            config,
            conn: None,
            metrics,
            actions,
            check_failures: 0,
            connected_once: false,
        }
    }

    /// Most commands in one pipeline.
    pub(crate) fn max_pipeline(&self) -> usize {
        self.config.max_pipeline
    }

    /// The Redis URL for logs, without its password.
    pub(crate) fn url(&self) -> String {
        self.config.display_url()
    }

    pub(crate) fn config(&self) -> &RedisConfig {
        &self.config
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The next pipeline: waits for a batch (checking the connection on `idle` ticks
    /// meanwhile), then takes whatever else is queued, up to `max_pipeline` commands.
    /// `None` once the channel is closed and empty.
    pub(crate) async fn take(
        &mut self,
        rx: &mut mpsc::Receiver<WriteBatch>,
        idle: &mut tokio::time::Interval,
    ) -> Option<Vec<WriteBatch>> {
        let first = loop {
            tokio::select! {
                b = rx.recv() => break b?,
                _ = idle.tick() => self.check().await,
            }
        };
        let mut size = first.commands.len();
        let mut batches = vec![first];
        while size < self.config.max_pipeline {
            match rx.try_recv() {
                Ok(b) => {
                    size += b.commands.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        Some(batches)
    }

    /// Writes all commands of `batches`, retrying until Redis has taken every one.
    pub(crate) async fn write(&mut self, batches: &[&WriteBatch]) {
        let mut todo = commands_of(batches);
        let mut backoff = BACKOFF_MIN;
        loop {
            self.wait_connected().await;
            if self.send(batches, &mut todo).await.is_ok() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Sends the commands `todo` of `batches` as pipelines until Redis has answered each
    /// (replies meaning "not now" are sent again after a backoff). On a lost connection
    /// returns [`Lost`], with `todo` holding the commands not yet confirmed.
    ///
    /// The batches' reads (ABI v2) go in the first pipeline, after every write, so that
    /// each sees the writes queued before it in one round trip; a lost connection
    /// answers them `unavailable` (a read is never sent twice: its worker has moved
    /// on).
    pub(crate) async fn send(
        &mut self,
        batches: &[&WriteBatch],
        todo: &mut Vec<(usize, usize)>,
    ) -> Result<(), Lost> {
        let mut backoff = BACKOFF_MIN;
        let mut reads: Vec<&ReadRequest> = batches
            .iter()
            .filter_map(|b| b.read.as_deref())
            .filter(|r| r.waiting())
            .collect();
        while !todo.is_empty() || !reads.is_empty() {
            let Some(conn) = self.conn.as_mut() else {
                reads
                    .iter()
                    .for_each(|r| r.answer(Err(ReadCode::Unavailable)));
                return Err(Lost);
            };
            let mut cmds = Vec::with_capacity(todo.len() + reads.len());
            for &(b, c) in todo.iter() {
                cmds.push(cmd_of(
                    batches[b]
                        .commands
                        .get(c)
                        .into_iter()
                        .flat_map(|c| c.args()),
                ));
            }
            for r in &reads {
                cmds.push(cmd_of(
                    r.command.iter().next().into_iter().flat_map(|c| c.args()),
                ));
            }
            // redis.wait_replicas: the flush counts as confirmed only once that many
            // replicas have it too (WAIT, after every command), so a master's death
            // cannot take confirmed writes with it.
            let wait = self.config.wait_replicas.filter(|_| !todo.is_empty());
            if let Some((replicas, timeout)) = wait {
                let mut w = redis::cmd("WAIT");
                w.arg(replicas).arg(timeout.as_millis() as u64);
                cmds.push(w);
            }
            let sent = std::time::Instant::now();
            let mut replies = conn.query(cmds, &self.metrics).await;
            let replicated = match wait {
                None => true,
                Some((replicas, _)) => match replies.values.pop().flatten() {
                    Some(Value::Int(n)) => n >= i64::from(replicas),
                    _ => false,
                },
            };
            self.metrics
                .redis_write_seconds
                .observe_duration(sent.elapsed());
            let mut values = replies.values.into_iter();
            // In order: commands to send again, busy ones (transient replies) among them.
            let mut again = Vec::new();
            let mut busy = 0u64;
            // A master that became a replica (a failover): reconnect to find the new one.
            let mut demoted = false;
            for &(b, c) in todo.iter() {
                match values.next().flatten() {
                    None => again.push((b, c)),
                    Some(Value::ServerError(e)) if e.code() == "READONLY" => {
                        demoted = true;
                        again.push((b, c));
                    }
                    Some(Value::ServerError(e)) if is_transient(e.code()) => {
                        busy += 1;
                        again.push((b, c));
                    }
                    Some(Value::ServerError(e)) => self.report(batches[b], c, &e),
                    Some(_) if !replicated => {
                        busy += 1;
                        again.push((b, c));
                    }
                    Some(_) => Metrics::add(&self.metrics.commands_written, 1),
                }
            }
            for r in reads.drain(..) {
                match values.next().flatten() {
                    Some(v) => r.answer(reply_of(v)),
                    None => r.answer(Err(ReadCode::Unavailable)),
                }
            }
            if replies.error.is_some() || demoted {
                let why = match &replies.error {
                    Some(e) => e.to_string(),
                    None => "the server is now a replica (READONLY)".to_owned(),
                };
                tracing::warn!(
                    commands = again.len(),
                    "Redis write failed: {why}; the unconfirmed commands are sent again once reconnected"
                );
                Metrics::add(&self.metrics.redis_retries, 1);
                Metrics::set(&self.metrics.redis_connected, false);
                self.conn = None;
                *todo = again;
                return Err(Lost);
            }
            if busy > 0 {
                Metrics::add(&self.metrics.redis_busy, busy);
                if replicated {
                    tracing::warn!(
                        commands = busy,
                        "Redis is not ready (loading or busy); retrying in {backoff:?}"
                    );
                } else {
                    tracing::warn!(
                        commands = busy,
                        "fewer replicas than redis.wait_replicas confirmed the writes; \
                         sending them again in {backoff:?}"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            *todo = again;
        }
        self.observe_latency(batches);
        Ok(())
    }

    /// What follows a batch's confirmed writes: its read was answered with them; its
    /// MQTT actions go to the action queue, which reports the batch's messages done
    /// once they are taken; without actions they are done now.
    pub(crate) async fn finish(&mut self, mut batch: WriteBatch, completions: &Completions) {
        if let Some(read) = batch.read.take() {
            // Not sent (its deadline passed before it could be): nobody waits for it.
            read.answer(Err(ReadCode::Unavailable));
        }
        if batch.actions.is_empty() {
            completions.done(&batch.done);
            return;
        }
        match &self.actions {
            Some(queue) => queue.push(batch.actions, batch.done).await,
            // Workers refuse actions when there is no sink; nothing reaches here.
            None => {
                tracing::error!(
                    actions = batch.actions.len(),
                    "MQTT actions with nowhere to go; dropped"
                );
                completions.done(&batch.done);
            }
        }
    }

    /// The end-to-end latency of each batch now written: from its oldest message's
    /// receipt to now (milliseconds: the receipt time is the message's).
    fn observe_latency(&self, batches: &[&WriteBatch]) {
        let now = crate::event::now_ms();
        for b in batches.iter().filter(|b| b.received_at != 0) {
            let ms = now.saturating_sub(b.received_at);
            self.metrics
                .message_latency_seconds
                .observe(ms.saturating_mul(1_000_000));
        }
    }

    fn report(&self, batch: &WriteBatch, command: usize, e: &redis::ServerError) {
        Metrics::add(&self.metrics.command_errors, 1);
        let shown = batch
            .commands
            .get(command)
            .map(|c| {
                let s = c.to_string();
                if s.len() > 200 {
                    format!("{}...", &s[..s.floor_char_boundary(200)])
                } else {
                    s
                }
            })
            .unwrap_or_default();
        match batch.origin_of(command) {
            Some(o) => tracing::warn!(
                rule = %o.rule,
                version = %o.version,
                generation = o.generation,
                topic = %o.topic,
                "Redis refused `{shown}` from rule {}: {e}",
                o.rule
            ),
            None => tracing::warn!("Redis refused `{shown}`: {e}"),
        }
    }

    /// One connection attempt or PING, without waiting: keeps `redis_connected` true to
    /// the facts while nothing is being written.
    pub(crate) async fn check(&mut self) {
        match &mut self.conn {
            Some(c) => {
                if c.ping().await.is_err() {
                    self.conn = None;
                    Metrics::set(&self.metrics.redis_connected, false);
                }
            }
            None => match connect(&self.config).await {
                Ok(c) => {
                    self.conn = Some(c);
                    self.check_failures = 0;
                    self.note_connected();
                }
                Err(e) => {
                    Metrics::set(&self.metrics.redis_connected, false);
                    if self.check_failures.is_multiple_of(10) {
                        tracing::warn!(
                            "cannot connect to Redis ({}): {e}; retrying",
                            self.config.display_url()
                        );
                    }
                    self.check_failures += 1;
                }
            },
        }
    }

    /// A connection is made: connected now, and a reconnect if not the first.
    fn note_connected(&mut self) {
        Metrics::set(&self.metrics.redis_connected, true);
        if self.connected_once {
            Metrics::add(&self.metrics.redis_reconnects, 1);
        }
        self.connected_once = true;
    }

    /// A connection made elsewhere, after `attempts` failed ones.
    pub(crate) fn connected(&mut self, conn: Conn, attempts: u32) {
        if attempts > 0 {
            tracing::info!("connected to Redis after {attempts} failed attempts");
        } else {
            tracing::info!("reconnected to Redis");
        }
        self.conn = Some(conn);
        self.note_connected();
    }

    /// (Re)connects with backoff until it works.
    async fn wait_connected(&mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut attempts = 0u32;
        while self.conn.is_none() {
            match connect(&self.config).await {
                Ok(c) => {
                    if attempts > 0 {
                        tracing::info!("connected to Redis after {attempts} failed attempts");
                    } else {
                        tracing::debug!("connected to Redis");
                    }
                    self.conn = Some(c);
                    self.note_connected();
                }
                Err(e) => {
                    Metrics::set(&self.metrics.redis_connected, false);
                    // One line at the first failure, then one per ~10 attempts: enough
                    // to know it is still down without flooding the log.
                    if attempts.is_multiple_of(10) {
                        tracing::warn!(
                            "cannot connect to Redis ({}): {e}; retrying",
                            self.config.display_url()
                        );
                    }
                    attempts += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// A Redis command from its arguments, the name first. Sized up front: growing the
/// command's buffers argument by argument cost several reallocations per command.
pub(crate) fn cmd_of<'a>(args: impl Iterator<Item = &'a [u8]> + Clone) -> redis::Cmd {
    let (count, bytes) = args.clone().fold((0, 0), |(n, b), a| (n + 1, b + a.len()));
    let mut cmd = redis::Cmd::with_capacity(count, bytes);
    for arg in args {
        cmd.arg(arg);
    }
    cmd
}

/// A Redis value as a rule sees it (`docs/abi.md`, "The reply"): maps flattened to
/// field, value, ...; doubles and big numbers as their text; booleans as 0 or 1.
pub(crate) fn reply_of(v: Value) -> Result<Reply, ReadCode> {
    Ok(match v {
        Value::Nil => Reply::Nil,
        Value::Int(i) => Reply::Int(i),
        Value::BulkString(b) => Reply::Bulk(b),
        Value::SimpleString(s) => Reply::Bulk(s.into_bytes()),
        Value::Okay => Reply::Bulk(b"OK".to_vec()),
        Value::Array(items) | Value::Set(items) => {
            Reply::Array(items.into_iter().map(reply_of).collect::<Result<_, _>>()?)
        }
        Value::Map(pairs) => {
            let mut items = Vec::with_capacity(pairs.len() * 2);
            for (k, v) in pairs {
                items.push(reply_of(k)?);
                items.push(reply_of(v)?);
            }
            Reply::Array(items)
        }
        Value::Double(d) => Reply::Bulk(d.to_string().into_bytes()),
        Value::Boolean(b) => Reply::Int(b.into()),
        Value::VerbatimString { text, .. } => Reply::Bulk(text.into_bytes()),
        Value::BigNumber(n) => Reply::Bulk(n),
        Value::ServerError(_) => return Err(ReadCode::RedisError),
        _ => return Err(ReadCode::RedisError),
    })
}

/// Error replies that mean "not now" rather than "not this command".
fn is_transient(code: &str) -> bool {
    matches!(
        code,
        "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        assert!(is_transient("LOADING"));
        assert!(!is_transient("WRONGTYPE"));
        assert!(!is_transient("ERR"));
    }
}
