//! Keeps the broker's subscriptions equal to what the loaded rules need: the
//! [`Follower`] turns rule changes into subscribe and unsubscribe requests
//! (`subscriptions.rs` decides which), the [`Requester`] sends them one at a time.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::emqx;
use super::subscriptions::{SubRequest, SubTable};
use crate::rules::ruleset::Wanted;

/// The task that follows rule changes.
pub(super) struct Follower {
    /// The subscriptions and event kinds the loaded rules need.
    pub wanted: watch::Receiver<Wanted>,
    /// Subscriptions held and asked for, shared with the reader (which reports acks
    /// and reconnects to it).
    pub table: Arc<Mutex<SubTable>>,
    /// To the [`Requester`].
    pub requests: mpsc::UnboundedSender<SubRequest>,
    /// Also subscribe to the EMQX event topics of the event kinds rules want.
    pub emqx_events: bool,
    pub shutdown: CancellationToken,
}

impl Follower {
    /// Follows until shutdown or until the rule set is gone.
    pub async fn run(&mut self) {
        loop {
            let desired = {
                let w = self.wanted.borrow_and_update();
                if self.emqx_events {
                    emqx::subscriptions(&w.filters, &w.events)
                } else {
                    w.filters.clone()
                }
            };
            let reqs = lock(&self.table).set_desired(&desired);
            for r in reqs {
                log_request(&r);
                let _ = self.requests.send(r);
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                changed = self.wanted.changed() => if changed.is_err() { break },
            }
        }
    }
}

/// The task that sends subscription requests, in order. Its own task because the
/// reader must keep polling for rumqttc's request channel to drain.
pub(super) struct Requester {
    pub client: Client,
    /// QoS of the subscriptions.
    pub qos: u8,
    pub requests: mpsc::UnboundedReceiver<SubRequest>,
}

impl Requester {
    /// Sends until every sender is gone.
    pub async fn run(&mut self) {
        while let Some(req) = self.requests.recv().await {
            if let Err(e) = self.client.send(&req, self.qos).await {
                tracing::warn!("cannot queue MQTT request {req:?}: {e}");
            }
        }
    }
}

fn log_request(r: &SubRequest) {
    match r {
        SubRequest::Subscribe { filter, id } => tracing::info!(filter, ?id, "subscribing"),
        SubRequest::Unsubscribe { filter } => tracing::info!(filter, "unsubscribing"),
    }
}

/// The table, even if a holder panicked: it holds no invariant a panic elsewhere could
/// break halfway.
pub(super) fn lock(t: &Mutex<SubTable>) -> std::sync::MutexGuard<'_, SubTable> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}
