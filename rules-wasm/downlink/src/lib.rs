//! `downlink` (rule ABI v2): commands from a backend to devices, through Redis.
//!
//! A backend publishes `{"device":"d1","cmd":"reboot"}` on the Redis channel
//! `downlink`, or adds it to the stream `downlink` as the entry's `payload` field (the
//! stream keeps it until wasmrule has delivered it: nothing is lost while wasmrule is
//! down). The rule publishes the command, as received, on the MQTT topic
//! `devices/<device>/cmd` at QoS 1. A device is 1 to 64 characters of
//! `A-Z a-z 0-9 - _ .`; anything else is the rule's error (and a dead letter).

use wasmrule_guest::{Action, Context, Event, RuleError, action, rule};

#[derive(serde::Deserialize)]
struct Command {
    device: String,
}

fn valid_device(d: &str) -> bool {
    (1..=64).contains(&d.len())
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[rule(filters = ["$redis/channel/downlink", "$redis/stream/downlink"])]
pub fn downlink(event: &Event, _ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let text = event.payload_text().ok_or("the command is not text")?;
    let command: Command = serde_json::from_str(text)
        .map_err(|e| RuleError::new(format!("the command is not {{\"device\": ...}}: {e}")))?;
    if !valid_device(&command.device) {
        return Err(RuleError::new(
            "device must be 1 to 64 characters of A-Z a-z 0-9 - _ .",
        ));
    }
    let topic = format!("devices/{}/cmd", command.device);
    Ok(vec![action::publish(topic, text).qos(1).into()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmrule_guest::testing;

    #[test]
    fn a_command_becomes_a_publish_to_its_device() {
        let mut redis = testing::FakeRedis::new();
        let e = Event::message(
            "$redis/channel/downlink",
            r#"{"device":"d1","cmd":"reboot"}"#,
        );
        let out = downlink(&e, &mut redis.context()).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].to_string().contains("devices/d1/cmd"), "{}", out[0]);
    }

    #[test]
    fn bad_commands_are_errors() {
        let mut redis = testing::FakeRedis::new();
        for bad in [r#"{"cmd":"x"}"#, r#"{"device":"a/b"}"#, "nope"] {
            let e = Event::message("$redis/channel/downlink", bad);
            assert!(downlink(&e, &mut redis.context()).is_err(), "{bad}");
        }
    }
}
