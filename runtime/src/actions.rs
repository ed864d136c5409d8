//! MQTT actions produced by rules under ABI v2 (`docs/abi.md`, "Actions"): publish a
//! message, and with the embedded broker subscribe or unsubscribe a named client or
//! deliver a message to one client's session. Redis commands, the other kind of action,
//! stay in [`Commands`](crate::commands::Commands).
//!
//! This file owns the representation and its rendering; decoding is `engine/abi.rs`,
//! checking `tenancy/policy.rs`, taking them `sink/mqtt/`.

use std::fmt;

use crate::commands::write_cli_arg;

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

/// One line, as `wasmrule eval` prints it, test cases match it and logs show it
/// (docs/writing-rules.md, "Actions"):
///
/// ```text
/// MQTT PUBLISH <topic> qos=<0|1> retain=<0|1> [prop:<key>=<value> ...] payload=<payload>
/// MQTT SUBSCRIBE <client> <filter> qos=<0|1>
/// MQTT UNSUBSCRIBE <client> <filter>
/// MQTT DELIVER <client> <topic> qos=<0|1> retain=<0|1> [prop:<key>=<value> ...] payload=<payload>
/// ```
///
/// Topics, filters, client ids and property keys and values are written as `redis-cli`
/// arguments (quoted with escapes when they hold spaces, quotes or bytes outside
/// printable ASCII). The payload is last and written as it is when it is non-empty
/// printable UTF-8 not starting with `"`, otherwise quoted the same way. The Rust SDK's
/// `Action` displays the same way.
impl fmt::Display for MqttAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = |f: &mut fmt::Formatter<'_>, w: &[u8]| {
            f.write_str(" ")?;
            write_cli_arg(f, w)
        };
        match self {
            MqttAction::Publish(p) => {
                f.write_str("MQTT PUBLISH")?;
                word(f, p.topic.as_bytes())?;
                message(f, p)
            }
            MqttAction::Subscribe {
                client,
                filter,
                qos,
            } => {
                f.write_str("MQTT SUBSCRIBE")?;
                word(f, client.as_bytes())?;
                word(f, filter.as_bytes())?;
                write!(f, " qos={qos}")
            }
            MqttAction::Unsubscribe { client, filter } => {
                f.write_str("MQTT UNSUBSCRIBE")?;
                word(f, client.as_bytes())?;
                word(f, filter.as_bytes())
            }
            MqttAction::Deliver { client, message: m } => {
                f.write_str("MQTT DELIVER")?;
                word(f, client.as_bytes())?;
                word(f, m.topic.as_bytes())?;
                message(f, m)
            }
        }
    }
}

/// ` qos=.. retain=.. [prop:k=v ...] payload=..` of a message.
fn message(f: &mut fmt::Formatter<'_>, p: &Publish) -> fmt::Result {
    write!(f, " qos={} retain={}", p.qos, u8::from(p.retain))?;
    for (k, v) in &p.properties {
        f.write_str(" prop:")?;
        write_cli_arg(f, k.as_bytes())?;
        f.write_str("=")?;
        write_cli_arg(f, v.as_bytes())?;
    }
    f.write_str(" payload=")?;
    match std::str::from_utf8(&p.payload) {
        Ok(t) if !t.is_empty() && !t.starts_with('"') && !t.chars().any(char::is_control) => {
            f.write_str(t)
        }
        _ => write_cli_arg(f, &p.payload),
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
            r#"MQTT PUBLISH alerts/d1 qos=1 retain=0 prop:k=v payload={"t":1}"#
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
            r#"MQTT DELIVER c1 alerts/d1 qos=1 retain=1 payload="\x00\xff""#
        );
    }
}
