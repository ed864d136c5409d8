//! The event model handed to rules (`docs/events.md`): an MQTT message as the source
//! received it ([`Message`]), broker events such as `client.disconnected`
//! ([`BrokerEvent`], carried by a `Message` on the event's `$events/...` topic), and
//! their JSON encoding with EMQX's field names.
//!
//! The JSON is written by hand into a reused buffer: it is built once per message, on
//! the hot path, whatever number of rules then read it.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;

/// MQTT 5 publish properties, as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

/// One MQTT message as received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique id of the message within this process, in receive order.
    pub seq: u64,
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// Publisher's client id, when the source knows it.
    pub clientid: Option<String>,
    /// Publisher's username, when the source knows it.
    pub username: Option<String>,
    /// Milliseconds since the Unix epoch at receipt.
    pub received_at: u64,
    pub properties: Option<Box<PublishProperties>>,
    /// The broker waits for an acknowledgement of this message, which must come after
    /// its writes (`ack.rs`).
    pub tracked: bool,
    /// Set when this is not a message but a broker event; `topic` is then the event
    /// topic rules ask for (`$events/client_disconnected`).
    pub event: Option<Box<BrokerEvent>>,
    /// The message id the source gave it (the embedded broker, so that the events of
    /// its delivery carry the same one); `None`: made from `received_at` and `seq`.
    pub msgid: Option<String>,
}

impl Message {
    /// A message received now, with a fresh sequence number.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, qos: u8, retain: bool) -> Self {
        Message {
            seq: next_seq(),
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            clientid: None,
            username: None,
            received_at: now_ms(),
            properties: None,
            tracked: false,
            event: None,
            msgid: None,
        }
    }

    /// The `msgid` of this message (`message.publish`): [`msgid`] of its receipt,
    /// unless the source named one.
    pub fn msgid(&self) -> String {
        match &self.msgid {
            Some(id) => id.clone(),
            None => msgid(self.received_at, self.seq),
        }
    }

    /// A broker event, to be dispatched on its `$events/...` topic.
    pub fn broker_event(event: BrokerEvent) -> Self {
        let mut m = Message::new(event.kind.topic(), Bytes::new(), 0, false);
        m.event = Some(Box::new(event));
        m
    }
}

/// The next message sequence number of this process (every [`Message`] takes one).
pub fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The MQTT 5 user property that carries a message's `msgid` through the embedded
/// broker to the events of its delivery (`message.delivered`, `message.acked`).
pub const MSGID_PROPERTY: &str = "wasmrule-msgid";

/// A message id: 32 uppercase hex digits, the receipt time in milliseconds (12), the
/// process's message counter (10), then a tag drawn once per process (10). Unique across
/// processes and restarts, and ordered by receipt time as text (within one process, by
/// receipt order), so that stored messages sort in publish order by id.
pub fn msgid(received_at_ms: u64, seq: u64) -> String {
    let mut out = Vec::with_capacity(32);
    put_msgid(&mut out, received_at_ms, seq);
    // Hex digits only.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`msgid`] to `out`, without an allocation of its own.
fn put_msgid(out: &mut Vec<u8>, received_at_ms: u64, seq: u64) {
    static TAG: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let tag = *TAG.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // Mixed so that two processes started in the same nanosecond still differ.
        (nanos ^ (u64::from(std::process::id()) << 24)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    });
    put_hex(out, received_at_ms, 12);
    put_hex(out, seq, 10);
    put_hex(out, tag >> 24, 10);
}

/// Appends the low `digits` hex digits of `v`, uppercase, zero-padded. Hand-written:
/// `write!` with `{:X}` went through `core::fmt` for every event, a visible share of
/// the event encoding's time (docs/performance.md, section 2).
fn put_hex(out: &mut Vec<u8>, v: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xF) as usize]);
    }
}

