//! `emqx4-sessions`: the EMQX 4 backend's sessions (`on_subscribe_lookup`,
//! `on_message_fetch_for_queue`, `on_message_fetch_for_pubsub`, the unsubscribe command,
//! `on_message_acked_for_queue`, `on_message_acked_for_pubsub`). Needs the embedded
//! broker. docs/emqx4-backend.md.

use emqx4_backend as backend;
use wasmrule_guest::{Action, Context, Event, RuleError, rule};

#[rule(filters = ["$events/session_created", "$events/session_subscribed", "$events/session_unsubscribed", "$events/message_acked"], needs = ["embedded-broker"])]
pub fn emqx4_sessions(event: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let queue = wasmrule_guest::topic::matches("queue/#", event.topic());
    let pubsub = wasmrule_guest::topic::matches("pubsub/#", event.topic());
    match event.event_type() {
        "session.created" => backend::on_subscribe_lookup(event, ctx),
        "session.subscribed" if queue => backend::on_message_fetch_for_queue(event, ctx),
        "session.subscribed" if pubsub => backend::on_message_fetch_for_pubsub(event, ctx),
        "session.unsubscribed" => backend::on_session_unsubscribed(event),
        "message.acked" if queue => backend::on_message_acked_for_queue(event),
        "message.acked" if pubsub => backend::on_message_acked_for_pubsub(event),
        _ => Ok(Vec::new()),
    }
}
