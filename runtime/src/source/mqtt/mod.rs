//! Owns the MQTT connection: polls the rumqttc event loop (MQTT 3.1.1 or 5), turns
//! publishes into [`Message`]s for the dispatcher, and keeps the broker's subscriptions
//! equal to what the loaded rules need (`subscriptions.rs` decides, `follower.rs` sends).
//! This file is the reader (the poll loop); `client.rs` hides the protocol version,
//! `acker.rs` sends acknowledgements.
//! With `mqtt.emqx_events`, it also subscribes to the EMQX client-event topics of the
//! event kinds rules ask for, and hands messages on them on as those events (`emqx.rs`).
//!
//! The poll loop only polls, converts and hands over: no wasm and no Redis here. When
//! the dispatcher's queues are full, handing over waits, and so does reading from the
//! broker.
//!
//! Delivery: with QoS 1/2 subscriptions, acknowledgements are manual. Each message is
//! registered with the [`AckTracker`] as it arrives and acknowledged, in arrival order,
//! once the Redis writer reports it written (`ack.rs`). With a chosen client id the
//! session is kept (`clean_session = false`, MQTT 5 session expiry), so messages
//! published while wasmrule is down wait in the broker. At shutdown the reader stops
//! handing messages on, keeps the connection up until everything handed on is written
//! and acknowledged, then disconnects.
//!
//! Retained messages: rules see messages as they are published, like EMQX's rule engine,
//! not the stored copies a broker replays to a new subscription. With MQTT 5 the
//! subscriptions ask the broker not to replay them (Retain Handling 2) and to keep the
//! publisher's retain flag (Retain As Published). MQTT 3.1.1 cannot ask: there the
//! replayed copies, which are the only messages arriving with the retain flag set, are
//! skipped.

mod acker;
pub mod capture;
mod client;
mod config;
pub mod emqx;
mod follower;
mod subscriptions;

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::ack::{AckToken, AckTracker, Completions};
use crate::dispatch::Dispatcher;
use crate::event::Message;
use crate::ops::metrics::Metrics;
use crate::rules::ruleset::Wanted;
use acker::Acker;
use client::{EventLoop, Polled};
use follower::{Follower, Requester, lock};
use subscriptions::{SubRequest, SubTable};

pub(crate) use client::transport;
pub use config::{DEFAULT_MQTT_URL, MqttConfig, MqttProtocol, parse_mqtt_url};
pub(crate) use config::{RawMqtt, check_client_id, check_share_group};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the MQTT source needs besides its configuration.
pub struct SourceParts {
    /// Follows the subscriptions and event kinds the loaded rules need.
    pub wanted: watch::Receiver<Wanted>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    pub tracker: Arc<AckTracker>,
    /// Reports messages that need no work (duplicates, replays).
    pub completions: Completions,
    /// Acknowledgements that became due, from every [`Completions`] handle.
    pub due: mpsc::UnboundedReceiver<Vec<AckToken>>,
    /// Stop handing messages on (start of a graceful shutdown).
    pub shutdown: CancellationToken,
    /// Everything handed on has been written: send the last acknowledgements and
    /// disconnect.
    pub drained: CancellationToken,
}

/// Runs the MQTT side: connects (and reconnects with backoff), follows the wanted
/// subscriptions, hands every publish to the dispatcher and acknowledges it after its
/// writes. Returns after `drained` (or, if never connected, soon after `shutdown`).
pub async fn run(cfg: MqttConfig, parts: SourceParts) {
    let (client, eventloop) = client::connect(&cfg);
    let table = Arc::new(Mutex::new(SubTable::new(
        cfg.protocol == MqttProtocol::V5,
        cfg.share_group.clone(),
    )));
    let (req_tx, req_rx) = mpsc::unbounded_channel::<SubRequest>();
    let mut requester = Requester {
        client: client.clone(),
        qos: cfg.qos,
        requests: req_rx,
    };
    let sender = tokio::spawn(async move { requester.run().await });
    let mut acker = Acker {
        client: client.clone(),
        tracker: parts.tracker.clone(),
        metrics: parts.metrics.clone(),
        due: parts.due,
    };
    let acker = tokio::spawn(async move { acker.run().await });
    // The reader asks which event kinds are wanted when an EMQX event arrives.
    let events_wanted = parts.wanted.clone();
    let mut follower = Follower {
        wanted: parts.wanted,
        table: table.clone(),
        requests: req_tx.clone(),
        emqx_events: cfg.emqx_events,
        shutdown: parts.shutdown.clone(),
    };
    let follower = tokio::spawn(async move { follower.run().await });
    let mut reader = Reader {
        generation: parts.tracker.generation(),
        eventloop,
        dispatcher: Some(parts.dispatcher),
        tracker: parts.tracker,
        completions: parts.completions,
        metrics: parts.metrics,
        table,
        requests: req_tx,
        events_wanted,
        shutdown: parts.shutdown,
        drained: parts.drained,
        backoff: BACKOFF_MIN,
        failures: 0,
        cfg,
    };
    reader.run().await;
    follower.abort();
    // Let the acknowledgements already due reach rumqttc's queue, ahead of DISCONNECT.
    drop(reader.completions);
    let _ = tokio::time::timeout(Duration::from_secs(1), acker).await;
    client.disconnect().await;
    // Poll a little longer so the acknowledgements and DISCONNECT are actually written.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while reader.eventloop.poll().await.is_ok() {}
    })
    .await;
    Metrics::set(&reader.metrics.mqtt_connected, false);
    sender.abort();
}

