//! `wasmrule record`'s source: a plain subscriber that hands every message on its
//! filters to a callback, with no rules, no Redis and no acknowledgement bookkeeping
//! (QoS 0 subscriptions). The connection is the same client as `wasmrule run`'s
//! (`client.rs`: MQTT 3.1.1 or 5, TLS, credentials); it reconnects on its own.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{Polled, connect};
use super::config::MqttConfig;
use super::subscriptions::SubRequest;
use crate::event::Message;

/// Subscribes to `filters` on the broker of `cfg` and calls `each` with every message
/// until `shutdown`.
pub async fn capture(
    mut cfg: MqttConfig,
    filters: Vec<String>,
    shutdown: CancellationToken,
    mut each: impl FnMut(Message),
) {
    cfg.qos = 0;
    let (client, mut events) = connect(&cfg);
    let mut reported = false;
    loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = events.poll() => p,
        };
        match polled {
            Ok(Polled::Connected { .. }) => {
                reported = false;
                tracing::info!(host = %cfg.host, port = cfg.port, "connected; subscribing to {}", filters.join(" "));
                for f in &filters {
                    let req = SubRequest::Subscribe {
                        filter: f.clone(),
                        id: None,
                    };
                    if let Err(e) = client.send(&req, 0).await {
                        tracing::error!("cannot subscribe to {f}: {e}");
                    }
                }
            }
            Ok(Polled::Publish(m, ..)) => each(m),
            Ok(Polled::SubAck { refused, .. }) if !refused.is_empty() => {
                tracing::error!("the broker refused the subscriptions {}", refused.join(" "));
            }
            Ok(_) => {}
            Err(e) => {
                if !std::mem::replace(&mut reported, true) {
                    tracing::warn!(
                        "MQTT connection to {}:{}: {e}; reconnecting",
                        cfg.host,
                        cfg.port
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    client.disconnect().await;
}
