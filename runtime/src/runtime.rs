//! The running wasmrule: [`Runtime::start`] wires the stages together, [`Runtime::stop`]
//! takes them down in order. What each stage does lives in its folder.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::ops::http;
use crate::ops::metrics::{self, Metrics};
use crate::rules::engine::{self, Engine};
use crate::rules::reload::{EventSource, Reloader};
use crate::rules::ruleset::Rules;
use crate::sink::mqtt::{ActionSink, EmbeddedActions, Publisher};
use crate::sink::redis as redis_sink;
use crate::sink::spill::{self, SpillConfig};
use crate::source::{broker, mqtt as mqtt_source, redis as redis_source};
use crate::{ack, dispatch};

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
    /// What the web console shows beyond the runtime's state (`wasmrule demo` sets
    /// its Redis hashes here).
    pub console: Arc<http::Console>,
    /// Where the health endpoint listens, if it does.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Where the embedded broker listens, if it runs.
    pub broker_addr: Option<std::net::SocketAddr>,
    /// Where the embedded broker's TLS listener listens, if it has one.
    pub broker_tls_addr: Option<std::net::SocketAddr>,
    shutdown_timeout: std::time::Duration,
    token: CancellationToken,
    drained: CancellationToken,
    source: Source,
    watcher: tokio::task::JoinHandle<anyhow::Result<()>>,
    workers: dispatch::Workers,
    /// Events from Redis channels and streams (`source/redis/`).
    redis_events: tokio::task::JoinHandle<()>,
    sink: tokio::task::JoinHandle<()>,
    http: Option<tokio::task::JoinHandle<()>>,
    // The recorder thread, when recording: joined after the workers.
    recorder: Option<crate::record::writer::RecorderThread>,
}

/// Where events come from.
enum Source {
    /// A connection to an MQTT broker.
    Mqtt(tokio::task::JoinHandle<()>),
    /// The embedded broker.
    Embedded(broker::Broker),
}

impl Source {
    /// Where the embedded broker listens, if it is the source.
    fn broker_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Source::Embedded(broker) => Some(broker.local_addr()),
            Source::Mqtt(_) => None,
        }
    }
}

impl Runtime {
    /// Loads the rules in the directory, then starts the watcher, workers, Redis writer
    /// and MQTT connection. Returns once the initial rules are serving.
    ///
    /// # Errors
    ///
    /// As [`run`].
    pub async fn start(mut config: Config) -> anyhow::Result<Runtime> {
        config.rules.dir = resolve_rules_dir(&config.rules.dir)?;
        // Before anything starts: a spill another process holds, or cannot read, stops
        // the start.
        let spill = config.redis.spill.as_ref().map(open_spill).transpose()?;
        let workers = config.runtime.workers;
        let engine = start_engine(&config)?;
        let metrics = Arc::new(Metrics::default());
        let recorder = config
            .record
            .as_ref()
            .map(|c| {
                crate::record::writer::Recorder::start(c, metrics.record.clone())
                    .with_context(|| format!("cannot record into {}", c.dir.display()))
            })
            .transpose()?;
        let rules = Arc::new(Rules::new());
        let token = CancellationToken::new();

        let console = Arc::new(http::Console::default());
        let (http_addr, http) = serve_http(&config, &metrics, &rules, &console, &token).await?;
        let watcher = load_rules(&config, engine, &rules, &metrics, &token).await?;

        let tracker = Arc::new(ack::AckTracker::new());
        metrics.track_acks(tracker.clone());
        let (due_tx, due_rx) = mpsc::unbounded_channel();
        let completions = ack::Completions::new(tracker.clone(), due_tx);
        let (sink_tx, sink_rx) = mpsc::channel(workers * 4);
        // v2 rules' MQTT actions: into the embedded broker once it runs, or through a
        // connection of their own to the external one.
        let embedded_actions = EmbeddedActions::new();
        let (actions, embedded) = match &config.broker {
            Some(_) => (ActionSink::Embedded(embedded_actions.clone()), true),
            None => (
                ActionSink::Client(Box::new(Publisher::new(config.mqtt.clone()))),
                false,
            ),
        };
        let sink = tokio::spawn(redis_sink::run(
            config.redis.clone(),
            sink_rx,
            metrics.clone(),
            completions.clone(),
            spill,
            Some(actions),
        ));
        let (dispatcher, worker_threads) = dispatch::start(
            dispatch::WorkerSetup {
                workers,
                queue: config.runtime.queue,
                node: &config.runtime.node,
                embedded_broker: embedded,
                recorder: recorder.as_ref().map(|(r, _)| r.clone()),
            },
            rules.clone(),
            sink_tx,
            metrics.clone(),
        )
        .context("cannot start worker threads")?;
        // The workers hold the only recorders now: the recorder thread ends after them.
        let recorder = recorder.map(|(_, thread)| thread);
        let redis_events = tokio::spawn(redis_source::run(redis_source::RedisSourceParts {
            config: config.redis.clone(),
            wanted: rules.wanted(),
            dispatcher: dispatcher.clone(),
            acks: completions.stream_acks(),
            consumer: config.runtime.node.clone(),
            shutdown: token.child_token(),
        }));
        let drained = CancellationToken::new();
        let source = match &config.broker {
            Some(b) => {
                let broker = broker::Broker::start(
                    b.clone(),
                    rules.clone(),
                    dispatcher,
                    metrics.clone(),
                    token.child_token(),
                )
                .await?;
                embedded_actions.started(broker.context());
                metrics::Metrics::set(&metrics.mqtt_connected, true);
                Source::Embedded(broker)
            }
            None => Source::Mqtt(tokio::spawn(mqtt_source::run(
                config.mqtt.clone(),
                mqtt_source::SourceParts {
                    wanted: rules.wanted(),
                    dispatcher,
                    metrics: metrics.clone(),
                    tracker,
                    completions,
                    due: due_rx,
                    shutdown: token.child_token(),
                    drained: drained.clone(),
                },
            ))),
        };
        Ok(Runtime {
            metrics,
            rules,
            console,
            http_addr,
            broker_addr: source.broker_addr(),
            broker_tls_addr: match &source {
                Source::Embedded(broker) => broker.tls_addr(),
                Source::Mqtt(_) => None,
            },
            shutdown_timeout: config.runtime.shutdown_timeout,
            token,
            drained,
            source,
            watcher,
            workers: worker_threads,
            redis_events,
            sink,
            http,
            recorder,
        })
    }

