//! `store-last-message`: the EMQX demo's first rule.
//!
//! EMQX: `SELECT * FROM "store-last-message/+"` with the Redis template
//! `HSET emqx_messages ${clientid} ${payload.temp}`. The client id comes from the event
//! when the source knows it, otherwise from the last topic level (the demo's devices
//! publish to `store-last-message/<clientid>`). A numeric `temp` is stored exactly as
//! the device wrote it (`21.50` stays `21.50`), a string `temp` as its text; anything
//! else is an error. Every language's version of this rule does the same
//! (`guest-sdk/conformance/store-last-message.json`).

// The reading's parsing is its own file, shared with the ABI v2 bench rules
// (`bench-v2-noread`, `bench-v2-read`) so that they measure the same work.
mod reading;

use wasmrule_guest::{Command, Event, RuleError, cmd, rule};

#[rule(filters = ["store-last-message/+"])]
pub fn store_last_message(event: &Event) -> Result<Command, RuleError> {
    let (client, temp) = reading::client_and_temp(event)?;
    Ok(cmd::hset("emqx_messages", client, temp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmrule_guest::testing::run_json;

    #[test]
    fn stores_temp_by_topic_level() {
        let e = Event::message(
            "store-last-message/dev-1",
            r#"{"message":"hi","clientId":"dev-1","duration":"12s","temp":21.5,"hum":40}"#,
        );
        let c = store_last_message(&e).unwrap();
        assert_eq!(c.to_string(), "HSET emqx_messages dev-1 21.5");
    }

    #[test]
    fn numbers_keep_their_text_strings_their_content() {
        let c = store_last_message(&Event::message("store-last-message/a", r#"{"temp":21.50}"#));
        assert_eq!(c.unwrap().to_string(), "HSET emqx_messages a 21.50");
        let c = store_last_message(&Event::message(
            "store-last-message/a",
            r#"{"temp":"warm \"x\""}"#,
        ));
        assert_eq!(
            c.unwrap().to_string(),
            r#"HSET emqx_messages a "warm \"x\"""#
        );
    }

    #[test]
    fn prefers_the_event_clientid() {
        let out = run_json(
            store_last_message,
            r#"{"clientid":"emqx_c","topic":"store-last-message/x","payload":"{\"temp\":3}"}"#,
        );
        assert_eq!(out.unwrap(), vec!["HSET emqx_messages emqx_c 3"]);
    }

    #[test]
    fn bad_payloads_are_errors() {
        let not_json = store_last_message(&Event::message("store-last-message/a", "hot"));
        assert_eq!(
            not_json.unwrap_err().message(),
            "payload is not a JSON object"
        );
        let no_temp = store_last_message(&Event::message("store-last-message/a", "{}"));
        assert!(no_temp.is_err());
        let obj = store_last_message(&Event::message("store-last-message/a", r#"{"temp":{}}"#));
        assert!(obj.is_err());
        let array = store_last_message(&Event::message("store-last-message/a", "[21.5]"));
        assert!(array.is_err());
        let no_level = store_last_message(&Event::message("store-last-message/", r#"{"temp":1}"#));
        assert!(no_level.is_err());
    }
}
