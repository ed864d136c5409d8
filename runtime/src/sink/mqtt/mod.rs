//! Takes rules' MQTT actions (ABI v2, `actions.rs`) once the Redis writes they follow
//! are confirmed: publishes through a client connection of their own to the external
//! broker (`publisher.rs`), or, with the embedded broker, straight into it
//! (`embedded.rs`). The Redis writer calls [`ActionSink::take`] for each written batch
//! before it reports the batch's messages done, so a QoS 1 message is acknowledged only
//! after its actions.
//!
//! Not here: deciding what a rule may do (`tenancy/policy.rs`), the Redis side
//! (`sink/redis/`).

mod embedded;
mod publisher;

use std::time::Duration;

use crate::actions::MqttAction;

pub use embedded::EmbeddedActions;
pub use publisher::Publisher;

/// Waits between attempts when the broker does not take the actions.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where MQTT actions go.
pub enum ActionSink {
    /// A client connection to the external broker.
    Client(Publisher),
    /// The embedded broker, in process.
    Embedded(EmbeddedActions),
}

impl ActionSink {
    /// Takes `actions` in order, retrying (with backoff) until the broker has taken all
    /// of them: at-least-once, so a retried publish may arrive twice. Actions the
    /// broker refuses for good (a subscribe for a client that is not connected) are
    /// logged and skipped.
    pub async fn take(&mut self, actions: &[MqttAction]) {
        let mut backoff = RETRY_MIN;
        let mut from = 0;
        loop {
            let r = match self {
                ActionSink::Client(p) => p.publish_all(&actions[from..]).await,
                ActionSink::Embedded(e) => e.take_all(&actions[from..]).await,
            };
            match r {
                Ok(()) => return,
                Err((done, e)) => {
                    from += done;
                    tracing::warn!(
                        actions = actions.len() - from,
                        "MQTT actions not taken: {e:#}; retrying in {backoff:?}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }
}
