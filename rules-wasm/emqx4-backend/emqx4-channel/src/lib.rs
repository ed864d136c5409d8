//! `emqx4-channel`: the EMQX 4 backend's SUB/UNSUB channel: a business server
//! publishes `{"type": "subscribe", "topic": "topic0", "clientid": "test", "qos": "0"}`
//! on the Redis channel `mqtt_channel`. Needs the embedded broker. Its own rule, so that
//! a flood of malformed messages can quarantine only this. docs/emqx4-backend.md.

use emqx4_backend as backend;
use wasmrule_guest::{Action, Context, Event, RuleError, rule};

#[rule(filters = ["$redis/channel/mqtt_channel"], needs = ["embedded-broker"])]
pub fn emqx4_channel(event: &Event, _ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    backend::on_channel_message(event)
}
