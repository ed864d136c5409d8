//! The embedded MQTT broker (`wasmrule run --embedded-broker ADDR`): devices connect to
//! wasmrule itself, and rules see what only a broker can see — client connects and
//! disconnects with their reasons, authorization decisions, subscriptions, deliveries,
//! acknowledgements and dropped messages — as events with EMQX's names
//! (`docs/events.md`). Published messages reach rules without a network hop.
//!
//! The broker is rmqtt's (a maintained broker library with a hook manager); this module
//! builds its listener from [`BrokerConfig`], enforces the ACL ([`acl`]) in its own
//! hook handler, and turns hook calls into [`Message`]s ([`hooks`]). Hook handlers run
//! in the client's session task, so they only build the event and hand it to a bounded
//! channel; a forwarding task passes events on to the dispatcher. When the workers fall
//! behind, that channel fills and publishing clients wait: backpressure, not loss.
//!
//! Not here: persistence (sessions and queued messages live in memory and end with the
//! process), retained messages (rmqtt keeps them only with its retainer plugin),
//! clustering and TLS.

pub mod acl;
mod config;
mod hooks;
pub mod reason;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::Arc;

use anyhow::Context;
use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatcher;
use crate::event::Message;
use crate::ops::metrics::Metrics;
use crate::rules::ruleset::Rules;

pub use acl::Acl;
pub use config::{BrokerConfig, DEFAULT_BROKER_ADDR};
pub(crate) use config::{RawBroker, parse_listen_addr};

/// Events waiting between the hooks and the dispatcher.
const EVENT_CHANNEL: usize = 4096;

/// A running embedded broker.
pub struct Broker {
    local_addr: SocketAddr,
    scx: ServerContext,
    server: tokio::task::JoinHandle<()>,
    forwarder: tokio::task::JoinHandle<()>,
}

impl Broker {
    /// Binds the listener and starts serving. Events go to `dispatcher` until `shutdown`
    /// is cancelled.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound or a setting is out of range.
    pub async fn start(
        config: BrokerConfig,
        rules: Arc<Rules>,
        dispatcher: Dispatcher,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Broker> {
        let listener = listener_options(&config)?
            .bind()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("listener address")?;
        let listener = listener
            .tcp()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context("cannot start the TCP listener")?;

        let scx = ServerContext::new()
            // rmqtt's CPU-load check refuses connections when the machine is busy;
            // wasmrule's own workers make it busy by design.
            .busy_check_enable(false)
            .build()
            .await;

        let (tx, rx) = mpsc::channel::<Message>(EVENT_CHANNEL);
        let handler = hooks::EventHooks::new(
            config.acl.clone(),
            config.max_qos,
            rules,
            tx,
            metrics.clone(),
        );
        let register = scx.extends.hook_mgr().register();
        for typ in hooks::TYPES {
            register
                .add_priority(typ, 1000, Box::new(handler.clone()))
                .await;
        }
        register.start().await;

        let server_scx = scx.clone();
        let server = tokio::spawn(async move {
            let server = MqttServer::new(server_scx)
                .listener_by_id(listener, local_addr.port())
                .build();
            if let Err(e) = server.run().await {
                tracing::error!("embedded broker stopped: {e}");
            }
        });

        let mut forwarder = Forwarder {
            events: rx,
            dispatcher: Some(dispatcher),
            metrics,
            shutdown,
            register,
        };
        let forwarder = tokio::spawn(async move { forwarder.run().await });

        tracing::info!(addr = %local_addr, "embedded MQTT broker listening");
        Ok(Broker {
            local_addr,
            scx: scx.clone(),
            server,
            forwarder,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker's context, for taking rules' MQTT actions (`sink/mqtt/embedded.rs`).
    pub fn context(&self) -> ServerContext {
        self.scx.clone()
    }

    /// Waits for the forwarder to hand over what it holds (after the shutdown token is
    /// cancelled), then stops accepting connections.
    pub async fn stop(self) {
        let _ = self.forwarder.await;
        self.server.abort();
        let _ = self.server.await;
    }
}

/// The listener's settings from the config: limits, QoS, anonymous clients (the ACL
/// decides, `acl.rs`).
fn listener_options(config: &BrokerConfig) -> anyhow::Result<Builder> {
    let max_qos = match config.max_qos {
        0 => rmqtt::types::QoS::AtMostOnce,
        1 => rmqtt::types::QoS::AtLeastOnce,
        _ => rmqtt::types::QoS::ExactlyOnce,
    };
    let inflight =
        NonZeroU16::new(config.max_inflight).context("broker.max_inflight must be at least 1")?;
    Ok(Builder::new()
        .name("wasmrule")
        .laddr(config.listen)
        .max_packet_size(config.max_packet_size)
        .max_qos_allowed(max_qos)
        .max_inflight(inflight)
        .max_mqueue_len(config.max_mqueue_len)
        .max_connections(config.max_connections)
        .max_session_expiry_interval(config.session_expiry)
        .allow_anonymous(true))
}

/// The task that passes events from the hooks to the dispatcher.
struct Forwarder {
    /// From the hooks; bounded, so that publishing clients wait when workers fall
    /// behind.
    events: mpsc::Receiver<Message>,
    /// `None` once forwarding stopped, so that the workers can drain.
    dispatcher: Option<Dispatcher>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// The hooks' registration, stopped when forwarding ends.
    register: Box<dyn rmqtt::hook::Register>,
}

impl Forwarder {
    /// Forwards until shutdown or until the workers are gone.
    async fn run(&mut self) {
        if let Some(dispatcher) = &self.dispatcher {
            loop {
                let m = tokio::select! {
                    m = self.events.recv() => m,
                    () = self.shutdown.cancelled() => None,
                };
                let Some(m) = m else { break };
                Metrics::add(&self.metrics.messages_received, 1);
                Metrics::add(&self.metrics.bytes_received, m.payload.len() as u64);
                if dispatcher.dispatch(m).await.is_err() {
                    break;
                }
            }
        }
        // Events already handed over finish; later hook calls find the channel
        // closed and are dropped (the process is stopping).
        self.dispatcher = None;
        self.register.stop().await;
    }
}
