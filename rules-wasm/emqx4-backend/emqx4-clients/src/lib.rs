//! `emqx4-clients`: the EMQX 4 backend's client state (`on_client_connected`,
//! `on_client_disconnected`): `mqtt:client:<clientid>` and `mqtt:node:<node>`. Works with
//! the embedded broker and with an EMQX (`--emqx-events`). docs/emqx4-backend.md.

use emqx4_backend as backend;
use wasmrule_guest::{Action, Context, Event, RuleError, rule};

#[rule(filters = ["$events/client_connected", "$events/client_disconnected"])]
pub fn emqx4_clients(event: &Event, _ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    match event.event_type() {
        "client.connected" => backend::on_client_connected(event),
        _ => backend::on_client_disconnected(event),
    }
}
