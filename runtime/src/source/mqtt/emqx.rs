//! The external-EMQX event adapter (`mqtt.emqx_events`): which EMQX topics carry client
//! events, and how a message on one becomes the broker event rules ask for
//! (`$events/client_disconnected`), with the fields the embedded broker gives
//! (`docs/events.md`).
//!
//! EMQX publishes client events as JSON on system topics:
//! - `$SYS/brokers/<node>/clients/<clientid>/connected` and `.../disconnected` (EMQX 4.x
//!   and 5.x), `.../subscribed` and `.../unsubscribed` (5.x, off by default);
//! - `$event/client_connected`, `$event/client_disconnected`, `$event/client_subscribed`,
//!   `$event/client_unsubscribed`, `$event/message_delivered`, `$event/message_acked`
//!   and `$event/message_dropped` (the `event_message` module of EMQX 5.0 pre-releases).
//!
//! Payload examples are in `examples/emqx-fixtures/`. The mapping renames what EMQX
//! names differently (`ts`, `ipaddress`), normalises what older versions wrote
//! differently (times in seconds, `"undefined"` for no username), and passes every
//! other field through under EMQX's name; `reason` values are EMQX's already.
//!
//! This file decides and converts; the reader (`mod.rs`) dispatches and `follower.rs`
//! subscribes.

use serde_json::{Map, Value};

use crate::event::{BrokerEvent, EventKind, Message, payload_fields};
use crate::topic::minimal_cover;

/// Why a message on an EMQX event topic could not be turned into an event.
#[derive(Debug, thiserror::Error)]
pub enum EmqxError {
    #[error("payload is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("payload is not a JSON object")]
    NotObject,
    #[error("`{0}` is missing or not a string")]
    Field(&'static str),
}

/// EMQX 4.2 and earlier wrote `connected_at` and `disconnected_at` in seconds. A number
/// of milliseconds is above this since March 1973; one of seconds stays below it until
/// the year 5138.
const SECONDS_BELOW: u64 = 100_000_000_000;

/// The topic filters on which EMQX publishes events of `kind`; empty for kinds no EMQX
/// publishes on a topic.
pub fn filters(kind: EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::ClientConnected => &[
            "$SYS/brokers/+/clients/+/connected",
            "$event/client_connected",
        ],
        EventKind::ClientDisconnected => &[
            "$SYS/brokers/+/clients/+/disconnected",
            "$event/client_disconnected",
        ],
        EventKind::SessionSubscribed => &[
            "$SYS/brokers/+/clients/+/subscribed",
            "$event/client_subscribed",
        ],
        EventKind::SessionUnsubscribed => &[
            "$SYS/brokers/+/clients/+/unsubscribed",
            "$event/client_unsubscribed",
        ],
        EventKind::MessageDelivered => &["$event/message_delivered"],
        EventKind::MessageAcked => &["$event/message_acked"],
        EventKind::MessageDropped => &["$event/message_dropped"],
        EventKind::ClientCheckAuthzComplete
        | EventKind::SessionCreated
        | EventKind::DeliveryDropped
        | EventKind::RedisMessage
        | EventKind::RedisStream => &[],
    }
}

/// The MQTT subscriptions that deliver what the rules want: their own `filters`, plus
/// the EMQX topics of the event kinds in `events`, without filters covered by others.
pub fn subscriptions(filters_wanted: &[String], events: &[EventKind]) -> Vec<String> {
    let extra = events.iter().flat_map(|k| filters(*k).iter().copied());
    minimal_cover(filters_wanted.iter().map(String::as_str).chain(extra))
}

/// The event kind `topic` carries, and the client id the topic names (`$SYS` form), when
/// it is an EMQX event topic.
pub fn parse_topic(topic: &str) -> Option<(EventKind, Option<&str>)> {
    if let Some(name) = topic.strip_prefix("$event/") {
        let kind = match name {
            "client_connected" => EventKind::ClientConnected,
            "client_disconnected" => EventKind::ClientDisconnected,
            "client_subscribed" => EventKind::SessionSubscribed,
            "client_unsubscribed" => EventKind::SessionUnsubscribed,
            "message_delivered" => EventKind::MessageDelivered,
            "message_acked" => EventKind::MessageAcked,
            "message_dropped" => EventKind::MessageDropped,
            _ => return None,
        };
        return Some((kind, None));
    }
    // `$SYS/brokers/<node>/clients/<clientid>/<what>`; a client id may hold `/`.
    let rest = topic.strip_prefix("$SYS/brokers/")?;
    let (node, rest) = rest.split_once('/')?;
    let (clientid, what) = rest.strip_prefix("clients/")?.rsplit_once('/')?;
    if node.is_empty() || clientid.is_empty() {
        return None;
    }
    let kind = match what {
        "connected" => EventKind::ClientConnected,
        "disconnected" => EventKind::ClientDisconnected,
        "subscribed" => EventKind::SessionSubscribed,
        "unsubscribed" => EventKind::SessionUnsubscribed,
        _ => return None,
    };
    Some((kind, Some(clientid)))
}