/// Appends `v` in decimal.
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// The kinds of broker events, under EMQX's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    ClientConnected,
    ClientDisconnected,
    ClientCheckAuthzComplete,
    SessionCreated,
    SessionSubscribed,
    SessionUnsubscribed,
    MessageDelivered,
    MessageAcked,
    MessageDropped,
    DeliveryDropped,
    /// A message on a Redis pub/sub channel (`$redis/channel/...`, docs/abi.md).
    RedisMessage,
    /// An entry of a Redis stream (`$redis/stream/...`).
    RedisStream,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::ClientConnected,
        EventKind::ClientDisconnected,
        EventKind::ClientCheckAuthzComplete,
        EventKind::SessionCreated,
        EventKind::SessionSubscribed,
        EventKind::SessionUnsubscribed,
        EventKind::MessageDelivered,
        EventKind::MessageAcked,
        EventKind::MessageDropped,
        EventKind::DeliveryDropped,
    ];

    /// The `event` field: `client.disconnected`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ClientConnected => "client.connected",
            EventKind::ClientDisconnected => "client.disconnected",
            EventKind::ClientCheckAuthzComplete => "client.check_authz_complete",
            EventKind::SessionCreated => "session.created",
            EventKind::SessionSubscribed => "session.subscribed",
            EventKind::SessionUnsubscribed => "session.unsubscribed",
            EventKind::MessageDelivered => "message.delivered",
            EventKind::MessageAcked => "message.acked",
            EventKind::MessageDropped => "message.dropped",
            EventKind::DeliveryDropped => "delivery.dropped",
            EventKind::RedisMessage => "redis.message",
            EventKind::RedisStream => "redis.stream",
        }
    }

    /// The topic a rule names to receive these events: `$events/client_disconnected`.
    pub fn topic(self) -> &'static str {
        match self {
            EventKind::ClientConnected => "$events/client_connected",
            EventKind::ClientDisconnected => "$events/client_disconnected",
            EventKind::ClientCheckAuthzComplete => "$events/client_check_authz_complete",
            EventKind::SessionCreated => "$events/session_created",
            EventKind::SessionSubscribed => "$events/session_subscribed",
            EventKind::SessionUnsubscribed => "$events/session_unsubscribed",
            EventKind::MessageDelivered => "$events/message_delivered",
            EventKind::MessageAcked => "$events/message_acked",
            EventKind::MessageDropped => "$events/message_dropped",
            EventKind::DeliveryDropped => "$events/delivery_dropped",
            // Each channel and stream has its own topic; these cover them all.
            EventKind::RedisMessage => "$redis/channel/#",
            EventKind::RedisStream => "$redis/stream/#",
        }
    }

    /// The kind whose `event` field is `name` (`client.disconnected`).
    pub fn from_name(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind whose topic is `topic`.
    pub fn from_topic(topic: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.topic() == topic)
    }
}

/// A broker event: its kind and its fields under EMQX's names (`clientid`, `reason`,
/// `topic`, ...), except `event`, `id` and `node`, which the encoder adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEvent {
    pub kind: EventKind,
    /// The fields as the members of a JSON object, without the braces.
    members: String,
}

impl BrokerEvent {
    /// An event of `kind` with `fields`; a `timestamp` field (now) is added when
    /// `fields` has none.
    pub fn new(kind: EventKind, mut fields: serde_json::Map<String, serde_json::Value>) -> Self {
        fields
            .entry("timestamp")
            .or_insert_with(|| serde_json::Value::from(now_ms()));
        for reserved in ["event", "id", "node"] {
            fields.remove(reserved);
        }
        let object = serde_json::Value::Object(fields).to_string();
        BrokerEvent {
            kind,
            members: object[1..object.len() - 1].to_owned(),
        }
    }

    /// The fields as a JSON object.
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(&format!("{{{}}}", self.members)).unwrap_or_default()
    }
}

