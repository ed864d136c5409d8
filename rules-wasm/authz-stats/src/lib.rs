//! `authz-stats`: the EMQX demo's authorization statistics.
//!
//! EMQX: `SELECT * FROM "$events/client_check_authz_complete"` with the templates
//! `HINCRBY authz_source ${authz_source} 1` and `HINCRBY authz_result ${result}:${action} 1`.
//! Events come from a source that sees authorization decisions (the embedded broker).

use wasmrule_guest::{Command, Event, RuleError, cmd, rule};

#[rule(filters = ["$events/client_check_authz_complete"])]
pub fn authz_stats(event: &Event) -> Result<Vec<Command>, RuleError> {
    let field = |name: &str| {
        event
            .get(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| RuleError::new(format!("event has no string field `{name}`")))
    };
    let source = field("authz_source")?;
    let result = field("result")?;
    let action = field("action")?;
    Ok(vec![
        cmd::hincrby("authz_source", &source, 1),
        cmd::hincrby("authz_result", format!("{result}:{action}"), 1),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_source_and_result_by_action() {
        let json = br#"{"event":"client.check_authz_complete","clientid":"c","topic":"t/1",
            "action":"publish","authz_source":"file","result":"deny"}"#;
        let out = authz_stats(&Event::from_json(json).unwrap()).unwrap();
        let text: Vec<String> = out.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "HINCRBY authz_source file 1",
                "HINCRBY authz_result deny:publish 1"
            ]
        );
    }

    #[test]
    fn a_missing_field_is_an_error() {
        let json = br#"{"event":"client.check_authz_complete","result":"allow"}"#;
        let err = authz_stats(&Event::from_json(json).unwrap()).unwrap_err();
        assert!(err.to_string().contains("authz_source"), "{err}");
    }
}
