//! `last-message-rounded`: `store-last-message` changed on purpose, the way a
//! well-meant edit changes a rule: a numeric `temp` is stored rounded to one decimal
//! (`21.37` becomes `21.4`) instead of as the device wrote it. Replay and canaries are
//! shown with it (docs/replay.md): it writes the same as `store-last-message` for every
//! reading that already had one decimal, and something else for the rest.
//!
//! Not named `store-last-message-*`: that prefix is another language's build of the
//! same rule to the conformance suite (`guest-sdk/conformance/run.sh`).

#[path = "../../store-last-message/src/reading.rs"]
mod reading;

use wasmrule_guest::{Command, Event, RuleError, cmd, rule};

#[rule(filters = ["store-last-message/+"])]
pub fn store_last_message(event: &Event) -> Result<Command, RuleError> {
    let (client, temp) = reading::client_and_temp(event)?;
    Ok(cmd::hset("emqx_messages", client, round(temp)))
}

/// A number with more than one decimal, rounded to one; anything else as it was.
fn round(temp: String) -> String {
    let decimals = temp.split_once('.').map_or(0, |(_, d)| d.len());
    match temp.parse::<f64>() {
        Ok(t) if decimals > 1 && t.is_finite() => format!("{t:.1}"),
        _ => temp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(payload: &str) -> String {
        store_last_message(&Event::message("store-last-message/d", payload))
            .unwrap()
            .to_string()
    }

    #[test]
    fn rounds_to_one_decimal_and_keeps_the_rest() {
        assert_eq!(stored(r#"{"temp":21.37}"#), "HSET emqx_messages d 21.4");
        assert_eq!(stored(r#"{"temp":21.3}"#), "HSET emqx_messages d 21.3");
        assert_eq!(stored(r#"{"temp":21}"#), "HSET emqx_messages d 21");
        assert_eq!(stored(r#"{"temp":"warm"}"#), "HSET emqx_messages d warm");
    }
}