/// The poll loop: reads the connection, hands publishes to the dispatcher, reconnects.
/// It only polls, converts and hands over (module docs).
struct Reader {
    cfg: MqttConfig,
    eventloop: EventLoop,
    /// `None` once shutdown began: messages are no longer handed on.
    dispatcher: Option<Dispatcher>,
    tracker: Arc<AckTracker>,
    /// Reports messages that need no work (duplicates, replays).
    completions: Completions,
    metrics: Arc<Metrics>,
    table: Arc<Mutex<SubTable>>,
    /// To the [`Requester`]: resubscriptions after a reconnect.
    requests: mpsc::UnboundedSender<SubRequest>,
    /// Which event kinds rules want, for EMQX event topics.
    events_wanted: watch::Receiver<Wanted>,
    shutdown: CancellationToken,
    drained: CancellationToken,
    /// The current connection, for acknowledgement tokens.
    generation: u64,
    /// Wait before the next connection attempt.
    backoff: Duration,
    /// Connection attempts failed in a row.
    failures: u32,
}

impl Reader {
    /// Until `drained` (or the workers are gone).
    async fn run(&mut self) {
        // Made once, not per message: a token's `cancelled()` future joins the token's
        // list of waiters when first polled and leaves it, under the token's lock, when
        // dropped (1.7% of the process's samples in `perf` when made per poll; no change
        // in the benches' CPU per message beyond their noise).
        let (shutdown, drained) = (self.shutdown.clone(), self.drained.clone());
        let shutdown = shutdown.cancelled();
        let drained = drained.cancelled();
        tokio::pin!(shutdown, drained);
        loop {
            let polled = tokio::select! {
                biased;
                // Not polled again once it fired: it is done, and the dispatcher gone.
                _ = &mut shutdown, if self.dispatcher.is_some() => {
                    // Workers drain their queues once the last dispatcher is gone.
                    self.dispatcher = None;
                    tracing::info!(
                        outstanding = self.tracker.outstanding(),
                        "no longer taking messages; finishing those in flight"
                    );
                    continue;
                }
                _ = &mut drained => break,
                p = self.eventloop.poll() => p,
            };
            let flow = match polled {
                Ok(Polled::Connected { session_present }) => {
                    self.connected(session_present);
                    ControlFlow::Continue(())
                }
                Ok(Polled::Publish(m, ids, pkid, qos)) => self.publish(m, ids, pkid, qos).await,
                Ok(Polled::SubAck { pkid, refused }) => {
                    if !refused.is_empty() {
                        tracing::error!(
                            pkid,
                            "the broker refused a subscription ({}); rules on that filter receive nothing",
                            refused.join(", ")
                        );
                    }
                    ControlFlow::Continue(())
                }
                Ok(Polled::UnsubscribeSent(pkid)) => {
                    lock(&self.table).on_unsubscribe_sent(pkid);
                    ControlFlow::Continue(())
                }
                Ok(Polled::UnsubAck(pkid)) => {
                    lock(&self.table).on_unsuback(pkid);
                    ControlFlow::Continue(())
                }
                Ok(Polled::Other) => ControlFlow::Continue(()),
                Err(e) => self.failed(&e).await,
            };
            if flow.is_break() {
                break;
            }
        }
    }

