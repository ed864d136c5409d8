//! `store-last-message` as a component of the WIT world `wasmrule:rule@1.0.0`
//! (`guest-sdk/wit/rule.wit`), written with the `wit-bindgen` guest crate: the same
//! behaviour as the core-module rule in `rules-wasm/store-last-message`, which it
//! mirrors line for line with the same JSON reader (serde_json), so that both accept and
//! refuse the same payloads (`guest-sdk/conformance/store-last-message.json`).
//!
//! The component's event record gives the payload as bytes (base64 already decoded by
//! the host) and the whole event as JSON; whether the payload arrived as base64 is read
//! from that JSON's `payload_encoding`.

use std::borrow::Cow;

use serde_json::value::RawValue;

wit_bindgen::generate!({
    path: "../../../guest-sdk/wit",
    world: "rule",
});

use exports::wasmrule::rule::handler::{Command, Event, Guest, RuleManifest};

// Only exported on wasm32 (below), so unused natively, where the unit tests run.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Rule;

impl Guest for Rule {
    fn manifest() -> RuleManifest {
        RuleManifest {
            name: "store-last-message".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            filters: vec!["store-last-message/+".into()],
        }
    }

    fn on_event(event: Event) -> Result<Vec<Command>, String> {
        store_last_message(&event).map(|c| vec![c])
    }
}

// The export symbols are named after the WIT functions (`wasmrule:rule/handler@1.0.0#
// on-event`), which a native linker's version script cannot spell: export on wasm32 only.
#[cfg(target_arch = "wasm32")]
export!(Rule);

#[derive(serde::Deserialize)]
struct Reading<'a> {
    #[serde(borrow)]
    temp: &'a RawValue,
}

#[derive(serde::Deserialize)]
struct Encoding<'a> {
    #[serde(borrow, default)]
    payload_encoding: Option<Cow<'a, str>>,
}

/// `HSET emqx_messages <client> <temp>`, or why not.
pub fn store_last_message(event: &Event) -> Result<Command, String> {
    let client = event
        .clientid
        .as_deref()
        .filter(|c| !c.is_empty())
        .or_else(|| event.topic.rsplit('/').next().filter(|l| !l.is_empty()))
        .ok_or("no clientid in the event and no last topic level to use instead")?;
    let encoding: Encoding =
        serde_json::from_str(&event.json).map_err(|e| format!("event JSON: {e}"))?;
    if encoding.payload_encoding.as_deref() == Some("base64") {
        return Err("payload is binary (base64), not JSON text".into());
    }
    let text = std::str::from_utf8(&event.payload).map_err(|_| "payload is not UTF-8")?;
    // serde would also read `[21.5]` into the struct (fields by position): only an
    // object has a `temp`.
    if !text.trim_start().starts_with('{') {
        return Err("payload is not a JSON object".into());
    }
    let reading: Reading = serde_json::from_str(text).map_err(|e| format!("payload: {e}"))?;
    let raw = reading.temp.get();
    let temp = match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(raw).map_err(|e| format!("payload: {e}"))?,
        Some(b'-' | b'0'..=b'9') => raw.to_owned(),
        _ => return Err("payload.temp is not a number or a string".into()),
    };
    Ok(vec![
        b"HSET".to_vec(),
        b"emqx_messages".to_vec(),
        client.as_bytes().to_vec(),
        temp.into_bytes(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(clientid: Option<&str>, topic: &str, payload: &str, json: &str) -> Event {
        Event {
            event: "message.publish".into(),
            id: String::new(),
            clientid: clientid.map(Into::into),
            username: None,
            topic: topic.into(),
            qos: 0,
            retain: false,
            payload: payload.as_bytes().to_vec(),
            timestamp: 0,
            node: String::new(),
            json: json.into(),
        }
    }

    fn text(c: Command) -> Vec<String> {
        c.into_iter()
            .map(|a| String::from_utf8(a).unwrap())
            .collect()
    }

    #[test]
    fn keeps_the_number_text_and_falls_back_to_the_topic() {
        let e = event(
            Some(""),
            "store-last-message/dev-1",
            r#"{"temp":21.50}"#,
            "{}",
        );
        let c = store_last_message(&e).unwrap();
        assert_eq!(text(c), ["HSET", "emqx_messages", "dev-1", "21.50"]);
        let e = event(
            Some("c-9"),
            "store-last-message/x",
            r#"{"temp":"w\"m"}"#,
            "{}",
        );
        let c = store_last_message(&e).unwrap();
        assert_eq!(text(c), ["HSET", "emqx_messages", "c-9", "w\"m"]);
    }

    #[test]
    fn refuses_what_the_core_rule_refuses() {
        let bad = [
            (None, "store-last-message/a", "[21.5]", "{}"),
            (None, "store-last-message/a", r#"{"temp":1,"temp":2}"#, "{}"),
            (None, "store-last-message/a", r#"{"temp":null}"#, "{}"),
            (None, "store-last-message/a", r#"{"temp":"\ud83d"}"#, "{}"),
            (None, "store-last-message/", r#"{"temp":1}"#, "{}"),
            (
                None,
                "store-last-message/a",
                r#"{"temp":1}"#,
                r#"{"payload_encoding":"base64"}"#,
            ),
        ];
        for (client, topic, payload, json) in bad {
            let e = event(client, topic, payload, json);
            assert!(store_last_message(&e).is_err(), "{payload} {json}");
        }
    }
}
