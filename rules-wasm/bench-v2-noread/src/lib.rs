//! `bench-v2-noread`: `store-last-message` (`HSET emqx_messages <client> <temp>`, the
//! same parsing) as an ABI v2 rule that reads nothing, to measure what v2 costs a rule
//! that does not use it (docs/performance.md, "Rules that read").

#[path = "../../store-last-message/src/reading.rs"]
mod reading;

use wasmrule_guest::{Action, Context, Event, RuleError, cmd, rule};

#[rule(filters = ["store-last-message/+"])]
pub fn bench_v2_noread(event: &Event, _ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let (client, temp) = reading::client_and_temp(event)?;
    Ok(vec![cmd::hset("emqx_messages", client, temp).into()])
}
