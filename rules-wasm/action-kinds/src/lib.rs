//! `action-kinds` (rule ABI v2): a conformance rule, not a useful one. It makes reads
//! of each reply type and returns every kind of action, so that each SDK's reply
//! decoding and action encoding is checked against the host (the fixture
//! `guest-sdk/conformance/action-kinds.json`), in every language.
//!
//! On `kinds/<x>`:
//!
//! - reads `HGETALL cfg:<x>` (an array), `LLEN q:<x>` (an integer), `GET missing:<x>`
//!   (nil unless set);
//! - returns `HSET seen:<x> fields <number of fields> len <LLEN>`; then `INCR nil:<x>`
//!   when the GET was nil, else `INCR notnil:<x>`;
//! - then per field of the hash, in order: a publish on `out/<x>/<field>` of the value,
//!   QoS 0, with the user property `n` = the field's index (0, 1, ...);
//! - then subscribe `c-<x>` to `in/<x>/#` at QoS 1, unsubscribe `c-<x>` from
//!   `old/<x>/#`, and deliver `hi` on `in/<x>/hello` to `c-<x>`, QoS 1, retained.
//!
//! A failed read is the rule's error.

use wasmrule_guest::{Action, Context, Event, RuleError, Value, action, cmd, rule};

#[rule(filters = ["kinds/+"])]
pub fn action_kinds(event: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let x = event.topic_last_level().unwrap_or_default();
    let cfg = ctx.hgetall(format!("cfg:{x}"))?;
    let len = ctx.read(&["LLEN".to_owned(), format!("q:{x}")])?;
    let missing = ctx.get(format!("missing:{x}"))?;
    let pairs: Vec<(&Value, &Value)> = cfg.pairs().collect();
    let mut out: Vec<Action> = vec![
        cmd::hset(format!("seen:{x}"), "fields", pairs.len())
            .arg("len")
            .arg(len.as_i64().ok_or("LLEN is no integer")?)
            .into(),
    ];
    let which = if missing.is_nil() { "nil" } else { "notnil" };
    out.push(cmd::incr(format!("{which}:{x}")).into());
    for (i, (field, value)) in pairs.iter().enumerate() {
        let field = field.as_str().ok_or("a field is not text")?;
        let value = value.as_bytes().ok_or("a value is not a string")?;
        let p = action::publish(format!("out/{x}/{field}"), value).property("n", i.to_string());
        out.push(p.into());
    }
    out.push(action::subscribe(format!("c-{x}"), format!("in/{x}/#"), 1));
    out.push(action::unsubscribe(format!("c-{x}"), format!("old/{x}/#")));
    let d = action::deliver(format!("c-{x}"), format!("in/{x}/hello"), "hi");
    out.push(d.qos(1).retain(true).into());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmrule_guest::testing::FakeRedis;

    #[test]
    fn every_kind() {
        let mut redis = FakeRedis::new();
        redis.hset("cfg:a", "f", "v").rpush("q:a", "1");
        let out = action_kinds(&Event::message("kinds/a", ""), &mut redis.context()).unwrap();
        let lines: Vec<String> = out.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            lines,
            [
                "HSET seen:a fields 1 len 1",
                "INCR nil:a",
                "MQTT PUBLISH out/a/f qos=0 retain=0 prop:n=0 payload=v",
                "MQTT SUBSCRIBE c-a in/a/# qos=1",
                "MQTT UNSUBSCRIBE c-a old/a/#",
                "MQTT DELIVER c-a in/a/hello qos=1 retain=1 payload=hi",
            ]
        );
    }
}
