//! Writes rules' commands to Redis in pipelines, in the order workers queued them.
//!
//! One task owns one multiplexed connection and keeps one pipeline in flight: it takes
//! every batch already queued (up to `max_pipeline` commands), sends them as one
//! pipeline, checks each reply, and only then takes more. A lost connection or a reply
//! timeout sends the same pipeline again after reconnecting (with backoff), so nothing
//! is dropped; commands that had already been applied are applied twice
//! (at-least-once, see docs/delivery.md). Replies Redis gives while it cannot serve
//! (`LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`) are retried the same way. Any other
//! error reply (`WRONGTYPE`, wrong arguments) is the command's fault: it is logged with
//! the rule and topic that produced it and counted, never retried.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc;

use crate::ack::Completions;
use crate::config::RedisConfig;
use crate::metrics::Metrics;
use crate::write_batch::WriteBatch;

const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often an idle writer checks its connection (PING), for `/readyz`.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Writes batches until the channel closes and everything received is written, and
/// reports each batch's messages to `completions` once its commands are.
pub async fn run(
    config: RedisConfig,
    mut rx: mpsc::Receiver<WriteBatch>,
    metrics: Arc<Metrics>,
    completions: Completions,
) {
    let mut writer = Writer {
        config,
        conn: None,
        metrics,
    };
    let mut batches: Vec<WriteBatch> = Vec::new();
    // Connect before the first write so readiness is known from the start, and check
    // the connection while idle so it stays known.
    let mut idle = tokio::time::interval(IDLE_CHECK);
    loop {
        let first = tokio::select! {
            b = rx.recv() => match b {
                Some(b) => b,
                None => break,
            },
            _ = idle.tick() => {
                writer.check().await;
                continue;
            }
        };
        let mut size = first.commands.len();
        batches.push(first);
        while size < writer.config.max_pipeline {
            match rx.try_recv() {
                Ok(b) => {
                    size += b.commands.len();
                    batches.push(b);
                }
                Err(_) => break,
            }
        }
        writer.write(&batches).await;
        for b in &batches {
            completions.done(&b.done);
        }
        batches.clear();
    }
    tracing::debug!("Redis writer drained and stopped");
}

struct Writer {
    config: RedisConfig,
    conn: Option<MultiplexedConnection>,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// Writes all commands of `batches`, retrying until Redis has taken every one.
    async fn write(&mut self, batches: &[WriteBatch]) {
        // (batch, command) of every command still to send.
        let mut todo: Vec<(usize, usize)> = batches
            .iter()
            .enumerate()
            .flat_map(|(b, batch)| (0..batch.commands.len()).map(move |c| (b, c)))
            .collect();
        let mut backoff = BACKOFF_MIN;
        while !todo.is_empty() {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &(b, c) in &todo {
                let mut cmd = redis::Cmd::new();
                for arg in batches[b]
                    .commands
                    .get(c)
                    .into_iter()
                    .flat_map(|c| c.args())
                {
                    cmd.arg(arg);
                }
                pipe.add_command(cmd);
            }
            let conn = self.connection().await;
            match pipe.query_async::<Vec<Value>>(conn).await {
                Ok(replies) => {
                    let mut retry = Vec::new();
                    for (&(b, c), reply) in todo.iter().zip(&replies) {
                        match reply {
                            Value::ServerError(e) if is_transient(e.code()) => retry.push((b, c)),
                            Value::ServerError(e) => self.report(&batches[b], c, e),
                            _ => Metrics::add(&self.metrics.commands_written, 1),
                        }
                    }
                    if !retry.is_empty() {
                        tracing::warn!(
                            commands = retry.len(),
                            "Redis is not ready (loading or busy); retrying in {backoff:?}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                    todo = retry;
                }
                Err(e) => {
                    tracing::warn!(
                        commands = todo.len(),
                        "Redis write failed: {e}; reconnecting and sending the pipeline again"
                    );
                    Metrics::add(&self.metrics.redis_retries, 1);
                    Metrics::set(&self.metrics.redis_connected, false);
                    self.conn = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
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
                version = o.version,
                topic = %o.topic,
                "Redis refused `{shown}` from rule {}: {e}",
                o.rule
            ),
            None => tracing::warn!("Redis refused `{shown}`: {e}"),
        }
    }

    /// One connection attempt or PING, without waiting: keeps `redis_connected` true to
    /// the facts while nothing is being written.
    async fn check(&mut self) {
        match &mut self.conn {
            Some(c) => {
                if redis::cmd("PING").query_async::<()>(c).await.is_err() {
                    self.conn = None;
                    Metrics::set(&self.metrics.redis_connected, false);
                }
            }
            None => match connect(&self.config.url).await {
                Ok(c) => {
                    self.conn = Some(c);
                    Metrics::set(&self.metrics.redis_connected, true);
                }
                Err(_) => Metrics::set(&self.metrics.redis_connected, false),
            },
        }
    }

    /// The connection, (re)connecting with backoff until it works.
    async fn connection(&mut self) -> &mut MultiplexedConnection {
        let mut backoff = BACKOFF_MIN;
        let mut attempts = 0u32;
        while self.conn.is_none() {
            match connect(&self.config.url).await {
                Ok(c) => {
                    if attempts > 0 {
                        tracing::info!("connected to Redis after {attempts} failed attempts");
                    } else {
                        tracing::debug!("connected to Redis");
                    }
                    self.conn = Some(c);
                    Metrics::set(&self.metrics.redis_connected, true);
                }
                Err(e) => {
                    Metrics::set(&self.metrics.redis_connected, false);
                    // One line at the first failure, then one per ~10 attempts: enough
                    // to know it is still down without flooding the log.
                    if attempts.is_multiple_of(10) {
                        tracing::warn!(
                            "cannot connect to Redis ({}): {e}; retrying",
                            self.config.url
                        );
                    }
                    attempts += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        // Just set above if it was missing.
        self.conn.as_mut().expect("connection present")
    }
}

async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
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
