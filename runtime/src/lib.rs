//! wasmrule: MQTT messages in, WebAssembly rules in the middle, Redis commands out.
//!
//! # Layout
//!
//! Data flow: `mqtt_source -> dispatch (bounded queues, worker threads) -> engine ->
//! commands -> redis_sink`, with `reload` swapping the `ruleset` the workers read.
//!
//! - [`config`]: TOML and overrides -> validated [`config::Config`].
//! - [`event`]: the event model (EMQX field names) and its JSON encoding.
//! - [`topic`]: MQTT filter validation, matching and a filter index.
//! - [`engine`]: wasmtime engine, rule ABI v1 (`engine/abi.rs`), limits, invocation.
//! - [`commands`]: flat, binary-safe command lists and their `redis-cli` rendering.
//! - [`ruleset`]: the immutable set of serving rules and its atomic swap.
//! - [`reload`]: rules directory watcher -> compile off the hot path -> swap.
//! - [`subscriptions`]: which MQTT subscriptions to hold; dropping overlap duplicates.
//! - [`mqtt_source`]: the MQTT connection (rumqttc, 3.1.1 and 5).
//! - [`dispatch`]: worker threads, per-topic ordering.
//! - [`redis_sink`]: pipelined writes with reconnect and retry.
//! - [`metrics`]: counters of what the runtime did.

pub mod commands;
pub mod config;
pub mod dispatch;
pub mod engine;
pub mod event;
pub mod metrics;
pub mod mqtt_source;
pub mod redis_sink;
pub mod reload;
pub mod ruleset;
pub mod subscriptions;
pub mod topic;

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::ruleset::Rules;

/// Extra pooled instances beyond one per worker: rule loads read manifests too.
const SPARE_INSTANCES: u32 = 4;

/// Runs wasmrule until `shutdown` completes, then stops taking messages, lets workers
/// finish what they hold, writes it to Redis and returns.
///
/// # Errors
///
/// When the rules directory is missing or unreadable, or the engine cannot start.
/// Broker and Redis outages are not errors: they are retried.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let runtime = Runtime::start(config).await?;
    shutdown.await;
    runtime.stop().await;
    Ok(())
}

/// A running wasmrule, for callers (tests, the demo) that want to look inside.
pub struct Runtime {
    pub metrics: Arc<Metrics>,
    pub rules: Arc<Rules>,
    token: CancellationToken,
    source: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<anyhow::Result<()>>,
    workers: dispatch::Workers,
    sink: tokio::task::JoinHandle<()>,
}

impl Runtime {
    /// Loads the rules in the directory, then starts the watcher, workers, Redis writer
    /// and MQTT connection. Returns once the initial rules are serving.
    ///
    /// # Errors
    ///
    /// As [`run`].
    pub async fn start(mut config: Config) -> anyhow::Result<Runtime> {
        let dir = &config.rules.dir;
        if !dir.is_dir() {
            bail!(
                "rules directory {} does not exist (create it, or pass --rules-dir)",
                dir.display()
            );
        }
        // The watcher reports absolute paths; rule ids are computed relative to this.
        config.rules.dir = std::fs::canonicalize(dir)
            .with_context(|| format!("cannot resolve rules directory {}", dir.display()))?;
        let dir = &config.rules.dir;
        let workers = config.runtime.workers;
        let engine = Engine::new(config.limits.clone(), workers as u32 + SPARE_INSTANCES)
            .context("cannot start the WebAssembly engine")?;
        let metrics = Arc::new(Metrics::default());
        let rules = Arc::new(Rules::new());

        let mut reloader =
            Reloader::new(engine, config.rules.clone(), rules.clone(), metrics.clone());
        reloader.scan().await?;
        tracing::info!(
            rules = rules.snapshot().len(),
            dir = %dir.display(),
            "initial rules loaded"
        );

        let token = CancellationToken::new();
        let watcher = tokio::spawn(reloader.watch(token.child_token()));

        let (sink_tx, sink_rx) = mpsc::channel(workers * 4);
        let sink = tokio::spawn(redis_sink::run(
            config.redis.clone(),
            sink_rx,
            metrics.clone(),
        ));
        let (dispatcher, worker_threads) = dispatch::start(
            workers,
            config.runtime.queue,
            &config.runtime.node,
            rules.clone(),
            sink_tx,
            metrics.clone(),
        )
        .context("cannot start worker threads")?;
        let source = tokio::spawn(mqtt_source::run(
            config.mqtt.clone(),
            rules.subscriptions(),
            dispatcher,
            metrics.clone(),
            token.child_token(),
        ));
        Ok(Runtime {
            metrics,
            rules,
            token,
            source,
            watcher,
            workers: worker_threads,
            sink,
        })
    }

    /// Stops taking messages, finishes and writes everything taken, and returns.
    pub async fn stop(self) {
        self.token.cancel();
        // The source owns the dispatcher: once it ends, worker queues close.
        let _ = self.source.await;
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.join()).await;
        // Workers held the last senders to the sink: it drains and ends.
        let _ = self.sink.await;
        match self.watcher.await {
            Ok(Err(e)) => tracing::warn!("rules watcher: {e:#}"),
            Err(e) => tracing::warn!("rules watcher task: {e}"),
            Ok(Ok(())) => {}
        }
    }
}
