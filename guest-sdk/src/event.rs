//! The event a rule receives, parsed from the host's JSON (`docs/events.md`).
//!
//! Field names are EMQX's, so `${clientid}`, `${topic}` and `${payload.temp}` in an EMQX
//! template become `event.clientid()`, `event.topic()` and `event.payload_json()`.
//! Strings borrow from the input where they can. Fields this SDK has no accessor for are
//! still reachable with [`Event::get`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::RuleError;

/// How the `payload` field is encoded in the event JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    /// The payload was valid UTF-8 and is given as text.
    #[default]
    Utf8,
    /// The payload was not UTF-8 and is given in standard base64.
    Base64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    clientid: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    topic: Cow<'a, str>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(borrow, default)]
    payload: Cow<'a, str>,
    #[serde(default)]
    payload_encoding: PayloadEncoding,
    #[serde(default)]
    timestamp: u64,
    #[serde(borrow, default)]
    node: Cow<'a, str>,
}

/// One event: an MQTT message (`message.publish`) or, where the source provides them,
/// a client or session event.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    raw: Cow<'a, [u8]>,
    fields: Fields<'a>,
}

impl<'a> Event<'a> {
    /// Parses the event JSON the host passes to the rule.
    ///
    /// # Errors
    ///
    /// When `json` is not a JSON object with fields of the documented types.
    pub fn from_json(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        Ok(Event {
            fields: serde_json::from_slice(json)?,
            raw: Cow::Borrowed(json),
        })
    }

    /// A `message.publish` event for tests, as the host would build it for a QoS 0
    /// message with a UTF-8 payload.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = wasmrule_guest::Event::message("sensors/dev-1", "21.5");
    /// assert_eq!(e.topic(), "sensors/dev-1");
    /// assert_eq!(e.payload_text(), Some("21.5"));
    /// ```
    pub fn message(topic: &str, payload: &str) -> Event<'static> {
        let fields = Fields {
            event: "message.publish".into(),
            id: "0".into(),
            topic: Cow::Owned(topic.to_owned()),
            payload: Cow::Owned(payload.to_owned()),
            node: "test@localhost".into(),
            ..Fields::default()
        };
        let raw = serde_json::to_vec(&fields).unwrap_or_default();
        Event {
            raw: Cow::Owned(raw),
            fields,
        }
    }

    /// The whole event as the host sent it (JSON text), for rules that store or
    /// forward events as they are.
    pub fn as_json(&self) -> &[u8] {
        &self.raw
    }

    /// The event type: `message.publish`, `client.disconnected`, ...
    pub fn event_type(&self) -> &str {
        &self.fields.event
    }

    /// Unique id of the event (hex), stable for one event across all rules it reaches.
    pub fn id(&self) -> &str {
        &self.fields.id
    }

    /// The publishing client's id, when the source knows it (the embedded broker does;
    /// an MQTT subscriber to an external broker does not). Empty counts as unknown.
    pub fn clientid(&self) -> Option<&str> {
        self.fields.clientid.as_deref().filter(|s| !s.is_empty())
    }

    /// The publishing client's username, when known.
    pub fn username(&self) -> Option<&str> {
        self.fields.username.as_deref().filter(|s| !s.is_empty())
    }

    /// The MQTT topic.
    pub fn topic(&self) -> &str {
        &self.fields.topic
    }

    /// The topic's levels: `"a/b/c"` gives `a`, `b`, `c`.
    pub fn topic_levels(&self) -> std::str::Split<'_, char> {
        self.fields.topic.split('/')
    }

    /// Level `i` (from 0) of the topic.
    pub fn topic_level(&self, i: usize) -> Option<&str> {
        self.topic_levels().nth(i)
    }

    /// The last level of the topic, `None` when it is empty (`"a/"`).
    pub fn topic_last_level(&self) -> Option<&str> {
        self.fields
            .topic
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
    }

    /// QoS the message was received with (0, 1 or 2).
    pub fn qos(&self) -> u8 {
        self.fields.qos
    }

    /// Whether the message is a retained message.
    pub fn retain(&self) -> bool {
        self.fields.retain
    }

    /// Receive time in milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> u64 {
        self.fields.timestamp
    }

    /// Name of the wasmrule node that produced the event.
    pub fn node(&self) -> &str {
        &self.fields.node
    }

    /// How the payload is given in the event.
    pub fn payload_encoding(&self) -> PayloadEncoding {
        self.fields.payload_encoding
    }

    /// The payload as text, when it is UTF-8.
    pub fn payload_text(&self) -> Option<&str> {
        match self.fields.payload_encoding {
            PayloadEncoding::Utf8 => Some(&self.fields.payload),
            PayloadEncoding::Base64 => None,
        }
    }

    /// The payload's bytes, whatever its encoding.
    ///
    /// # Errors
    ///
    /// When a base64 payload is not valid base64 (the host never sends that).
    pub fn payload_bytes(&self) -> Result<Cow<'_, [u8]>, RuleError> {
        match self.fields.payload_encoding {
            PayloadEncoding::Utf8 => Ok(Cow::Borrowed(self.fields.payload.as_bytes())),
            PayloadEncoding::Base64 => base64_decode(self.fields.payload.as_bytes())
                .map(Cow::Owned)
                .ok_or_else(|| RuleError::new("payload is not valid base64")),
        }
    }

    /// The payload parsed as JSON into `T` (a struct with the fields you need, or
    /// `serde_json::Value`).
    ///
    /// # Errors
    ///
    /// When the payload is not JSON of that shape; the message names the problem.
    pub fn payload_json<'s, T: Deserialize<'s>>(&'s self) -> Result<T, RuleError> {
        let text = self
            .payload_text()
            .ok_or_else(|| RuleError::new("payload is binary (base64), not JSON text"))?;
        serde_json::from_str(text).map_err(|e| RuleError::new(format!("payload: {e}")))
    }

    /// Any field of the event JSON by name, including those without an accessor here
    /// (`pub_props`, `reason`, `peername`, ...). Parses the event again: do not call it in
    /// a loop.
    pub fn get(&self, name: &str) -> Option<serde_json::Value> {
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&self.raw).ok()?;
        map.remove(name)
    }
}

