//! `event-log`: appends every event it receives, as JSON, to the list
//! `events:<event type>` (`events:client.disconnected`, `events:message.publish`, ...).
//!
//! A debugging aid (what exactly does a source send?) and the probe the integration
//! tests use to check each event kind's fields.

use wasmrule_guest::{Command, Event, cmd, rule};

#[rule(filters = ["#", "$events/#"])]
pub fn event_log(event: &Event) -> Command {
    cmd::rpush(format!("events:{}", event.event_type()), event.as_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_event_under_its_type() {
        let json = br#"{"event":"client.connected","clientid":"c"}"#;
        let c = event_log(&Event::from_json(json).unwrap());
        assert_eq!(
            c.to_string(),
            r#"RPUSH events:client.connected "{\"event\":\"client.connected\",\"clientid\":\"c\"}""#
        );
    }
}
