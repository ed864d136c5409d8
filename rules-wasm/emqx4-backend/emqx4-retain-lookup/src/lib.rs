//! `emqx4-retain-lookup`: the EMQX 4 backend's `on_retain_lookup`: a new subscription
//! gets the retained messages kept in Redis by `emqx4-messages`, wildcard filters
//! included. Needs the embedded broker, with `broker.retained = "rules"` (or every
//! subscriber gets the broker's own copy too). docs/emqx4-backend.md.

use emqx4_backend as backend;
use wasmrule_guest::{Action, Context, Event, RuleError, rule};

#[rule(filters = ["$events/session_subscribed"], needs = ["embedded-broker"])]
pub fn emqx4_retain_lookup(event: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    backend::on_retain_lookup(event, ctx)
}