/// Decodes standard base64 (with or without padding); `None` on invalid input.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let input = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for chunk in input.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"event":"message.publish","id":"ab","clientid":"dev-1",
        "topic":"store-last-message/dev-1","qos":1,"retain":false,
        "payload":"{\"temp\":21.5}","payload_encoding":"utf8","timestamp":5,
        "node":"wasmrule@h","pub_props":{"Content-Type":"json"}}"#;

    #[test]
    fn parses_documented_fields() {
        let e = Event::from_json(EVENT.as_bytes()).unwrap();
        assert_eq!(e.event_type(), "message.publish");
        assert_eq!(e.clientid(), Some("dev-1"));
        assert_eq!(e.username(), None);
        assert_eq!(e.qos(), 1);
        assert_eq!(e.topic_level(1), Some("dev-1"));
        assert_eq!(e.topic_last_level(), Some("dev-1"));
        let v: serde_json::Value = e.payload_json().unwrap();
        assert_eq!(v["temp"], 21.5);
        assert_eq!(e.get("pub_props").unwrap()["Content-Type"], "json");
    }

    #[test]
    fn missing_fields_default() {
        let e = Event::from_json(br#"{"topic":"a/b","payload":"x"}"#).unwrap();
        assert_eq!(e.topic(), "a/b");
        assert_eq!(e.clientid(), None);
        assert_eq!(e.payload_encoding(), PayloadEncoding::Utf8);
    }

    #[test]
    fn base64_payloads_decode() {
        let e = Event::from_json(br#"{"payload":"AP8=","payload_encoding":"base64"}"#).unwrap();
        assert_eq!(e.payload_text(), None);
        assert_eq!(&*e.payload_bytes().unwrap(), &[0u8, 255]);
        assert!(e.payload_json::<serde_json::Value>().is_err());
        assert_eq!(base64_decode(b"aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(base64_decode(b"a"), None);
        assert_eq!(base64_decode(b"a*=="), None);
    }

    #[test]
    fn bad_payload_json_names_the_problem() {
        let e = Event::message("t", "{not json");
        let err = e.payload_json::<serde_json::Value>().unwrap_err();
        assert!(err.message().starts_with("payload: "), "{err}");
    }
}
