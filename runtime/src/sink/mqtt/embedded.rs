//! MQTT actions into the embedded broker (rmqtt), in process: a publish is routed to
//! its subscribers as if a client had sent it; subscribe and unsubscribe change a
//! connected client's session (as if it had sent SUBSCRIBE or UNSUBSCRIBE); deliver
//! puts a message in one client's session only.
//!
//! rmqtt confirms each call when the message is queued for its subscribers (their
//! sessions then deliver it, QoS 1 with their own acknowledgements), so that is when an
//! action counts as taken. An action naming a client that is not connected is refused
//! by rmqtt; that is final (retrying cannot make the client connect), so it is logged
//! and skipped.

use std::sync::{Arc, OnceLock};

use anyhow::anyhow;
use bytestring::ByteString;
use rmqtt::context::ServerContext;
use rmqtt::session::SessionState;
use rmqtt::types::{From as MsgFrom, Id, QoS, Subscribe, Unsubscribe};

use crate::actions::{MqttAction, Publish};

/// The client id actions are published under (their `From`).
const ACTIONS_CLIENT: &str = "wasmrule-actions";

/// Actions into the embedded broker, once it runs.
#[derive(Clone, Default)]
pub struct EmbeddedActions {
    scx: Arc<OnceLock<ServerContext>>,
}

impl EmbeddedActions {
    /// Not usable until [`EmbeddedActions::started`].
    pub fn new() -> EmbeddedActions {
        EmbeddedActions::default()
    }

    /// The broker is running with this context.
    pub fn started(&self, scx: ServerContext) {
        let _ = self.scx.set(scx);
    }

    /// Takes every action in order. On failure returns how many from the start were
    /// taken.
    pub(super) async fn take_all(
        &mut self,
        actions: &[MqttAction],
    ) -> Result<(), (usize, anyhow::Error)> {
        let Some(scx) = self.scx.get() else {
            return Err((0, anyhow!("the embedded broker is not running yet")));
        };
        for (i, a) in actions.iter().enumerate() {
            if let Err(e) = take(scx, a).await {
                match e {
                    Taken::Retry(e) => return Err((i, e)),
                    Taken::Refused(why) => tracing::warn!(
                        action = %a,
                        "the embedded broker refused a rule's action: {why}; skipped"
                    ),
                }
            }
        }
        Ok(())
    }
}

enum Taken {
    /// Try again later.
    Retry(anyhow::Error),
    /// Will never work (the client is not connected): skip it.
    Refused(String),
}

fn id(scx: &ServerContext, client: &str) -> Id {
    Id::new(scx.node.id(), 0, None, None, ByteString::from(client), None)
}

/// The session entry of connected client `client`, under the session's own id: rmqtt's
/// router keys a subscription by the whole id (addresses, creation time), so one made
/// or removed under an id built from the client id alone would not be the client's
/// (an unsubscribe would leave the route, a client's own UNSUBSCRIBE would miss ours).
async fn session_entry(
    scx: &ServerContext,
    client: &str,
) -> Result<Box<dyn rmqtt::shared::Entry>, Taken> {
    let shared = scx.extends.shared().await;
    let session = shared
        .entry(id(scx, client))
        .session()
        .ok_or_else(|| Taken::Refused(format!("client {client:?} has no session")))?;
    Ok(shared.entry(session.id.clone()))
}

fn message(p: &Publish) -> rmqtt::types::Publish {
    let codec = rmqtt::codec::types::Publish {
        dup: false,
        retain: p.retain,
        qos: if p.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        topic: ByteString::from(p.topic.as_str()),
        packet_id: None,
        payload: bytes::Bytes::from(p.payload.clone()),
        // User properties reach MQTT 5 subscribers, and the broker's events about the
        // message (a `wasmrule-msgid` one names its `msgid`).
        properties: (!p.properties.is_empty()).then(|| rmqtt::codec::v5::PublishProperties {
            user_properties: p
                .properties
                .iter()
                .map(|(k, v)| (ByteString::from(k.as_str()), ByteString::from(v.as_str())))
                .collect(),
            ..Default::default()
        }),
    };
    let mut m = rmqtt::types::Publish::from(codec);
    m.create_time = Some(chrono_ms());
    m
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn take(scx: &ServerContext, a: &MqttAction) -> Result<(), Taken> {
    let from = MsgFrom::from_custom(id(scx, ACTIONS_CLIENT));
    match a {
        MqttAction::Publish(p) => SessionState::forwards(scx, from, message(p), false, None)
            .await
            .map_err(|e| Taken::Retry(anyhow!("{e}"))),
        MqttAction::Deliver { client, message: p } => {
            let entry = session_entry(scx, client).await?;
            entry
                .publish(from, message(p))
                .await
                .map_err(|(_, _, reason)| Taken::Refused(format!("{reason:?}")))
        }
        MqttAction::Subscribe {
            client,
            filter,
            qos,
        } => {
            let qos = if *qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            let sub = Subscribe::from_v3(&ByteString::from(filter.as_str()), qos, false, false)
                .map_err(|e| Taken::Refused(format!("filter {filter:?}: {e}")))?;
            let entry = session_entry(scx, client).await?;
            entry
                .subscribe(&sub)
                .await
                .map(|_| ())
                .map_err(|e| Taken::Refused(format!("client {client:?}: {e}")))
        }
        MqttAction::Unsubscribe { client, filter } => {
            let unsub = Unsubscribe::from(&ByteString::from(filter.as_str()), false, false)
                .map_err(|e| Taken::Refused(format!("filter {filter:?}: {e}")))?;
            let entry = session_entry(scx, client).await?;
            entry
                .unsubscribe(&unsub)
                .await
                .map(|_| ())
                .map_err(|e| Taken::Refused(format!("client {client:?}: {e}")))
        }
    }
}
