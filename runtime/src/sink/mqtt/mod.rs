//! Takes rules' MQTT actions (ABI v2, `actions.rs`) once the Redis writes they follow
//! are confirmed: publishes through a client connection of their own to the external
//! broker (`publisher.rs`), or, with the embedded broker, straight into it
//! (`embedded.rs`). The Redis writer hands each written batch's actions to the
//! [`ActionQueue`], whose task takes them in order and only then reports the batch's
//! messages done, so a QoS 1 message is acknowledged only after its actions; the writer
//! goes on writing meanwhile (a broker's round trips never hold up Redis or reads).
//!
//! Not here: deciding what a rule may do (`tenancy/policy.rs`), the Redis side
//! (`sink/redis/`).

mod embedded;
mod publisher;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::ack::Completions;
use crate::actions::MqttAction;
use crate::ops::metrics::Metrics;

pub use embedded::EmbeddedActions;
pub use publisher::Publisher;

/// Waits between attempts when the broker does not take the actions.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Batches of actions waiting for the action task: enough to keep it busy while the
/// writer goes on, few enough to push back on the writer when the broker is slow.
const QUEUED_BATCHES: usize = 64;

/// Most actions taken in one round (queued batches are joined up to this).
const TAKEN_TOGETHER: usize = 1024;

/// Where the Redis writer hands a written batch's actions, with the messages to report
/// done after them.
#[derive(Clone)]
pub struct ActionQueue {
    tx: mpsc::Sender<(Vec<MqttAction>, Vec<u64>)>,
}

impl ActionQueue {
    /// Starts the task that takes actions into `sink` and reports to `completions`;
    /// it ends when every queue handle is dropped and the queue is empty.
    pub fn start(
        mut sink: ActionSink,
        completions: Completions,
        metrics: Arc<Metrics>,
    ) -> (ActionQueue, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(Vec<MqttAction>, Vec<u64>)>(QUEUED_BATCHES);
        let task = tokio::spawn(async move {
            let (mut actions, mut done) = (Vec::new(), Vec::new());
            while let Some((a, d)) = rx.recv().await {
                // Whatever else is queued goes with it, in order: one round of
                // confirmations for many batches.
                actions.extend(a);
                done.extend(d);
                while actions.len() < TAKEN_TOGETHER {
                    let Ok((a, d)) = rx.try_recv() else { break };
                    actions.extend(a);
                    done.extend(d);
                }
                sink.take(&actions).await;
                Metrics::add(&metrics.mqtt_actions, actions.len() as u64);
                completions.done(&done);
                actions.clear();
                done.clear();
            }
        });
        (ActionQueue { tx }, task)
    }

    /// Queues `actions`, then `done` (waits while the queue is full).
    pub async fn push(&self, actions: Vec<MqttAction>, done: Vec<u64>) {
        if self.tx.send((actions, done)).await.is_err() {
            tracing::error!("the MQTT action task stopped; actions dropped");
        }
    }
}

/// Where MQTT actions go.
pub enum ActionSink {
    /// A client connection to the external broker.
    Client(Box<Publisher>),
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
