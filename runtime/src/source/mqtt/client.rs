//! The rumqttc client and event loop behind one protocol-independent face: MQTT 3.1.1
//! or 5 is chosen here and nowhere else. [`connect`] builds both from the config;
//! [`EventLoop::poll`] turns packets into [`Polled`]; [`Client`] sends subscriptions,
//! acknowledgements and DISCONNECT. TLS (`mqtts://`) is rumqttc's rustls transport.

use super::config::{MqttConfig, MqttProtocol};
use super::subscriptions::SubRequest;
use crate::ack::AckToken;
use crate::event::{Message, PublishProperties};

/// Requests (publishes we never make, acks, subscriptions) rumqttc may queue.
const REQUEST_CAPACITY: usize = 1024;

/// What one poll of the event loop produced, protocol-independent.
pub(super) enum Polled {
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
pub(super) enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub(super) enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// A client and its event loop for `cfg`; nothing is sent before the first poll.
pub(super) fn connect(cfg: &MqttConfig) -> (Client, EventLoop) {
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
            if let Some(t) = transport(cfg) {
                o.set_transport(t);
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
                // rumqttc sizes a table of outgoing publishes by this bound up front
                // (65,536 entries, 13 MB, by default); this client only subscribes,
                // and its packet ids cycle below the bound.
                .set_outgoing_inflight_upper_limit(cfg.inflight)
                .set_max_packet_size(Some(cfg.max_packet_size));
            if !cfg.clean_session {
                o.set_session_expiry_interval(Some(cfg.session_expiry.as_secs() as u32));
            }
            if let Some(u) = &cfg.username {
                o.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
            }
            if let Some(t) = transport(cfg) {
                o.set_transport(t);
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(o, REQUEST_CAPACITY);
            (Client::V5(c), EventLoop::V5(Box::new(l)))
        }
    }
}

/// TLS for `mqtts://`: rustls with the configuration checked when the config was built
/// (`tls.rs`); the server name checked and sent (SNI) is the URL's host.
pub(crate) fn transport(cfg: &MqttConfig) -> Option<rumqttc::Transport> {
    let tls = cfg.tls.as_ref()?;
    Some(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls.config.clone()),
    ))
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
    /// Queues a subscribe or unsubscribe request.
    pub(super) async fn send(&self, req: &SubRequest, qos: u8) -> Result<(), String> {
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
                    // Must stay false: No Local on a shared subscription
                    // (`$share/...`, mqtt.share_group) is a protocol error (MQTT 5
                    // section 3.8.3.1), and wasmrule publishes nothing it subscribes to.
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

    /// Queues the acknowledgement of one message.
    pub(super) async fn ack(&self, t: AckToken) -> Result<(), String> {
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

    /// Queues DISCONNECT.
    pub(super) async fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    /// The next event of the connection, protocol-independent; an error is a lost or
    /// failed connection (rumqttc reconnects on the next poll).
    pub(super) async fn poll(&mut self) -> Result<Polled, String> {
        match self {
            EventLoop::V4(l) => poll_v4(l).await,
            EventLoop::V5(l) => poll_v5(l).await,
        }
    }
}

async fn poll_v4(l: &mut rumqttc::EventLoop) -> Result<Polled, String> {
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

async fn poll_v5(l: &mut rumqttc::v5::EventLoop) -> Result<Polled, String> {
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
