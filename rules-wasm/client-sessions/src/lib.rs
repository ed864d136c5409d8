//! `client-sessions` (rule ABI v2, embedded broker): sessions driven from Redis, the way
//! EMQX 4's Redis backend does it.
//!
//! - On `client.connected`, reads `HGETALL mqtt:sub:<clientid>` (topic filter -> QoS,
//!   as a business server keeps them) and subscribes the client to each filter at its
//!   QoS, as EMQX 4's `on_subscribe_lookup` does.
//! - On a message on the Redis channel `deliver`, JSON
//!   `{"client": "...", "topic": "...", "payload": "..."}`, delivers it to that client's
//!   session only (QoS 1), whoever else subscribes to the topic.

use wasmrule_guest::{Action, Context, Event, RuleError, action, rule};

#[derive(serde::Deserialize)]
struct Delivery {
    client: String,
    topic: String,
    payload: String,
}

#[rule(filters = ["$events/client_connected", "$redis/channel/deliver"])]
pub fn client_sessions(event: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    if event.topic() == "$redis/channel/deliver" {
        let text = event.payload_text().ok_or("the delivery is not text")?;
        let d: Delivery = serde_json::from_str(text)
            .map_err(|e| RuleError::new(format!("not a delivery: {e}")))?;
        return Ok(vec![
            action::deliver(d.client, d.topic, d.payload).qos(1).into(),
        ]);
    }
    let client = event
        .clientid()
        .ok_or("client.connected without a client id")?;
    let subs = ctx.hgetall(format!("mqtt:sub:{client}"))?;
    let mut out = Vec::new();
    for (filter, qos) in subs.pairs() {
        let (Some(filter), Some(qos)) = (filter.as_str(), qos.as_str()) else {
            continue;
        };
        let qos = if qos == "0" { 0 } else { 1 };
        out.push(action::subscribe(client, filter, qos));
    }
    Ok(out)
}