    /// A new connection: acknowledgement tokens start a new generation, and the
    /// subscriptions are sent again.
    fn connected(&mut self, session_present: bool) {
        let (host, port, failures) = (&self.cfg.host, self.cfg.port, self.failures);
        self.generation = self.tracker.new_connection();
        Metrics::set(&self.metrics.mqtt_connected, true);
        if failures > 0 {
            tracing::info!(
                session_present,
                "reconnected to MQTT broker {host}:{port} after {failures} failed attempts",
            );
        } else {
            tracing::info!(session_present, "connected to MQTT broker {host}:{port}");
        }
        self.failures = 0;
        self.backoff = BACKOFF_MIN;
        for r in lock(&self.table).on_connected() {
            let _ = self.requests.send(r);
        }
    }

    /// One publish: registered for acknowledgement, skipped if it is a replay or a
    /// duplicate, adapted if it is an EMQX event, handed to the dispatcher. Breaks when
    /// the workers are gone.
    async fn publish(
        &mut self,
        mut m: Message,
        ids: Vec<usize>,
        pkid: u16,
        qos: u8,
    ) -> ControlFlow<()> {
        let Some(d) = &self.dispatcher else {
            // Shutting down: not handed on and not acknowledged, so the broker
            // delivers it again to the next session.
            return ControlFlow::Continue(());
        };
        let tracked = self.cfg.qos > 0 && qos > 0;
        if tracked {
            let token = AckToken {
                generation: self.generation,
                pkid,
                qos,
            };
            self.tracker.received(m.seq, token);
        }
        // A stored copy replayed on subscribe (MQTT 3.1.1, module docs), or the
        // second copy of an overlapping subscription: acknowledged, not handled.
        let replay = m.retain && self.cfg.protocol != MqttProtocol::V5;
        let duplicate = !replay && !lock(&self.table).should_handle(&m.topic, &ids);
        if replay || duplicate {
            if duplicate {
                Metrics::add(&self.metrics.duplicates_dropped, 1);
            }
            if tracked {
                self.completions.done(&[m.seq]);
            }
            return ControlFlow::Continue(());
        }
        m.tracked = tracked;
        if self.cfg.emqx_events {
            match emqx::adapt(&m, |k| self.events_wanted.borrow().events.contains(&k)) {
                Ok(Some(event)) => m = event,
                Ok(None) => {}
                Err(e) => {
                    malformed_emqx_event(&self.metrics, &m.topic, &e);
                    if tracked {
                        self.completions.done(&[m.seq]);
                    }
                    return ControlFlow::Continue(());
                }
            }
        }
        Metrics::add(&self.metrics.messages_received, 1);
        Metrics::add(&self.metrics.bytes_received, m.payload.len() as u64);
        if d.dispatch(m).await.is_err() {
            tracing::error!("workers stopped; MQTT reader exiting");
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    /// A failed or lost connection: waits out the backoff (rumqttc reconnects on the
    /// next poll). Breaks on `drained`.
    async fn failed(&mut self, e: &str) -> ControlFlow<()> {
        // Pending acknowledgements belong to this connection: drop them now so
        // none is queued for the next one.
        self.generation = self.tracker.new_connection();
        Metrics::set(&self.metrics.mqtt_connected, false);
        // First failure at warn, then one line per 10 attempts: visible, no flood.
        if self.failures.is_multiple_of(10) {
            tracing::warn!(
                "MQTT connection to {}:{} failed: {e}; retrying in {:?}",
                self.cfg.host,
                self.cfg.port,
                self.backoff
            );
        }
        self.failures += 1;
        tokio::select! {
            _ = self.drained.cancelled() => return ControlFlow::Break(()),
            _ = self.shutdown.cancelled(), if self.dispatcher.is_some() => {
                self.dispatcher = None;
            }
            _ = tokio::time::sleep(jitter(self.backoff)) => {}
        }
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        ControlFlow::Continue(())
    }
}

/// Counts a message on an EMQX event topic that could not be read; logs the first one
/// (a misconfigured or newer EMQX would otherwise flood the log).
fn malformed_emqx_event(metrics: &Metrics, topic: &str, e: &emqx::EmqxError) {
    let before = metrics
        .emqx_events_malformed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if before == 0 {
        tracing::warn!(
            topic,
            "skipped an EMQX event message: {e}; further ones are counted \
             (wasmrule_emqx_events_malformed_total) and logged at debug"
        );
    } else {
        tracing::debug!(topic, "skipped an EMQX event message: {e}");
    }
}

/// `d` plus up to 25% so that many runtimes restarting together do not reconnect in
/// lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d.mul_f64((nanos % 1000) as f64 / 4000.0)
}
