//! `dropped-messages`: the EMQX demo's dropped-message statistics.
//!
//! EMQX: `SELECT * FROM "$events/message_dropped", "$events/delivery_dropped"` with the
//! templates `HINCRBY emqx_message_dropped_count ${topic} 1` and
//! `HINCRBY message_dropped_reason ${reason} 1`. `message.dropped` is a message the
//! broker did not route (no subscribers, not authorized); `delivery.dropped` one it
//! could not deliver to a subscriber (queue full, expired).

use wasmrule_guest::{Command, Event, RuleError, cmd, rule};

#[rule(filters = ["$events/message_dropped", "$events/delivery_dropped"])]
pub fn dropped_messages(event: &Event) -> Result<Vec<Command>, RuleError> {
    let reason = event
        .get("reason")
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or("event has no string field `reason`")?;
    Ok(vec![
        cmd::hincrby("emqx_message_dropped_count", event.topic(), 1),
        cmd::hincrby("message_dropped_reason", reason, 1),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_topic_and_reason() {
        for kind in ["message.dropped", "delivery.dropped"] {
            let json = format!(
                r#"{{"event":"{kind}","topic":"message-drop-test/c1","reason":"no_subscribers"}}"#
            );
            let out = dropped_messages(&Event::from_json(json.as_bytes()).unwrap()).unwrap();
            let text: Vec<String> = out.iter().map(ToString::to_string).collect();
            assert_eq!(
                text,
                [
                    "HINCRBY emqx_message_dropped_count message-drop-test/c1 1",
                    "HINCRBY message_dropped_reason no_subscribers 1"
                ]
            );
        }
    }
}