/// The event a message on `topic` carries: `Ok(None)` when `topic` is not an EMQX event
/// topic.
///
/// # Errors
///
/// When the payload is not a JSON object, or lacks a field the event needs (`clientid`,
/// and `topic` for subscription and message events).
pub fn to_event(topic: &str, payload: &[u8]) -> Result<Option<BrokerEvent>, EmqxError> {
    let Some((kind, clientid)) = parse_topic(topic) else {
        return Ok(None);
    };
    let Value::Object(obj) = serde_json::from_slice(payload)? else {
        return Err(EmqxError::NotObject);
    };
    Ok(Some(BrokerEvent::new(kind, fields(kind, obj, clientid)?)))
}

/// The event `m` carries, to hand on instead of `m`, when `m` is on an EMQX event topic
/// and `wanted` says a rule asks for that kind. `None` otherwise: `m` stays a message
/// (a rule subscribed to the raw topic sees it as `message.publish`). The event keeps
/// `m`'s sequence number, receive time and acknowledgement, so it is acknowledged after
/// its writes like any message.
///
/// # Errors
///
/// As [`to_event`], for a malformed payload on a wanted kind's topic.
pub fn adapt(
    m: &Message,
    wanted: impl FnOnce(EventKind) -> bool,
) -> Result<Option<Message>, EmqxError> {
    match parse_topic(&m.topic) {
        Some((kind, _)) if wanted(kind) => {}
        _ => return Ok(None),
    }
    Ok(to_event(&m.topic, &m.payload)?.map(|event| {
        let mut e = Message::broker_event(event);
        e.seq = m.seq;
        e.received_at = m.received_at;
        e.tracked = m.tracked;
        e
    }))
}

/// EMQX's payload fields under the names the embedded broker uses.
fn fields(
    kind: EventKind,
    mut f: Map<String, Value>,
    topic_clientid: Option<&str>,
) -> Result<Map<String, Value>, EmqxError> {
    match f.get("clientid") {
        Some(Value::String(_)) => {}
        None | Some(Value::Null) => {
            let id = topic_clientid.ok_or(EmqxError::Field("clientid"))?;
            f.insert("clientid".into(), id.into());
        }
        Some(_) => return Err(EmqxError::Field("clientid")),
    }
    // EMQX writes a missing username as the Erlang atom `undefined`.
    for k in ["username", "from_username"] {
        if f.get(k).and_then(Value::as_str) == Some("undefined") {
            f.insert(k.into(), Value::Null);
        }
    }
    f.entry("username").or_insert(Value::Null);
    // EMQX's message id is the message's, not the event's: `msgid`, as in EMQX 4's
    // backend templates (`${msgid}`); `id` is the event's own.
    if matches!(
        kind,
        EventKind::MessageDelivered | EventKind::MessageAcked | EventKind::MessageDropped
    ) && let Some(id) = f.remove("id")
    {
        f.entry("msgid").or_insert(id);
    }
    if let Some(ts) = f.remove("ts").filter(Value::is_u64) {
        f.entry("timestamp").or_insert(ts);
    }
    if let Some(ip) = f.remove("ipaddress") {
        f.entry("peerhost").or_insert(ip);
    }
    for k in ["connected_at", "disconnected_at"] {
        if let Some(secs) = f
            .get(k)
            .and_then(Value::as_u64)
            .filter(|t| *t < SECONDS_BELOW)
        {
            f.insert(k.into(), (secs * 1000).into());
        }
    }
    match kind {
        EventKind::SessionSubscribed => {
            require_str(&f, "topic")?;
            if !f.contains_key("qos") {
                let qos = f.get("subopts").and_then(|s| s.get("qos")).cloned();
                if let Some(q) = qos {
                    f.insert("qos".into(), q);
                }
            }
        }
        EventKind::SessionUnsubscribed => require_str(&f, "topic")?,
        EventKind::MessageDelivered | EventKind::MessageAcked | EventKind::MessageDropped => {
            require_str(&f, "topic")?;
            let text = match f.remove("payload") {
                Some(Value::String(s)) => s,
                None | Some(Value::Null) => String::new(),
                Some(other) => other.to_string(),
            };
            payload_fields(text.as_bytes(), &mut f);
        }
        _ => {}
    }
    Ok(f)
}

