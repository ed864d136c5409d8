//! MQTT actions produced by rules under ABI v2 (`docs/abi.md`, "Actions"): publish a
//! message, and with the embedded broker subscribe or unsubscribe a named client or
//! deliver a message to one client's session. Redis commands, the other kind of action,
//! stay in [`Commands`](crate::commands::Commands).
//!
//! This file owns the representation and its rendering; decoding is `engine/abi.rs`,
//! checking `tenancy/policy.rs`, taking them `sink/mqtt/`.

use std::fmt;

/// One MQTT action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttAction {
    /// Publish to the broker, as any client would.
    Publish(Publish),
    /// Subscribe client `client` to `filter` (embedded broker only).
    Subscribe {
        client: String,
        filter: String,
        qos: u8,
    },
    /// Remove `client`'s subscription to `filter` (embedded broker only).
    Unsubscribe { client: String, filter: String },
    /// Deliver a message to `client`'s session only (embedded broker only).
    Deliver { client: String, message: Publish },
}

/// A message to publish or deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0 or 1.
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 user properties (dropped on MQTT 3.1.1 connections).
    pub properties: Vec<(String, String)>,
}

impl MqttAction {
    /// A short name for logs and counting.
    pub fn kind(&self) -> &'static str {
        match self {
            MqttAction::Publish(_) => "publish",
            MqttAction::Subscribe { .. } => "subscribe",
            MqttAction::Unsubscribe { .. } => "unsubscribe",
            MqttAction::Deliver { .. } => "deliver",
        }
    }

    /// Whether only the embedded broker can take this action.
    pub fn needs_embedded_broker(&self) -> bool {
        !matches!(self, MqttAction::Publish(_))
    }
}

/// `payload` as text when it is printable UTF-8, else as hex, for `eval` and logs.
fn show_payload(f: &mut fmt::Formatter<'_>, payload: &[u8]) -> fmt::Result {
    match std::str::from_utf8(payload) {
        Ok(s) if !s.chars().any(char::is_control) => write!(f, "{s}"),
        _ => {
            write!(f, "0x")?;
            payload.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} qos={}", self.topic, self.qos)?;
        if self.retain {
            write!(f, " retain")?;
        }
        for (k, v) in &self.properties {
            write!(f, " {k}={v}")?;
        }
        write!(f, " ")?;
        show_payload(f, &self.payload)
    }
}

/// One line, as `wasmrule eval` prints it: `MQTT PUBLISH alerts/d1 qos=1 {...}`.
impl fmt::Display for MqttAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MqttAction::Publish(p) => write!(f, "MQTT PUBLISH {p}"),
            MqttAction::Subscribe {
                client,
                filter,
                qos,
            } => write!(f, "MQTT SUBSCRIBE {client} {filter} qos={qos}"),
            MqttAction::Unsubscribe { client, filter } => {
                write!(f, "MQTT UNSUBSCRIBE {client} {filter}")
            }
            MqttAction::Deliver { client, message } => {
                write!(f, "MQTT DELIVER {client} {message}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_print_on_one_line() {
        let p = Publish {
            topic: "alerts/d1".into(),
            payload: br#"{"t":1}"#.to_vec(),
            qos: 1,
            retain: false,
            properties: vec![("k".into(), "v".into())],
        };
        assert_eq!(
            MqttAction::Publish(p.clone()).to_string(),
            r#"MQTT PUBLISH alerts/d1 qos=1 k=v {"t":1}"#
        );
        let bin = Publish {
            payload: vec![0, 0xff],
            retain: true,
            properties: vec![],
            ..p
        };
        assert_eq!(
            MqttAction::Deliver {
                client: "c1".into(),
                message: bin
            }
            .to_string(),
            "MQTT DELIVER c1 alerts/d1 qos=1 retain 0x00ff"
        );
    }
}
