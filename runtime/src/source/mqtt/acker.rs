//! Sends acknowledgements to the broker as they become due (`ack.rs` decides when).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::client::Client;
use crate::ack::{AckToken, AckTracker};
use crate::ops::metrics::Metrics;

/// The task that acknowledges messages once their writes are done.
pub(super) struct Acker {
    /// Where acknowledgements are queued.
    pub client: Client,
    /// Says which connection is current: a token of an earlier one is not sent (the
    /// broker redelivers that message).
    pub tracker: Arc<AckTracker>,
    pub metrics: Arc<Metrics>,
    /// Acknowledgements that became due, in arrival order; closed when every
    /// [`Completions`](crate::ack::Completions) handle is gone.
    pub due: mpsc::UnboundedReceiver<Vec<AckToken>>,
}

impl Acker {
    /// Acknowledges until `due` is closed.
    pub async fn run(&mut self) {
        while let Some(tokens) = self.due.recv().await {
            for t in tokens {
                if t.generation != self.tracker.generation() {
                    continue;
                }
                match self.client.ack(t).await {
                    Ok(()) => Metrics::add(&self.metrics.messages_acked, 1),
                    Err(e) => tracing::debug!("acknowledgement not queued: {e}"),
                }
            }
        }
    }
}
