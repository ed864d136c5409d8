//! Owns the MQTT connection: polls the rumqttc event loop (MQTT 3.1.1 or 5), turns
//! publishes into [`Message`]s for the dispatcher, and keeps the broker's subscriptions
//! equal to what the loaded rules need (`subscriptions.rs` decides, this file sends).
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

mod config;
pub mod emqx;
mod subscriptions;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::ack::{AckToken, AckTracker, Completions};
use crate::dispatch::Dispatcher;
use crate::event::{Message, PublishProperties};
use crate::ops::metrics::Metrics;
use crate::rules::ruleset::Wanted;
use subscriptions::{SubRequest, SubTable};

pub use config::{DEFAULT_MQTT_URL, MqttConfig, MqttProtocol, parse_mqtt_url};
pub(crate) use config::{RawMqtt, check_client_id};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Requests (publishes we never make, acks, subscriptions) rumqttc may queue.
const REQUEST_CAPACITY: usize = 1024;

/// What one poll of the event loop produced, protocol-independent.
enum Polled {
    Connected {
        session_present: bool,
    },
    /// The message, its subscription identifiers, packet id and QoS.
    Publish(Message, Vec<usize>, u16, u8),
    SubAck {
        pkid: u16,
        refused: Vec<String>,
    },
    UnsubscribeSent(u16),
    UnsubAck(u16),
    Other,
}

#[derive(Clone)]
enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

