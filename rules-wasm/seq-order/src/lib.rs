//! `seq-order`: records the order in which sequence-numbered messages reach Redis, per
//! topic, for delivery tests of ordering (the spill's replay, docs/delivery.md).
//!
//! The payload starts with a decimal sequence number `n` (anything after the first
//! space is padding and ignored). The rule returns `RPUSH order:<topic> n`, so each
//! topic's list shows the order its commands were applied, and `SETBIT order:seen n 1`,
//! so `BITCOUNT order:seen` counts the distinct messages that arrived.

use wasmrule_guest::{Command, Event, RuleError, cmd, rule};

#[rule(filters = ["order/#"])]
pub fn seq_order(event: &Event) -> Result<Vec<Command>, RuleError> {
    let text = event.payload_text().ok_or("payload is binary")?;
    let first = text.split(' ').next().unwrap_or_default();
    let n: u64 = first
        .parse()
        .map_err(|_| RuleError::new(format!("payload {first:?} is not a sequence number")))?;
    Ok(vec![
        cmd::rpush(format!("order:{}", event.topic()), n),
        cmd::setbit("order:seen", n, true),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_order_per_topic() {
        let out = seq_order(&Event::message("order/3", "42 padding")).unwrap();
        let text: Vec<String> = out.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            text,
            vec!["RPUSH order:order/3 42", "SETBIT order:seen 42 1"]
        );
        assert!(seq_order(&Event::message("order/3", "x")).is_err());
    }
}
