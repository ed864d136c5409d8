//! `seq-counter`: records sequence-numbered messages idempotently, for delivery tests.
//!
//! The payload is a decimal sequence number `n`. The rule returns `SETBIT seen n 1`
//! (idempotent: `BITCOUNT seen` is the number of distinct messages that arrived) and
//! `INCR writes` (not idempotent: `writes - BITCOUNT seen` is the number of repeats).

use wasmrule_guest::{Command, Event, RuleError, cmd, rule};

#[rule(filters = ["seq/#"])]
pub fn seq_counter(event: &Event) -> Result<Vec<Command>, RuleError> {
    let text = event.payload_text().ok_or("payload is binary")?;
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| RuleError::new(format!("payload {text:?} is not a sequence number")))?;
    Ok(vec![cmd::setbit("seen", n, true), cmd::incr("writes")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_the_sequence_number() {
        let out = seq_counter(&Event::message("seq/7", "7")).unwrap();
        let text: Vec<String> = out.iter().map(|c| c.to_string()).collect();
        assert_eq!(text, vec!["SETBIT seen 7 1", "INCR writes"]);
        assert!(seq_counter(&Event::message("seq/x", "x")).is_err());
    }
}
