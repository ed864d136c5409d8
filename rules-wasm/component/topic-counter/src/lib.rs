//! `topic-counter` as a component of the WIT world `wasmrule:rule@1.0.0`
//! (`guest-sdk/wit/rule.wit`), written with the `wit-bindgen` guest crate: counts
//! messages per topic in the hash `mqtt_topic_count`, as the core-module rule in
//! `rules-wasm/topic-counter` does.
//!
//! The filter `#` matches every topic except `$`-topics (`$SYS/...`), as the MQTT
//! specification requires, so broker statistics are not counted.

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
            name: "topic-counter".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            filters: vec!["#".into()],
        }
    }

    fn on_event(event: Event) -> Result<Vec<Command>, String> {
        Ok(vec![topic_counter(&event)])
    }
}

// The export symbols are named after the WIT functions (`wasmrule:rule/handler@1.0.0#
// on-event`), which a native linker's version script cannot spell: export on wasm32 only.
#[cfg(target_arch = "wasm32")]
export!(Rule);

/// `HINCRBY mqtt_topic_count <topic> 1`.
pub fn topic_counter(event: &Event) -> Command {
    vec![
        b"HINCRBY".to_vec(),
        b"mqtt_topic_count".to_vec(),
        event.topic.as_bytes().to_vec(),
        b"1".to_vec(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_topic() {
        let e = Event {
            event: "message.publish".into(),
            id: String::new(),
            clientid: None,
            username: None,
            topic: "a/b c".into(),
            qos: 0,
            retain: false,
            payload: b"x".to_vec(),
            timestamp: 0,
            node: String::new(),
            json: "{}".into(),
        };
        let c = topic_counter(&e);
        assert_eq!(c, [&b"HINCRBY"[..], b"mqtt_topic_count", b"a/b c", b"1"]);
    }
}
