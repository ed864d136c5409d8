//! `bench-v2-read`: `store-last-message` (the same parsing) as an ABI v2 rule that first
//! reads the device's stored reading (`HGET emqx_messages <client>`) and writes only a
//! changed one, to measure what a read per event costs (docs/performance.md, "Rules
//! that read").

#[path = "../../store-last-message/src/reading.rs"]
mod reading;

use wasmrule_guest::{Action, Context, Event, RuleError, cmd, rule};

#[rule(filters = ["store-last-message/+"])]
pub fn bench_v2_read(event: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let (client, temp) = reading::client_and_temp(event)?;
    if ctx.hget("emqx_messages", client)?.as_str() == Some(temp.as_str()) {
        return Ok(Vec::new());
    }
    Ok(vec![cmd::hset("emqx_messages", client, temp).into()])
}