    /// Graceful shutdown: stops taking messages, finishes the ones taken, writes them,
    /// acknowledges them and disconnects, within the configured shutdown timeout.
    /// Returns whether everything finished in time (if not, the broker redelivers what
    /// was not acknowledged).
    pub async fn stop(self) -> bool {
        let Runtime {
            token,
            drained,
            source,
            watcher,
            workers,
            redis_events,
            sink,
            http,
            shutdown_timeout,
            recorder,
            ..
        } = self;
        token.cancel();
        let finish = async {
            // The Redis events reader stops reading and drops its dispatcher.
            let _ = redis_events.await;
            // The source drops the dispatcher; workers drain their queues and exit,
            // which closes the writer's channel; the writer finishes and ends.
            let _ = tokio::task::spawn_blocking(move || {
                workers.join();
                if let Some(r) = recorder {
                    r.join();
                }
            })
            .await;
            let _ = sink.await;
        };
        let in_time = tokio::time::timeout(shutdown_timeout, finish).await.is_ok();
        if !in_time {
            tracing::warn!(
                "shutdown timeout ({shutdown_timeout:?}) reached; unacknowledged messages will be redelivered"
            );
        }
        drained.cancel();
        match source {
            Source::Mqtt(task) => {
                if tokio::time::timeout(std::time::Duration::from_secs(3), task)
                    .await
                    .is_err()
                {
                    tracing::warn!("MQTT connection did not close in time");
                }
            }
            Source::Embedded(broker) => broker.stop().await,
        }
        match watcher.await {
            Ok(Err(e)) => tracing::warn!("rules watcher: {e:#}"),
            Err(e) => tracing::warn!("rules watcher task: {e}"),
            Ok(Ok(())) => {}
        }
        if let Some(h) = http {
            let _ = h.await;
        }
        in_time
    }
}

/// The rules directory as an absolute path: the watcher reports absolute paths, and
/// rule ids are computed relative to this.
fn resolve_rules_dir(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    if !dir.is_dir() {
        bail!(
            "rules directory {} does not exist (create it, or pass --rules-dir)",
            dir.display()
        );
    }
    std::fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve rules directory {}", dir.display()))
}

/// Opens the spill, saying whether it holds batches from an earlier run.
fn open_spill(s: &SpillConfig) -> anyhow::Result<spill::SpillLog> {
    let log = spill::SpillLog::open(&s.dir, s.max_bytes, s.segment_bytes)
        .with_context(|| format!("cannot open the spill in {}", s.dir.display()))?;
    tracing::info!(
        dir = %s.dir.display(),
        max_bytes = s.max_bytes,
        "spill on for QoS 0 batches while Redis is unreachable"
    );
    if !log.is_empty() {
        tracing::info!(
            bytes = log.bytes(),
            "the spill holds batches from before; replaying them first"
        );
    }
    Ok(log)
}

/// The engine, with an instance per worker and the compiled-code cache if it opens.
fn start_engine(config: &Config) -> anyhow::Result<Engine> {
    let instances = config.runtime.workers as u32 + SPARE_INSTANCES;
    let mut engine = Engine::new(config.limits.clone(), instances)
        .context("cannot start the WebAssembly engine")?;
    if let Some(dir) = &config.rules.cache_dir {
        match engine::cache::Cache::open(dir) {
            Ok(cache) => engine = engine.with_cache(cache),
            Err(e) => tracing::warn!("compiled-code cache off: {e:#}"),
        }
    }
    Ok(engine)
}

/// The health and metrics endpoint, if configured: its address and its task.
async fn serve_http(
    config: &Config,
    metrics: &Arc<Metrics>,
    rules: &Arc<Rules>,
    console: &Arc<http::Console>,
    token: &CancellationToken,
) -> anyhow::Result<(
    Option<std::net::SocketAddr>,
    Option<tokio::task::JoinHandle<()>>,
)> {
    Ok(match config.runtime.http_addr {
        Some(addr) => {
            let (a, t) = http::serve(
                addr,
                metrics.clone(),
                rules.clone(),
                console.clone(),
                token.child_token(),
            )
            .await?;
            (Some(a), Some(t))
        }
        None => (None, None),
    })
}

/// Loads every rule in the directory into `rules`, then watches it for changes.
async fn load_rules(
    config: &Config,
    engine: Engine,
    rules: &Arc<Rules>,
    metrics: &Arc<Metrics>,
    token: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let events = match (&config.broker, config.mqtt.emqx_events) {
        (Some(_), _) => EventSource::EmbeddedBroker,
        (None, true) => EventSource::Emqx,
        (None, false) => EventSource::PlainBroker,
    };
    let mut reloader = Reloader::new(
        engine,
        config.rules.clone(),
        config.tenants.clone(),
        rules.clone(),
        metrics.clone(),
    )
    .with_event_source(events);
    reloader.scan().await?;
    tracing::info!(
        rules = rules.snapshot().len(),
        dir = %config.rules.dir.display(),
        "initial rules loaded"
    );
    Ok(tokio::spawn(reloader.watch(token.child_token())))
}
