//! What a rule of ABI v2 returns: [`Action`]s, each a Redis command, an MQTT publish,
//! or (with the embedded broker) a subscription change or a delivery to one client.
//! The builders are [`publish`], [`subscribe`], [`unsubscribe`] and [`deliver`]; a
//! [`Command`] becomes an action with [`Action::redis`] or `.into()`.
//!
//! Actions are displayed as `wasmrule eval` prints them (docs/writing-rules.md): a Redis
//! command in `redis-cli` syntax, an MQTT action as `MQTT PUBLISH alerts/d1 qos=1
//! retain=0 payload={"x":1}`.
//!
//! # Examples
//!
//! ```
//! use wasmrule_guest::{Action, action, cmd};
//! let actions: Vec<Action> = vec![
//!     cmd::set("last:d1", "22").into(),
//!     action::publish("alerts/d1", r#"{"x":1}"#).qos(1).property("source", "rule").into(),
//! ];
//! assert_eq!(actions[0].to_string(), "SET last:d1 22");
//! assert_eq!(
//!     actions[1].to_string(),
//!     r#"MQTT PUBLISH alerts/d1 qos=1 retain=0 prop:source=rule payload={"x":1}"#
//! );
//! ```

use std::fmt;

use crate::Command;
use crate::command::write_quoted;

/// One thing a rule asks the host to do. The host checks every action of an invocation
/// against the tenant's policy before taking any, then writes the Redis commands in
/// order, then takes the MQTT actions in order.
#[derive(Clone, PartialEq, Eq)]
pub enum Action {
    /// A Redis command, as a v1 rule returns it.
    Redis(Command),
    /// An MQTT publish through the broker.
    Publish(Publish),
    /// Subscribe a client's session to a filter (embedded broker only).
    Subscribe {
        client: String,
        filter: String,
        qos: u8,
    },
    /// Unsubscribe a client's session from a filter (embedded broker only).
    Unsubscribe { client: String, filter: String },
    /// Deliver a message to one client's session only (embedded broker only).
    Deliver(Deliver),
}

impl Action {
    /// A Redis command as an action.
    pub fn redis(command: Command) -> Action {
        Action::Redis(command)
    }
}

impl From<Command> for Action {
    fn from(c: Command) -> Self {
        Action::Redis(c)
    }
}

impl From<Publish> for Action {
    fn from(p: Publish) -> Self {
        Action::Publish(p)
    }
}

impl From<Deliver> for Action {
    fn from(d: Deliver) -> Self {
        Action::Deliver(d)
    }
}

/// An MQTT publish: [`publish`] and its builder methods. QoS 0 and not retained unless
/// set; the host refuses QoS 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 user properties, in order.
    pub properties: Vec<(String, String)>,
}

/// A publish of `payload` on `topic` (no wildcards, not a `$` topic; within the
/// tenant's `topics`).
///
/// # Examples
///
/// ```
/// let p = wasmrule_guest::action::publish("alerts/d1", "hot").qos(1).retain(true);
/// assert_eq!((p.qos, p.retain), (1, true));
/// ```
pub fn publish(topic: impl Into<String>, payload: impl AsRef<[u8]>) -> Publish {
    Publish {
        topic: topic.into(),
        payload: payload.as_ref().to_vec(),
        qos: 0,
        retain: false,
        properties: Vec::new(),
    }
}

impl Publish {
    /// The QoS, 0 or 1.
    pub fn qos(mut self, qos: u8) -> Self {
        self.qos = qos;
        self
    }

    /// Whether the broker retains the message.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// Adds an MQTT 5 user property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }
}

/// A message for one client's session: [`deliver`] and its builder methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    pub client: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 user properties, in order (a host from before they existed refuses a
    /// delivery that has any).
    pub properties: Vec<(String, String)>,
}

/// Delivers `payload` on `topic` to the session of `client` only (embedded broker;
/// the client must be one the tenant may address).
pub fn deliver(
    client: impl Into<String>,
    topic: impl Into<String>,
    payload: impl AsRef<[u8]>,
) -> Deliver {
    Deliver {
        client: client.into(),
        topic: topic.into(),
        payload: payload.as_ref().to_vec(),
        qos: 0,
        retain: false,
        properties: Vec::new(),
    }
}

impl Deliver {
    /// Adds an MQTT 5 user property (the client sees it over MQTT 5; the broker's
    /// events about the message see it either way).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// The QoS, 0 or 1.
    pub fn qos(mut self, qos: u8) -> Self {
        self.qos = qos;
        self
    }

