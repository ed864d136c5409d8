//! `threshold-alert` as a component of the WIT world `wasmrule:rule@2.0.0`
//! (`guest-sdk/wit-v2/rule.wit`), written with the `wit-bindgen` guest crate: the same
//! behaviour as the core-module rule in `rules-wasm/threshold-alert` (see its lib.rs
//! for the definition). It reads through the imported `redis` interface and returns
//! actions.
//!
//! The logic takes its read as a function, so that the unit tests run it natively
//! against `wasmrule-redis-model` (the imports exist only in the component).

wit_bindgen::generate!({
    path: "../../../guest-sdk/wit-v2",
    world: "rule",
});

use exports::wasmrule::rule::handler::{Action, Event, Guest, Message, RuleManifest};
use wasmrule::rule::redis::{Node, ReadError};

// Only exported on wasm32 (below), so unused natively, where the unit tests run.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Rule;

impl Guest for Rule {
    fn manifest() -> RuleManifest {
        RuleManifest {
            name: "threshold-alert".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            filters: vec!["readings/+".into()],
        }
    }

    fn on_event(event: Event) -> Result<Vec<Action>, String> {
        threshold_alert(&event, |key| {
            wasmrule::rule::redis::read(&[b"GET".to_vec(), key])
        })
    }
}

#[cfg(target_arch = "wasm32")]
export!(Rule);

/// A reading in millionths: `21.5` is `21_500_000`.
fn parse_reading(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || int.len() > 9 || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    if digits.contains('.') && (!all_digits(frac) || frac.len() > 6) {
        return None;
    }
    let mut value: i64 = int.parse().ok()?;
    for i in 0..6 {
        value = value * 10 + frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
    }
    Some(if neg { -value } else { value })
}

/// The code's name in docs/abi.md.
fn read_error_name(e: ReadError) -> &'static str {
    match e {
        ReadError::NotAllowed => "not_allowed",
        ReadError::BadRequest => "bad_request",
        ReadError::OverBudget => "over_budget",
        ReadError::Unavailable => "unavailable",
        ReadError::RedisError => "redis_error",
    }
}

fn valid_device(d: &str) -> bool {
    (1..=64).contains(&d.len())
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The rule, with `get(key)` for `GET key`.
pub fn threshold_alert(
    event: &Event,
    get: impl FnOnce(Vec<u8>) -> Result<Vec<Node>, ReadError>,
) -> Result<Vec<Action>, String> {
    let device = event.topic.rsplit('/').next().unwrap_or_default();
    if !valid_device(device) {
        return Err("the device (last topic level) is not 1 to 64 of A-Z a-z 0-9 - _ .".into());
    }
    if event.json.contains(r#""payload_encoding":"base64""#) {
        return Err("payload is binary (base64), not a reading".into());
    }
    let current_text = &event.payload;
    let current = parse_reading(current_text)
        .ok_or("payload is not a reading: a decimal of at most 9.6 digits")?;
    let key = format!("last:{device}");
    let reply = get(key.clone().into_bytes())
        .map_err(|e| format!("redis read failed: {}", read_error_name(e)))?;
    let mut out = vec![Action::Redis(vec![
        b"SET".to_vec(),
        key.into_bytes(),
        current_text.clone(),
    ])];
    if let Some(Node::Bulk(previous_text)) = reply.first()
        && let Some(previous) = parse_reading(previous_text)
        && (current - previous).abs() * 10 > previous.abs()
    {
        let mut payload = format!(r#"{{"device":"{device}","previous":"#).into_bytes();
        payload.extend_from_slice(previous_text);
        payload.extend_from_slice(br#","current":"#);
        payload.extend_from_slice(current_text);
        payload.push(b'}');
        out.push(Action::Publish(Message {
            topic: format!("alerts/{device}"),
            payload,
            qos: 1,
            retain: false,
            properties: Vec::new(),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmrule_redis_model::{Reply, Store};

    fn event(topic: &str, payload: &str) -> Event {
        Event {
            event: "message.publish".into(),
            id: String::new(),
            clientid: None,
            username: None,
            topic: topic.into(),
            qos: 0,
            retain: false,
            payload: payload.as_bytes().to_vec(),
            timestamp: 0,
            node: String::new(),
            json: format!(r#"{{"topic":"{topic}"}}"#),
        }
    }

    /// Preorder nodes of a model reply, as the host sends them.
    fn nodes(r: Reply, out: &mut Vec<Node>) {
        match r {
            Reply::Nil => out.push(Node::Nil),
            Reply::Int(i) => out.push(Node::Integer(i)),
            Reply::Bulk(b) => out.push(Node::Bulk(b)),
            Reply::Array(items) => {
                out.push(Node::Array(items.len() as u32));
                for i in items {
                    nodes(i, out);
                }
            }
        }
    }

    fn run(db: &Store, topic: &str, payload: &str) -> Result<Vec<Action>, String> {
        threshold_alert(&event(topic, payload), |key| {
            let reply = db
                .read(&[b"GET", &key])
                .map_err(|_| ReadError::RedisError)?;
            let mut out = Vec::new();
            nodes(reply, &mut out);
            Ok(out)
        })
    }

    #[test]
    fn alerts_only_past_ten_percent() {
        let mut db = Store::new();
        assert_eq!(run(&db, "readings/d1", "20").unwrap().len(), 1);
        db.set("last:d1", "20");
        assert_eq!(run(&db, "readings/d1", "22").unwrap().len(), 1);
        let out = run(&db, "readings/d1", "22.000001").unwrap();
        let Action::Publish(m) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(m.topic, "alerts/d1");
        assert_eq!(
            String::from_utf8_lossy(&m.payload),
            r#"{"device":"d1","previous":20,"current":22.000001}"#
        );
        db.hset("last:d2", "f", "v");
        assert!(
            run(&db, "readings/d2", "1")
                .unwrap_err()
                .contains("redis_error")
        );
        assert!(run(&db, "readings/d1", "1e3").is_err());
    }
}
