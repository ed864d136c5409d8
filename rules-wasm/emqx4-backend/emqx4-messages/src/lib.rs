//! `emqx4-messages`: the EMQX 4 backend's message store (`on_message_publish`,
//! `on_message_retain`, `on_retain_delete`): `mqtt:msg:<msgid>`, `mqtt:msg:<topic>`,
//! `mqtt:retain:<topic>`. Works with any broker. docs/emqx4-backend.md.

use emqx4_backend as backend;
use wasmrule_guest::{Action, Context, Event, RuleError, rule};

#[rule(filters = ["#"])]
pub fn emqx4_messages(event: &Event, _ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let mut out = backend::on_message_publish(event)?;
    out.extend(backend::on_message_retain(event)?);
    out.extend(backend::on_retain_delete(event)?);
    Ok(out)
}