    /// The retain flag the client sees.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }
}

/// Subscribes the session of `client` to `filter` (embedded broker).
pub fn subscribe(client: impl Into<String>, filter: impl Into<String>, qos: u8) -> Action {
    Action::Subscribe {
        client: client.into(),
        filter: filter.into(),
        qos,
    }
}

/// Unsubscribes the session of `client` from `filter` (embedded broker).
pub fn unsubscribe(client: impl Into<String>, filter: impl Into<String>) -> Action {
    Action::Unsubscribe {
        client: client.into(),
        filter: filter.into(),
    }
}

/// The printed form `wasmrule eval` uses (docs/writing-rules.md, "Actions").
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Redis(c) => write!(f, "{c}"),
            Action::Publish(p) => {
                f.write_str("MQTT PUBLISH ")?;
                write_quoted(f, p.topic.as_bytes())?;
                write!(f, " qos={} retain={}", p.qos, u8::from(p.retain))?;
                for (k, v) in &p.properties {
                    f.write_str(" prop:")?;
                    write_quoted(f, k.as_bytes())?;
                    f.write_str("=")?;
                    write_quoted(f, v.as_bytes())?;
                }
                write_payload(f, &p.payload)
            }
            Action::Subscribe {
                client,
                filter,
                qos,
            } => {
                f.write_str("MQTT SUBSCRIBE ")?;
                write_quoted(f, client.as_bytes())?;
                f.write_str(" ")?;
                write_quoted(f, filter.as_bytes())?;
                write!(f, " qos={qos}")
            }
            Action::Unsubscribe { client, filter } => {
                f.write_str("MQTT UNSUBSCRIBE ")?;
                write_quoted(f, client.as_bytes())?;
                f.write_str(" ")?;
                write_quoted(f, filter.as_bytes())
            }
            Action::Deliver(d) => {
                f.write_str("MQTT DELIVER ")?;
                write_quoted(f, d.client.as_bytes())?;
                f.write_str(" ")?;
                write_quoted(f, d.topic.as_bytes())?;
                write!(f, " qos={} retain={}", d.qos, u8::from(d.retain))?;
                for (k, v) in &d.properties {
                    f.write_str(" prop:")?;
                    write_quoted(f, k.as_bytes())?;
                    f.write_str("=")?;
                    write_quoted(f, v.as_bytes())?;
                }
                write_payload(f, &d.payload)
            }
        }
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Action({self})")
    }
}

/// ` payload=` and the payload: as it is when it is printable UTF-8 (spaces allowed: it
/// is the last word) not starting with `"`, otherwise quoted as a `redis-cli` argument.
fn write_payload(f: &mut fmt::Formatter<'_>, payload: &[u8]) -> fmt::Result {
    f.write_str(" payload=")?;
    match std::str::from_utf8(payload) {
        Ok(s) if !s.is_empty() && !s.starts_with('"') && !s.chars().any(char::is_control) => {
            f.write_str(s)
        }
        _ => {
            // An empty payload is `""`; write_quoted quotes it.
            write_quoted(f, payload)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;

    #[test]
    fn printed_forms() {
        let cases: Vec<(Action, &str)> = vec![
            (cmd::set("k", "v").into(), "SET k v"),
            (
                publish("a/b", "x y").into(),
                "MQTT PUBLISH a/b qos=0 retain=0 payload=x y",
            ),
            (
                publish("a b", [0xff, 0x00]).into(),
                r#"MQTT PUBLISH "a b" qos=0 retain=0 payload="\xff\x00""#,
            ),
            (
                publish("a", "\"q\"").into(),
                r#"MQTT PUBLISH a qos=0 retain=0 payload="\"q\"""#,
            ),
            (
                publish("a", "").into(),
                r#"MQTT PUBLISH a qos=0 retain=0 payload="""#,
            ),
            (subscribe("c1", "x/#", 1), "MQTT SUBSCRIBE c1 x/# qos=1"),
            (unsubscribe("c1", "x/#"), "MQTT UNSUBSCRIBE c1 x/#"),
            (
                deliver("c1", "x/1", "hi").qos(1).retain(true).into(),
                "MQTT DELIVER c1 x/1 qos=1 retain=1 payload=hi",
            ),
        ];
        for (a, want) in cases {
            assert_eq!(a.to_string(), want);
        }
    }
}
