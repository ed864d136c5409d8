//! `topic-counter`: counts messages per topic in the hash `mqtt_topic_count`.
//!
//! The filter `#` matches every topic except `$`-topics (`$SYS/...`), as the MQTT
//! specification requires, so broker statistics are not counted.

use wasmrule_guest::{Command, Event, cmd, rule};

#[rule(filters = ["#"])]
pub fn topic_counter(event: &Event) -> Command {
    cmd::hincrby("mqtt_topic_count", event.topic(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_topic() {
        let c = topic_counter(&Event::message("a/b c", "x"));
        assert_eq!(c.to_string(), r#"HINCRBY mqtt_topic_count "a/b c" 1"#);
    }
}
