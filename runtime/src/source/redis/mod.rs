//! Events from Redis (docs/abi.md, "Events from Redis"): rules whose filters name a
//! Redis pub/sub channel (`$redis/channel/NAME`) or stream (`$redis/stream/NAME`) get
//! an event per message or entry. `channels.rs` holds a pub/sub connection subscribed
//! to the channels the rules want (at most once, like pub/sub itself); `streams.rs`
//! reads the streams through a consumer group and acknowledges each entry (`XACK`)
//! only once its rules' writes and actions are done (at-least-once, like QoS 1).
//!
//! Both follow the rule set's wanted triggers (`rules/ruleset.rs`, [`RedisTrigger`]:
//! names already in the tenant's namespace) and reconnect with backoff. Not here: what
//! rules do with the events (`dispatch/`).

mod channels;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ack::StreamAcks;
use crate::dispatch::Dispatcher;
use crate::event::{BrokerEvent, EventKind, Message};
use crate::rules::ruleset::{RedisTrigger, TriggerKind, Wanted};
use crate::sink::redis::RedisConfig;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the two readers need.
pub struct RedisSourceParts {
    pub config: RedisConfig,
    pub wanted: watch::Receiver<Wanted>,
    pub dispatcher: Dispatcher,
    pub acks: Arc<StreamAcks>,
    /// The consumer name in each stream's group: stable across restarts of this
    /// instance, so it claims its own pending entries again.
    pub consumer: String,
    pub shutdown: CancellationToken,
}

/// Runs the channel and stream readers until shutdown.
pub async fn run(parts: RedisSourceParts) {
    let channels = channels::Channels {
        config: parts.config.clone(),
        wanted: parts.wanted.clone(),
        dispatcher: parts.dispatcher.clone(),
        shutdown: parts.shutdown.clone(),
    };
    let streams = streams::Streams {
        config: parts.config,
        wanted: parts.wanted,
        dispatcher: parts.dispatcher,
        acks: parts.acks,
        consumer: parts.consumer,
        shutdown: parts.shutdown,
    };
    tokio::join!(channels.run(), streams.run());
}

/// The triggers of `kind` in `wanted`.
fn of_kind(wanted: &Wanted, kind: TriggerKind) -> Vec<RedisTrigger> {
    wanted
        .redis
        .iter()
        .filter(|t| t.kind == kind)
        .cloned()
        .collect()
}

/// The event for a Redis message or entry: `fields` beside the topic, as the rule named
/// it (without the tenant's prefix).
fn event(
    trigger: &RedisTrigger,
    kind: EventKind,
    payload: Vec<u8>,
    mut fields: serde_json::Map<String, serde_json::Value>,
) -> Message {
    let (label, field) = match trigger.kind {
        TriggerKind::Channel => ("channel", "channel"),
        TriggerKind::Stream => ("stream", "stream"),
    };
    fields.insert(
        "topic".into(),
        format!("$redis/{label}/{}", trigger.name).into(),
    );
    fields.insert(field.into(), trigger.name.clone().into());
    fields.insert(
        "payload".into(),
        String::from_utf8_lossy(&payload).into_owned().into(),
    );
    let mut m = Message::new(trigger.topic(), payload, 0, false);
    m.event = Some(Box::new(BrokerEvent::new(kind, fields)));
    m
}