fn connect(cfg: &MqttConfig) -> (Client, EventLoop) {
    match cfg.protocol {
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            o.set_keep_alive(cfg.keep_alive)
                .set_clean_session(cfg.clean_session)
                .set_manual_acks(cfg.qos > 0)
                .set_max_packet_size(cfg.max_packet_size as usize, cfg.max_packet_size as usize);
            if let Some(u) = &cfg.username {
                o.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
            }
            let (c, l) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
            (Client::V4(c), EventLoop::V4(Box::new(l)))
        }
        MqttProtocol::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            o.set_keep_alive(cfg.keep_alive)
                .set_clean_start(cfg.clean_session)
                .set_manual_acks(cfg.qos > 0)
                .set_receive_maximum(Some(cfg.inflight))
                .set_max_packet_size(Some(cfg.max_packet_size));
            if !cfg.clean_session {
                o.set_session_expiry_interval(Some(cfg.session_expiry.as_secs() as u32));
            }
            if let Some(u) = &cfg.username {
                o.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(o, REQUEST_CAPACITY);
            (Client::V5(c), EventLoop::V5(Box::new(l)))
        }
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Client {
    async fn send(&self, req: &SubRequest, qos: u8) -> Result<(), String> {
        use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule, SubscribeProperties};
        match (self, req) {
            (Client::V4(c), SubRequest::Subscribe { filter, .. }) => c
                .subscribe(filter.as_str(), qos4(qos))
                .await
                .map_err(|e| e.to_string()),
            (Client::V4(c), SubRequest::Unsubscribe { filter }) => c
                .unsubscribe(filter.as_str())
                .await
                .map_err(|e| e.to_string()),
            (Client::V5(c), SubRequest::Subscribe { filter, id }) => {
                let f = Filter {
                    path: filter.clone(),
                    qos: qos5(qos),
                    nolocal: false,
                    preserve_retain: true,
                    retain_forward_rule: RetainForwardRule::Never,
                };
                let props = SubscribeProperties {
                    id: *id,
                    user_properties: Vec::new(),
                };
                c.subscribe_many_with_properties([f], props)
                    .await
                    .map_err(|e| e.to_string())
            }
            (Client::V5(c), SubRequest::Unsubscribe { filter }) => c
                .unsubscribe(filter.as_str())
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn ack(&self, t: AckToken) -> Result<(), String> {
        match self {
            Client::V4(c) => {
                let mut p = rumqttc::Publish::new("", qos4(t.qos), Vec::new());
                p.pkid = t.pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let mut p =
                    rumqttc::v5::mqttbytes::v5::Publish::new("", qos5(t.qos), Vec::new(), None);
                p.pkid = t.pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
        }
    }

    async fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    async fn poll(&mut self) -> Result<Polled, String> {
        match self {
            EventLoop::V4(l) => {
                use rumqttc::{Event, Outgoing, Packet};
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Polled::Connected {
                        session_present: a.session_present,
                    },
                    Event::Incoming(Packet::Publish(p)) => {
                        let (pkid, qos) = (p.pkid, p.qos as u8);
                        let m = Message::new(p.topic, p.payload, qos, p.retain);
                        Polled::Publish(m, Vec::new(), pkid, qos)
                    }
                    Event::Incoming(Packet::SubAck(a)) => Polled::SubAck {
                        pkid: a.pkid,
                        refused: a
                            .return_codes
                            .iter()
                            .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                            .map(|c| format!("{c:?}"))
                            .collect(),
                    },
                    Event::Incoming(Packet::UnsubAck(a)) => Polled::UnsubAck(a.pkid),
                    Event::Outgoing(Outgoing::Unsubscribe(pkid)) => Polled::UnsubscribeSent(pkid),
                    _ => Polled::Other,
                })
            }
            EventLoop::V5(l) => {
                use rumqttc::Outgoing;
                use rumqttc::v5::Event;
                use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
                Ok(match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Polled::Connected {
                        session_present: a.session_present,
                    },
                    Event::Incoming(Packet::Publish(p)) => {
                        let Ok(topic) = String::from_utf8(p.topic.to_vec()) else {
                            tracing::warn!("skipped a publish whose topic is not UTF-8");
                            return Ok(Polled::Other);
                        };
                        let (pkid, qos) = (p.pkid, p.qos as u8);
                        let mut m = Message::new(topic, p.payload, qos, p.retain);
                        let mut ids = Vec::new();
                        if let Some(props) = p.properties {
                            ids = props.subscription_identifiers;
                            m.properties = Some(Box::new(PublishProperties {
                                payload_format_indicator: props.payload_format_indicator,
                                message_expiry_interval: props.message_expiry_interval,
                                content_type: props.content_type,
                                response_topic: props.response_topic,
                                correlation_data: props.correlation_data,
                                user_properties: props.user_properties,
                            }));
                        }
                        Polled::Publish(m, ids, pkid, qos)
                    }
                    Event::Incoming(Packet::SubAck(a)) => Polled::SubAck {
                        pkid: a.pkid,
                        refused: a
                            .return_codes
                            .iter()
                            .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                            .map(|c| format!("{c:?}"))
                            .collect(),
                    },
                    Event::Incoming(Packet::UnsubAck(a)) => Polled::UnsubAck(a.pkid),
                    Event::Outgoing(Outgoing::Unsubscribe(pkid)) => Polled::UnsubscribeSent(pkid),
                    _ => Polled::Other,
                })
            }
        }
    }
}

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
    let SourceParts {
        mut wanted,
        dispatcher,
        metrics,
        tracker,
        completions,
        mut due,
        shutdown,
        drained,
    } = parts;
    let (client, mut eventloop) = connect(&cfg);
    let use_ids = cfg.protocol == MqttProtocol::V5;
    let manual_acks = cfg.qos > 0;
    let emqx_events = cfg.emqx_events;
    // The poll loop asks which event kinds are wanted when an EMQX event arrives.
    let events_wanted = wanted.clone();
    let table = Arc::new(Mutex::new(SubTable::new(use_ids)));

    // Requests go out one at a time, in order, from their own task: the poll loop must
    // keep polling for the client's request channel to drain.
    let (req_tx, mut req_rx) = mpsc::unbounded_channel::<SubRequest>();
    let sender = {
        let client = client.clone();
        let qos = cfg.qos;
        tokio::spawn(async move {
            while let Some(req) = req_rx.recv().await {
                if let Err(e) = client.send(&req, qos).await {
                    tracing::warn!("cannot queue MQTT request {req:?}: {e}");
                }
            }
        })
    };

    // Sends acknowledgements as they become due, unless they belong to a connection
    // that has since gone (the broker redelivers those messages).
    let acker = {
        let client = client.clone();
        let tracker = tracker.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            while let Some(tokens) = due.recv().await {
                for t in tokens {
                    if t.generation != tracker.generation() {
                        continue;
                    }
                    match client.ack(t).await {
                        Ok(()) => Metrics::add(&metrics.messages_acked, 1),
                        Err(e) => tracing::debug!("acknowledgement not queued: {e}"),
                    }
                }
            }
        })
    };

    // Follows rule changes.
    let follower = {
        let table = table.clone();
        let req_tx = req_tx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let desired = {
                    let w = wanted.borrow_and_update();
                    if emqx_events {
                        emqx::subscriptions(&w.filters, &w.events)
                    } else {
                        w.filters.clone()
                    }
                };
                let reqs = lock(&table).set_desired(&desired);
                for r in reqs {
                    log_request(&r);
                    let _ = req_tx.send(r);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = wanted.changed() => if changed.is_err() { break },
                }
            }
        })
    };

    let mut dispatcher = Some(dispatcher);
    let mut generation = tracker.generation();
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    loop {
        let polled = tokio::select! {
            biased;
            _ = shutdown.cancelled(), if dispatcher.is_some() => {
                // Workers drain their queues once the last dispatcher is gone.
                dispatcher = None;
                tracing::info!(
                    outstanding = tracker.outstanding(),
                    "no longer taking messages; finishing those in flight"
                );
                continue;
            }
            _ = drained.cancelled() => break,
            p = eventloop.poll() => p,
        };
        match polled {
            Ok(Polled::Connected { session_present }) => {
                generation = tracker.new_connection();
                Metrics::set(&metrics.mqtt_connected, true);
                if failures > 0 {
                    tracing::info!(
                        session_present,
                        "reconnected to MQTT broker {}:{} after {failures} failed attempts",
                        cfg.host,
                        cfg.port
                    );
                } else {
                    tracing::info!(
                        session_present,
                        "connected to MQTT broker {}:{}",
                        cfg.host,
                        cfg.port
                    );
                }
                failures = 0;
                backoff = BACKOFF_MIN;
                for r in lock(&table).on_connected() {
                    let _ = req_tx.send(r);
                }
            }
            Ok(Polled::Publish(mut m, ids, pkid, qos)) => {
                let Some(d) = &dispatcher else {
                    // Shutting down: not handed on and not acknowledged, so the broker
                    // delivers it again to the next session.
                    continue;
                };
                let tracked = manual_acks && qos > 0;
                if tracked {
                    let token = AckToken {
                        generation,
                        pkid,
                        qos,
                    };
                    tracker.received(m.seq, token);
                }
                // A stored copy replayed on subscribe (MQTT 3.1.1, module docs), or the
                // second copy of an overlapping subscription: acknowledged, not handled.
                let replay = m.retain && !use_ids;
                let duplicate = !replay && !lock(&table).should_handle(&m.topic, &ids);
                if replay || duplicate {
                    if duplicate {
                        Metrics::add(&metrics.duplicates_dropped, 1);
                    }
                    if tracked {
                        completions.done(&[m.seq]);
                    }
                    continue;
                }
                m.tracked = tracked;
                if emqx_events {
                    match emqx::adapt(&m, |k| events_wanted.borrow().events.contains(&k)) {
                        Ok(Some(event)) => m = event,
                        Ok(None) => {}
                        Err(e) => {
                            malformed_emqx_event(&metrics, &m.topic, &e);
                            if tracked {
                                completions.done(&[m.seq]);
                            }
                            continue;
                        }
                    }
                }
                Metrics::add(&metrics.messages_received, 1);
                if d.dispatch(m).await.is_err() {
                    tracing::error!("workers stopped; MQTT reader exiting");
                    break;
                }
            }
            Ok(Polled::SubAck { pkid, refused }) => {
                if !refused.is_empty() {
                    tracing::error!(
                        pkid,
                        "the broker refused a subscription ({}); rules on that filter receive nothing",
                        refused.join(", ")
                    );
                }
            }
            Ok(Polled::UnsubscribeSent(pkid)) => lock(&table).on_unsubscribe_sent(pkid),
            Ok(Polled::UnsubAck(pkid)) => lock(&table).on_unsuback(pkid),
            Ok(Polled::Other) => {}
            Err(e) => {
                // Pending acknowledgements belong to this connection: drop them now so
                // none is queued for the next one.
                generation = tracker.new_connection();
                Metrics::set(&metrics.mqtt_connected, false);
                // First failure at warn, then one line per 10 attempts: visible, no flood.
                if failures.is_multiple_of(10) {
                    tracing::warn!(
                        "MQTT connection to {}:{} failed: {e}; retrying in {backoff:?}",
                        cfg.host,
                        cfg.port
                    );
                }
                failures += 1;
                tokio::select! {
                    _ = drained.cancelled() => break,
                    _ = shutdown.cancelled(), if dispatcher.is_some() => {
                        dispatcher = None;
                    }
                    _ = tokio::time::sleep(jitter(backoff)) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    follower.abort();
    // Let the acknowledgements already due reach rumqttc's queue, ahead of DISCONNECT.
    drop(completions);
    let _ = tokio::time::timeout(Duration::from_secs(1), acker).await;
    client.disconnect().await;
    // Poll a little longer so the acknowledgements and DISCONNECT are actually written.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    Metrics::set(&metrics.mqtt_connected, false);
    sender.abort();
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

fn log_request(r: &SubRequest) {
    match r {
        SubRequest::Subscribe { filter, id } => tracing::info!(filter, ?id, "subscribing"),
        SubRequest::Unsubscribe { filter } => tracing::info!(filter, "unsubscribing"),
    }
}

fn lock(t: &Mutex<SubTable>) -> std::sync::MutexGuard<'_, SubTable> {
    // The table holds no invariant a panic elsewhere could break halfway.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// `d` plus up to 25% so that many runtimes restarting together do not reconnect in
/// lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    d + d.mul_f64((nanos % 1000) as f64 / 4000.0)
}
