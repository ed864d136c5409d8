//! MQTT actions to an external broker: one client connection of their own
//! (`<client id>-actions`, clean session), owned by the Redis writer's task and used by
//! one batch at a time. A batch's publishes are queued together, then the event loop
//! is polled until the broker has acknowledged each QoS 1 publish (and each QoS 0 one
//! is written); a connection error or a broker that does not answer in time drops the
//! connection, and the caller retries what was not confirmed on a new one.
//!
//! Why not rumqttc's own resending: after a reconnect it sends its unacknowledged
//! publishes again under new packet ids, which would make the confirmation of one
//! publish indistinguishable from another's. A fresh connection per failure keeps "this
//! packet id is that publish" true.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::actions::{MqttAction, Publish};
use crate::source::mqtt::{MqttConfig, MqttProtocol, transport};

/// How long a batch's publishes may take to be confirmed before the connection is
/// dropped and they are sent again.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests rumqttc may queue: a batch is sent in chunks of this many.
const CHUNK: usize = 256;

/// The actions connection.
pub struct Publisher {
    config: MqttConfig,
    conn: Option<Conn>,
}

enum Conn {
    V4(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
    V5(rumqttc::v5::AsyncClient, Box<rumqttc::v5::EventLoop>),
}

/// What one poll of the event loop meant for the batch.
enum Seen {
    /// A publish left with this packet id (0 for QoS 0).
    Sent(u16),
    Acked(u16),
    Other,
}

impl Publisher {
    /// Not connected until the first publish.
    pub fn new(mut config: MqttConfig) -> Publisher {
        config.client_id = format!("{}-actions", config.client_id);
        Publisher { config, conn: None }
    }

    /// Publishes every action of `actions` (all [`MqttAction::Publish`]) in order and
    /// waits until each is confirmed. On failure returns how many from the start were
    /// confirmed, and drops the connection.
    pub(super) async fn publish_all(
        &mut self,
        actions: &[MqttAction],
    ) -> Result<(), (usize, anyhow::Error)> {
        let mut done = 0;
        for chunk in actions.chunks(CHUNK) {
            match self.publish_chunk(chunk).await {
                Ok(()) => done += chunk.len(),
                Err((n, e)) => {
                    self.conn = None;
                    return Err((done + n, e));
                }
            }
        }
        Ok(())
    }

    async fn publish_chunk(&mut self, chunk: &[MqttAction]) -> Result<(), (usize, anyhow::Error)> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.config));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut qos = Vec::with_capacity(chunk.len());
        for a in chunk {
            let MqttAction::Publish(p) = a else {
                return Err((0, anyhow!("{} needs the embedded broker", a.kind())));
            };
            conn.queue(p).map_err(|e| (0, e))?;
            qos.push(p.qos);
        }
        // Publishes leave in the order queued: the i-th `Sent` is the i-th publish.
        let mut sent = 0;
        let mut confirmed = vec![false; chunk.len()];
        let mut waiting: HashMap<u16, usize> = HashMap::new();
        let confirm = async {
            while confirmed.iter().any(|c| !c) {
                match conn.poll().await? {
                    Seen::Sent(pkid) if sent < chunk.len() => {
                        if qos[sent] == 0 {
                            confirmed[sent] = true;
                        } else {
                            waiting.insert(pkid, sent);
                        }
                        sent += 1;
                    }
                    Seen::Acked(pkid) => {
                        if let Some(i) = waiting.remove(&pkid) {
                            confirmed[i] = true;
                        }
                    }
                    _ => {}
                }
            }
            anyhow::Ok(())
        };
        let r = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!(
                "the broker confirmed no publish for {CONFIRM_TIMEOUT:?}"
            )),
        };
        r.map_err(|e| {
            let prefix = confirmed.iter().take_while(|c| **c).count();
            (prefix, e)
        })
    }
}

fn connect(cfg: &MqttConfig) -> Conn {
    match cfg.protocol {
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            o.set_keep_alive(cfg.keep_alive)
                .set_clean_session(true)
                .set_max_packet_size(cfg.max_packet_size as usize, cfg.max_packet_size as usize);
            if let Some(u) = &cfg.username {
                o.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
            }
            // The same transport as the source's connection (TLS for mqtts://).
            if let Some(t) = transport(cfg) {
                o.set_transport(t);
            }
            let (c, l) = rumqttc::AsyncClient::new(o, CHUNK);
            Conn::V4(c, Box::new(l))
        }
        MqttProtocol::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
            o.set_keep_alive(cfg.keep_alive)
                .set_clean_start(true)
                // Bounds the publishes in flight (the broker's Receive Maximum bounds
                // them too); rumqttc sizes its table of them by this bound up front
                // (65,536 entries, 13 MB, by default).
                .set_outgoing_inflight_upper_limit(cfg.inflight)
                .set_max_packet_size(Some(cfg.max_packet_size));
            if let Some(u) = &cfg.username {
                o.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
            }
            if let Some(t) = transport(cfg) {
                o.set_transport(t);
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(o, CHUNK);
            Conn::V5(c, Box::new(l))
        }
    }
}

impl Conn {
    /// Queues one publish (never waits: a chunk fits the request queue).
    fn queue(&mut self, p: &Publish) -> anyhow::Result<()> {
        match self {
            Conn::V4(c, _) => {
                let qos = if p.qos == 0 {
                    rumqttc::QoS::AtMostOnce
                } else {
                    rumqttc::QoS::AtLeastOnce
                };
                c.try_publish(&p.topic, qos, p.retain, p.payload.clone())
                    .context("cannot queue the publish")
            }
            Conn::V5(c, _) => {
                let qos = if p.qos == 0 {
                    rumqttc::v5::mqttbytes::QoS::AtMostOnce
                } else {
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce
                };
                let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                    user_properties: p.properties.clone(),
                    ..Default::default()
                };
                c.try_publish_with_properties(
                    p.topic.clone(),
                    qos,
                    p.retain,
                    p.payload.clone(),
                    props,
                )
                .context("cannot queue the publish")
            }
        }
    }

    async fn poll(&mut self) -> anyhow::Result<Seen> {
        Ok(match self {
            Conn::V4(_, l) => {
                use rumqttc::{Event, Outgoing, Packet};
                match l.poll().await.context("MQTT connection for actions")? {
                    Event::Outgoing(Outgoing::Publish(pkid)) => Seen::Sent(pkid),
                    Event::Incoming(Packet::PubAck(a)) => Seen::Acked(a.pkid),
                    Event::Incoming(Packet::ConnAck(c))
                        if c.code != rumqttc::ConnectReturnCode::Success =>
                    {
                        bail!("the broker refused the actions connection: {:?}", c.code)
                    }
                    _ => Seen::Other,
                }
            }
            Conn::V5(_, l) => {
                use rumqttc::Outgoing;
                use rumqttc::v5::Event;
                use rumqttc::v5::mqttbytes::v5::Packet;
                match l.poll().await.context("MQTT connection for actions")? {
                    Event::Outgoing(Outgoing::Publish(pkid)) => Seen::Sent(pkid),
                    Event::Incoming(Packet::PubAck(a)) => Seen::Acked(a.pkid),
                    _ => Seen::Other,
                }
            }
        })
    }
}
