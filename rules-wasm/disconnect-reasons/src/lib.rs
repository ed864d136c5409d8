//! `disconnect-reasons`: the EMQX demo's disconnect statistics.
//!
//! EMQX: `SELECT * FROM "$events/client_disconnected"` with the template
//! `HINCRBY disconnected_reason ${reason} 1`. Events come from a source that sees
//! disconnects (the embedded broker, or EMQX's system topics).

use wasmrule_guest::{Command, Event, RuleError, cmd, rule};

#[rule(filters = ["$events/client_disconnected"])]
pub fn disconnect_reasons(event: &Event) -> Result<Command, RuleError> {
    let reason = event
        .get("reason")
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or("event has no string field `reason`")?;
    Ok(cmd::hincrby("disconnected_reason", reason, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let json =
            br#"{"event":"client.disconnected","clientid":"c","reason":"keepalive_timeout"}"#;
        let c = disconnect_reasons(&Event::from_json(json).unwrap()).unwrap();
        assert_eq!(
            c.to_string(),
            "HINCRBY disconnected_reason keepalive_timeout 1"
        );
    }
}