/// A message's payload under EMQX's field names: `payload` as text when it is UTF-8,
/// else base64, and `payload_encoding` saying which.
pub fn payload_fields(payload: &[u8], fields: &mut serde_json::Map<String, serde_json::Value>) {
    let (text, encoding) = match std::str::from_utf8(payload) {
        Ok(t) => (t.to_owned(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(payload),
            "base64",
        ),
    };
    fields.insert("payload".into(), text.into());
    fields.insert("payload_encoding".into(), encoding.into());
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes events as JSON. One per worker; holds what is the same for every event.
#[derive(Debug, Clone)]
pub struct EventEncoder {
    node: String,
    // High half of every event id: differs between processes and restarts.
    id_base: u64,
}

impl EventEncoder {
    /// An encoder for events from node `node`.
    pub fn new(node: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        EventEncoder {
            node: node.to_owned(),
            id_base: nanos ^ ((std::process::id() as u64) << 48),
        }
    }

    /// The `id` field of `m`'s event.
    pub fn event_id(&self, m: &Message) -> String {
        format!("{:016X}{:016X}", self.id_base, m.seq)
    }

    /// Replaces `out` with the event for `m`: `message.publish`, or the broker event
    /// it carries.
    pub fn publish_event(&self, m: &Message, out: &mut Vec<u8>) {
        out.clear();
        if let Some(e) = &m.event {
            let _ = write!(
                out,
                "{{\"event\":\"{}\",\"id\":\"{:016X}{:016X}\"",
                e.kind.name(),
                self.id_base,
                m.seq
            );
            if !e.members.is_empty() {
                out.push(b',');
                out.extend_from_slice(e.members.as_bytes());
            }
            out.extend_from_slice(b",\"node\":");
            json_str(out, &self.node);
            out.push(b'}');
            return;
        }
        out.extend_from_slice(b"{\"event\":\"message.publish\",\"id\":\"");
        put_hex(out, self.id_base, 16);
        put_hex(out, m.seq, 16);
        out.extend_from_slice(b"\",\"msgid\":");
        match &m.msgid {
            Some(id) => json_str(out, id),
            None => {
                out.push(b'"');
                put_msgid(out, m.received_at, m.seq);
                out.push(b'"');
            }
        }
        if let Some(c) = &m.clientid {
            out.extend_from_slice(b",\"clientid\":");
            json_str(out, c);
        }
        if let Some(u) = &m.username {
            out.extend_from_slice(b",\"username\":");
            json_str(out, u);
        }
        out.extend_from_slice(b",\"topic\":");
        json_str(out, &m.topic);
        out.extend_from_slice(b",\"qos\":");
        put_u64(out, m.qos.into());
        out.extend_from_slice(if m.retain {
            b",\"retain\":true"
        } else {
            b",\"retain\":false"
        });
        out.extend_from_slice(b",\"payload\":");
        match std::str::from_utf8(&m.payload) {
            Ok(text) => {
                json_str(out, text);
                out.extend_from_slice(b",\"payload_encoding\":\"utf8\"");
            }
            Err(_) => {
                out.push(b'"');
                let mut s = String::new();
                base64::engine::general_purpose::STANDARD.encode_string(&m.payload, &mut s);
                out.extend_from_slice(s.as_bytes());
                out.extend_from_slice(b"\",\"payload_encoding\":\"base64\"");
            }
        }
        out.extend_from_slice(b",\"timestamp\":");
        put_u64(out, m.received_at);
        out.extend_from_slice(b",\"publish_received_at\":");
        put_u64(out, m.received_at);
        out.extend_from_slice(b",\"node\":");
        json_str(out, &self.node);
        if let Some(p) = &m.properties {
            out.extend_from_slice(b",\"pub_props\":");
            let _ = serde_json::to_writer(&mut *out, &pub_props(p));
        }
        out.push(b'}');
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// MQTT 5 properties under EMQX's names (`pub_props` in EMQX rule events).
fn pub_props(p: &PublishProperties) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut m = Map::new();
    if let Some(v) = p.payload_format_indicator {
        m.insert("Payload-Format-Indicator".into(), json!(v));
    }
    if let Some(v) = p.message_expiry_interval {
        m.insert("Message-Expiry-Interval".into(), json!(v));
    }
    if let Some(v) = &p.content_type {
        m.insert("Content-Type".into(), json!(v));
    }
    if let Some(v) = &p.response_topic {
        m.insert("Response-Topic".into(), json!(v));
    }
    if let Some(v) = &p.correlation_data {
        let text = match std::str::from_utf8(v) {
            Ok(s) => s.to_owned(),
            Err(_) => base64::engine::general_purpose::STANDARD.encode(v),
        };
        m.insert("Correlation-Data".into(), json!(text));
    }
    if !p.user_properties.is_empty() {
        // Later duplicates win in the object; the pairs keep every one, in order.
        let obj: Map<String, Value> = p
            .user_properties
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let pairs: Vec<Value> = p
            .user_properties
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        m.insert("User-Property".into(), Value::Object(obj));
        m.insert("User-Property-Pairs".into(), Value::Array(pairs));
    }
    Value::Object(m)
}

/// Completes a partial event for offline use (`wasmrule eval`): every documented field
/// a rule may read gets a value, so `{"topic":..,"payload":..}` is enough. A broker
/// event (`"event": "client.disconnected"`, ...) gets only `id` and `node`, as served:
/// its other fields are the event's own.
///
/// # Errors
///
/// When `input` is not a JSON object, `event` is not a kind wasmrule produces, or
/// `payload` is neither a string nor JSON (a JSON payload given as an object is
/// accepted and turned into its text).
pub fn complete_event(input: &[u8], node: &str) -> anyhow::Result<Vec<u8>> {
    use serde_json::{Value, json};
    let mut v: Value =
        serde_json::from_slice(input).map_err(|e| anyhow::anyhow!("event is not JSON: {e}"))?;
    let Some(obj) = v.as_object_mut() else {
        anyhow::bail!("event must be a JSON object, like {{\"topic\":\"a/b\",\"payload\":\"..\"}}");
    };
    let now = now_ms();
    obj.entry("event").or_insert(json!("message.publish"));
    obj.entry("id")
        .or_insert_with(|| json!(format!("{:032X}", now as u128)));
    if event_kind(obj.get("event"))?.is_some() {
        obj.entry("node").or_insert(json!(node));
        return Ok(serde_json::to_vec(&v)?);
    }
    obj.entry("topic").or_insert(json!(""));
    obj.entry("qos").or_insert(json!(0));
    obj.entry("retain").or_insert(json!(false));
    match obj.get("payload") {
        None | Some(Value::Null) => {
            obj.insert("payload".into(), json!(""));
        }
        Some(Value::String(_)) => {}
        // `"payload": {"temp": 21.5}` is what people type; rules see the text.
        Some(other) => {
            let text = other.to_string();
            obj.insert("payload".into(), json!(text));
        }
    }
    obj.entry("payload_encoding").or_insert(json!("utf8"));
    obj.entry("timestamp").or_insert(json!(now));
    let ts = obj["timestamp"].clone();
    let at = ts.as_u64().unwrap_or(now);
    obj.entry("publish_received_at").or_insert(ts);
    obj.entry("msgid")
        .or_insert_with(|| json!(msgid(at, next_seq())));
    obj.entry("node").or_insert(json!(node));
    Ok(serde_json::to_vec(&v)?)
}

/// The broker event kind of an event's `event` field; `None` for `message.publish`.
fn event_kind(field: Option<&serde_json::Value>) -> anyhow::Result<Option<EventKind>> {
    let name = field.and_then(|f| f.as_str()).unwrap_or_default();
    if name == "message.publish" {
        return Ok(None);
    }
    EventKind::from_name(name).map(Some).ok_or_else(|| {
        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
        anyhow::anyhow!(
            "`event` {name:?} is not an event wasmrule produces (message.publish, {})",
            known.join(", ")
        )
    })
}

/// The topic a running wasmrule matches rules' filters against for the complete event
/// `event`: the `topic` of a `message.publish`, `$events/<kind>` of a broker event
/// (`$events/client_disconnected`), as `Message::broker_event` sets it.
///
/// # Errors
///
/// When `event` is not a JSON object of a known kind (see [`complete_event`]).
pub fn routing_topic(event: &[u8]) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_slice(event)?;
    Ok(match event_kind(v.get("event"))? {
        Some(kind) => kind.topic().to_owned(),
        None => v["topic"].as_str().unwrap_or_default().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_sort_by_receipt_and_are_in_the_event() {
        let ids: Vec<String> = [
            (1_700_000_000_000, 9),
            (1_700_000_000_000, 10),
            (1_700_000_000_001, 3),
        ]
        .iter()
        .map(|&(at, seq)| msgid(at, seq))
        .collect();
        assert!(
            ids.iter()
                .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "text order is receipt order");
        assert_eq!(&ids[0][22..], &ids[2][22..], "one tag per process");
        let mut m = Message::new("t", "p", 0, false);
        let mut out = Vec::new();
        EventEncoder::new("n").publish_event(&m, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["msgid"], m.msgid().as_str());
        m.msgid = Some("0".repeat(32));
        EventEncoder::new("n").publish_event(&m, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["msgid"], "0".repeat(32));
    }
    use serde_json::Value;

    fn encode(m: &Message) -> Value {
        let mut out = Vec::new();
        EventEncoder::new("wasmrule@test").publish_event(m, &mut out);
        serde_json::from_slice(&out).expect("event JSON parses")
    }

    #[test]
    fn offline_broker_events_route_to_their_event_topic() {
        let e =
            complete_event(br#"{"event":"client.disconnected","reason":"normal"}"#, "n").unwrap();
        let v: Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["reason"], "normal");
        assert_eq!(v["node"], "n");
        assert!(
            v.get("topic").is_none() && v.get("payload").is_none(),
            "{v}"
        );
        assert_eq!(routing_topic(&e).unwrap(), "$events/client_disconnected");
        let m = complete_event(br#"{"topic":"a/b"}"#, "n").unwrap();
        assert_eq!(routing_topic(&m).unwrap(), "a/b");
        let e = complete_event(br#"{"event":"client.gone"}"#, "n").unwrap_err();
        assert!(
            e.to_string().contains("not an event wasmrule produces"),
            "{e}"
        );
    }

    #[test]
    fn publish_event_has_emqx_fields() {
        let mut m = Message::new("store-last-message/dev-1", &b"{\"temp\":21.5}"[..], 1, true);
        m.clientid = Some("dev-1".into());
        let v = encode(&m);
        assert_eq!(v["event"], "message.publish");
        assert_eq!(v["id"].as_str().unwrap().len(), 32);
        assert_eq!(v["clientid"], "dev-1");
        assert!(v.get("username").is_none());
        assert_eq!(v["topic"], "store-last-message/dev-1");
        assert_eq!(v["qos"], 1);
        assert_eq!(v["retain"], true);
        assert_eq!(v["payload"], "{\"temp\":21.5}");
        assert_eq!(v["payload_encoding"], "utf8");
        assert_eq!(v["timestamp"], v["publish_received_at"]);
        assert_eq!(v["node"], "wasmrule@test");
        assert!(v.get("pub_props").is_none());
    }

    #[test]
    fn binary_payload_is_base64() {
        let v = encode(&Message::new("t", &b"\xff\x00"[..], 0, false));
        assert_eq!(v["payload"], "/wA=");
        assert_eq!(v["payload_encoding"], "base64");
    }

    #[test]
    fn strings_are_escaped() {
        let v = encode(&Message::new(
            "a/\"b\"\n",
            &b"line\nbreak\"\\"[..],
            0,
            false,
        ));
        assert_eq!(v["topic"], "a/\"b\"\n");
        assert_eq!(v["payload"], "line\nbreak\"\\");
    }

    #[test]
    fn hand_written_numbers_match_format() {
        for v in [0, 1, 0xAB, 0x1234_5678_9ABC_DEF0, u64::MAX] {
            let mut out = Vec::new();
            put_hex(&mut out, v, 16);
            assert_eq!(out, format!("{v:016X}").as_bytes());
            out.clear();
            put_hex(&mut out, v, 10);
            assert_eq!(out, format!("{:010X}", v & 0xFF_FFFF_FFFF).as_bytes());
            out.clear();
            put_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        let m = Message::new("t", "", 2, false);
        let encoder = EventEncoder::new("n");
        let mut out = Vec::new();
        encoder.publish_event(&m, &mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], encoder.event_id(&m).as_str());
        assert_eq!(v["qos"], 2);
        assert_eq!(v["retain"], false);
        assert_eq!(v["timestamp"], m.received_at);
    }

    #[test]
    fn ids_are_unique_and_ordered() {
        let a = encode(&Message::new("t", "", 0, false));
        let b = encode(&Message::new("t", "", 0, false));
        assert!(a["id"].as_str() < b["id"].as_str());
    }

    #[test]
    fn mqtt5_properties_use_emqx_names() {
        let mut m = Message::new("t", "x", 1, false);
        m.properties = Some(Box::new(PublishProperties {
            content_type: Some("application/json".into()),
            message_expiry_interval: Some(60),
            correlation_data: Some(Bytes::from_static(b"\xff")),
            user_properties: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
            ..Default::default()
        }));
        let p = &encode(&m)["pub_props"];
        assert_eq!(p["Content-Type"], "application/json");
        assert_eq!(p["Message-Expiry-Interval"], 60);
        assert_eq!(p["Correlation-Data"], "/w==");
        assert_eq!(p["User-Property"]["k"], "2");
        assert_eq!(p["User-Property-Pairs"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn broker_events_carry_their_fields() {
        let mut f = serde_json::Map::new();
        f.insert("clientid".into(), "c1".into());
        f.insert("reason".into(), "keepalive_timeout".into());
        f.insert("node".into(), "ignored".into());
        let m = Message::broker_event(BrokerEvent::new(EventKind::ClientDisconnected, f));
        assert_eq!(m.topic, "$events/client_disconnected");
        let v = encode(&m);
        assert_eq!(v["event"], "client.disconnected");
        assert_eq!(v["id"].as_str().unwrap().len(), 32);
        assert_eq!(v["clientid"], "c1");
        assert_eq!(v["reason"], "keepalive_timeout");
        assert_eq!(v["node"], "wasmrule@test");
        assert!(v["timestamp"].as_u64().unwrap() > 0);
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_topic(k.topic()), Some(k));
            assert!(k.name().contains('.'));
        }
    }

    #[test]
    fn partial_events_are_completed() {
        let v: Value = serde_json::from_slice(
            &complete_event(br#"{"topic":"a/b","payload":{"temp":1}}"#, "n").unwrap(),
        )
        .unwrap();
        assert_eq!(v["event"], "message.publish");
        assert_eq!(v["payload"], "{\"temp\":1}");
        assert_eq!(v["qos"], 0);
        assert_eq!(v["node"], "n");
        assert!(complete_event(b"[1]", "n").is_err());
        assert!(complete_event(b"{", "n").is_err());
    }
}