fn require_str(f: &Map<String, Value>, key: &'static str) -> Result<(), EmqxError> {
    match f.get(key) {
        Some(Value::String(_)) => Ok(()),
        _ => Err(EmqxError::Field(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `(file name, topic, payload bytes)` of every fixture in examples/emqx-fixtures/.
    fn fixtures() -> Vec<(String, String, Vec<u8>)> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/emqx-fixtures");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("examples/emqx-fixtures/") {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let topic = v["topic"].as_str().expect("fixture topic").to_owned();
            out.push((name, topic, serde_json::to_vec(&v["payload"]).unwrap()));
        }
        out.sort();
        out
    }

    fn map(file: &str) -> (EventKind, Map<String, Value>) {
        let (_, topic, payload) = fixtures()
            .into_iter()
            .find(|(n, _, _)| n == file)
            .expect("fixture exists");
        let e = to_event(&topic, &payload)
            .unwrap()
            .expect("an EMQX event topic");
        (e.kind, e.fields())
    }

    /// Fields the embedded broker gives each kind that every EMQX form gives too.
    fn common_fields(kind: EventKind) -> &'static [&'static str] {
        match kind {
            EventKind::ClientConnected => &[
                "clientid",
                "username",
                "peerhost",
                "proto_ver",
                "keepalive",
                "clean_start",
                "connected_at",
                "timestamp",
            ],
            EventKind::ClientDisconnected => &[
                "clientid",
                "username",
                "reason",
                "disconnected_at",
                "timestamp",
            ],
            EventKind::SessionSubscribed => &["clientid", "username", "topic", "qos", "timestamp"],
            EventKind::SessionUnsubscribed => &["clientid", "username", "topic", "timestamp"],
            EventKind::MessageDelivered | EventKind::MessageAcked => &[
                "clientid",
                "username",
                "peerhost",
                "from_clientid",
                "from_username",
                "topic",
                "qos",
                "flags",
                "payload",
                "payload_encoding",
                "publish_received_at",
                "timestamp",
            ],
            EventKind::MessageDropped => &[
                "clientid",
                "username",
                "peerhost",
                "topic",
                "qos",
                "flags",
                "payload",
                "payload_encoding",
                "publish_received_at",
                "reason",
                "timestamp",
            ],
            EventKind::ClientCheckAuthzComplete
            | EventKind::SessionCreated
            | EventKind::DeliveryDropped
            | EventKind::RedisMessage
            | EventKind::RedisStream => &[],
        }
    }

    #[test]
    fn every_fixture_maps_to_an_event_with_the_embedded_brokers_fields() {
        let all = fixtures();
        assert!(all.len() >= 13, "fixtures found: {}", all.len());
        let mut kinds = std::collections::HashSet::new();
        for (file, topic, payload) in &all {
            let e = to_event(topic, payload)
                .unwrap_or_else(|err| panic!("{file}: {err}"))
                .unwrap_or_else(|| panic!("{file}: {topic} is not an EMQX event topic"));
            let f = e.fields();
            for k in common_fields(e.kind) {
                assert!(f.contains_key(*k), "{file}: no `{k}` in {f:?}");
            }
            for gone in ["ts", "ipaddress", "id", "event", "node"] {
                assert!(!f.contains_key(gone), "{file}: `{gone}` left in {f:?}");
            }
            assert!(f["clientid"].is_string(), "{file}");
            assert!(
                f["timestamp"].as_u64().unwrap() > 1_500_000_000_000,
                "{file}"
            );
            for t in ["connected_at", "disconnected_at"] {
                if let Some(v) = f.get(t) {
                    assert!(v.as_u64().unwrap() > 1_500_000_000_000, "{file}: {t} in ms");
                }
            }
            kinds.insert(e.kind);
        }
        // Every kind EMQX publishes has a fixture.
        for k in EventKind::ALL {
            assert_eq!(kinds.contains(&k), !filters(k).is_empty(), "{k:?}");
        }
    }

    #[test]
    fn sys_connected_and_disconnected() {
        let (kind, f) = map("sys-connected.json");
        assert_eq!(kind, EventKind::ClientConnected);
        assert_eq!(f["clientid"], "emqtt-8348fe27a87976ad4db3");
        assert_eq!(f["username"], "foo");
        assert_eq!(f["peerhost"], "127.0.0.1");
        assert_eq!(f["proto_ver"], 4);
        assert_eq!(f["proto_name"], "MQTT");
        assert_eq!(f["keepalive"], 60);
        assert_eq!(f["clean_start"], true);
        assert_eq!(f["connected_at"], 1625572213873u64);
        assert_eq!(f["timestamp"], 1625572213873u64);
        // EMQX's other fields pass through under its names.
        assert_eq!(
            (&f["expiry_interval"], &f["sockport"]),
            (&json!(0), &json!(1883))
        );

        let (kind, f) = map("sys-disconnected.json");
        assert_eq!(kind, EventKind::ClientDisconnected);
        assert_eq!(f["reason"], "tcp_closed");
        assert_eq!(f["disconnected_at"], 1625572213873u64);
        assert_eq!(f["peerhost"], "127.0.0.1");
    }

    #[test]
    fn emqx_4_2_seconds_and_undefined_username() {
        let (_, f) = map("sys-connected-4.2.json");
        assert_eq!(f["username"], Value::Null);
        assert_eq!(f["connected_at"], 1582687922000u64);
        assert_eq!(f["timestamp"], 1582687922392u64);
        assert_eq!(f["proto_ver"], 5);
        let (kind, f) = map("sys-disconnected-4.2.json");
        assert_eq!(kind, EventKind::ClientDisconnected);
        assert_eq!(f["disconnected_at"], 1582688032000u64);
        assert_eq!(f["reason"], "tcp_closed");
        assert!(!f.contains_key("peerhost"), "4.2 names no address");
    }

    #[test]
    fn subscriptions_take_qos_from_the_options() {
        let (kind, f) = map("sys-subscribed.json");
        assert_eq!(kind, EventKind::SessionSubscribed);
        assert_eq!(f["topic"], "/the/best/mqtt/broker/is/emqx");
        assert_eq!(f["qos"], 0);
        assert_eq!(f["subopts"]["is_new"], true);
        assert_eq!(f["timestamp"], 1625572213878u64);
        let (_, f) = map("event-client-subscribed.json");
        assert_eq!((&f["topic"], &f["qos"]), (&json!("sensors/#"), &json!(1)));
        let (kind, f) = map("sys-unsubscribed.json");
        assert_eq!(kind, EventKind::SessionUnsubscribed);
        assert_eq!(f["topic"], "/the/best/mqtt/broker/is/emqx");
        let (kind, _) = map("event-client-unsubscribed.json");
        assert_eq!(kind, EventKind::SessionUnsubscribed);
    }

    #[test]
    fn event_topic_client_events() {
        let (kind, f) = map("event-client-connected.json");
        assert_eq!(kind, EventKind::ClientConnected);
        assert_eq!(
            (&f["peerhost"], &f["proto_ver"]),
            (&json!("127.0.0.1"), &json!(5))
        );
        assert_eq!(f["timestamp"], 1625572213874u64);
        let (kind, f) = map("event-client-disconnected.json");
        assert_eq!(kind, EventKind::ClientDisconnected);
        assert_eq!(f["reason"], "keepalive_timeout");
        assert_eq!(f["disconnected_at"], 1625572219000u64);
    }

    #[test]
    fn message_events_carry_payload_and_both_clients() {
        for (file, kind) in [
            ("event-message-delivered.json", EventKind::MessageDelivered),
            ("event-message-acked.json", EventKind::MessageAcked),
        ] {
            let (k, f) = map(file);
            assert_eq!(k, kind);
            assert_eq!(f["payload"], "{\"temp\":21.5}");
            assert_eq!(f["payload_encoding"], "utf8");
            assert_eq!(f["topic"], "sensors/dev-1");
            assert_eq!(f["qos"], 1);
            assert_eq!(f["flags"]["retain"], false);
            assert_eq!(
                (&f["from_clientid"], &f["from_username"]),
                (&json!("dev-1"), &json!("alice"))
            );
            assert_eq!(f["clientid"], "emqtt-8348fe27a87976ad4db3");
            assert_eq!(f["publish_received_at"], 1625572213880u64);
        }
        let (kind, f) = map("event-message-dropped.json");
        assert_eq!(kind, EventKind::MessageDropped);
        assert_eq!(f["reason"], "no_subscribers");
        assert_eq!(
            (&f["clientid"], &f["topic"]),
            (&json!("dev-1"), &json!("nobody/listens"))
        );
    }

    #[test]
    fn topics() {
        let id = |t| parse_topic(t).map(|(k, c)| (k, c.map(str::to_owned)));
        assert_eq!(
            id("$SYS/brokers/emqx@10.0.0.1/clients/site/dev-1/disconnected"),
            Some((EventKind::ClientDisconnected, Some("site/dev-1".into())))
        );
        assert_eq!(
            id("$event/message_acked"),
            Some((EventKind::MessageAcked, None))
        );
        for not in [
            "$SYS/brokers/n/clients/connected",
            "$SYS/brokers/n/clients//connected",
            "$SYS/brokers/n/stats/connections/count",
            "$SYS/brokers/n/gateway/coap/clients/c/connected",
            "$SYS/broker/clients/connected",
            "$event/session_created",
            "$events/client_connected",
            "sensors/connected",
        ] {
            assert_eq!(parse_topic(not), None, "{not}");
        }
        // Every filter we subscribe to delivers topics that parse back to its kind.
        for k in EventKind::ALL {
            for f in filters(k) {
                assert_eq!(
                    parse_topic(&f.replace('+', "x")).map(|p| p.0),
                    Some(k),
                    "{f}"
                );
            }
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let sys = "$SYS/brokers/n/clients/c1/connected";
        assert!(matches!(
            to_event(sys, b"not json"),
            Err(EmqxError::NotJson(_))
        ));
        assert!(matches!(to_event(sys, b"[1]"), Err(EmqxError::NotObject)));
        assert!(matches!(
            to_event(sys, br#"{"clientid":1}"#),
            Err(EmqxError::Field("clientid"))
        ));
        assert!(matches!(
            to_event("$event/client_connected", b"{}"),
            Err(EmqxError::Field("clientid"))
        ));
        assert!(matches!(
            to_event("$SYS/brokers/n/clients/c1/subscribed", b"{}"),
            Err(EmqxError::Field("topic"))
        ));
        // The $SYS form names the client in the topic.
        let e = to_event(sys, b"{}").unwrap().unwrap();
        assert_eq!(e.fields()["clientid"], "c1");
        assert!(to_event("a/b", b"not json").unwrap().is_none());
    }

    #[test]
    fn adapt_turns_wanted_kinds_into_events() {
        let mut m = Message::new(
            "$SYS/brokers/n/clients/c1/disconnected",
            &br#"{"reason":"normal"}"#[..],
            1,
            false,
        );
        m.tracked = true;
        let e = adapt(&m, |k| k == EventKind::ClientDisconnected)
            .unwrap()
            .expect("an event");
        assert_eq!(e.topic, "$events/client_disconnected");
        assert_eq!(
            (e.seq, e.tracked, e.received_at),
            (m.seq, true, m.received_at)
        );
        assert_eq!(e.event.as_ref().unwrap().fields()["reason"], "normal");
        // Not wanted, or not an EMQX topic: stays a message.
        assert_eq!(adapt(&m, |_| false).unwrap(), None);
        assert_eq!(
            adapt(&Message::new("a/b", "x", 0, false), |_| true).unwrap(),
            None
        );
        let bad = Message::new("$event/client_connected", "{", 1, false);
        assert!(adapt(&bad, |_| true).is_err());
        assert_eq!(adapt(&bad, |_| false).unwrap(), None);
    }

    #[test]
    fn subscriptions_follow_the_wanted_kinds() {
        let rules = vec!["a/#".to_owned()];
        assert_eq!(subscriptions(&rules, &[]), rules);
        assert_eq!(
            subscriptions(
                &rules,
                &[
                    EventKind::ClientDisconnected,
                    EventKind::ClientCheckAuthzComplete
                ]
            ),
            vec![
                "$SYS/brokers/+/clients/+/disconnected",
                "$event/client_disconnected",
                "a/#"
            ]
        );
        assert_eq!(
            subscriptions(&[], &[EventKind::MessageDropped]),
            vec!["$event/message_dropped"]
        );
        // A rule's own `$SYS/#` already delivers the `$SYS` form.
        assert_eq!(
            subscriptions(&["$SYS/#".to_owned()], &[EventKind::ClientConnected]),
            vec!["$SYS/#", "$event/client_connected"]
        );
    }
}
