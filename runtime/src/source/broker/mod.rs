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
//! With a TLS listener (`[broker] tls_listen`, `--embedded-broker-tls`), rmqtt's own
//! (rustls) serves beside the plain one; with `tls_client_ca_file` it requires client
//! certificates and takes the certificate's common name as the username.
//!
//! With `broker.session_dir`, rmqtt's session storage plugin keeps persistent sessions
//! (subscriptions, queued and in-flight QoS 1/2 messages) in a sled database there and
//! restores them at start; without it they live in memory and end with the process.
//!
//! Retained messages are kept in memory (`retain.rs`), or by rules with
//! `broker.retained = "rules"`.
//!
//! Not here: clustering.

pub mod acl;
mod auth;
mod config;
mod hooks;
pub mod reason;
mod retain;
mod shared;

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
pub use config::{BrokerConfig, BrokerTls, DEFAULT_BROKER_ADDR, Retained};
pub(crate) use config::{RawBroker, parse_listen_addr};

/// Events waiting between the hooks and the dispatcher.
const EVENT_CHANNEL: usize = 4096;

/// How long a stop waits for the session store's last writes (sled flushes every 500 ms).
const SESSION_STORE_SETTLE: std::time::Duration = std::time::Duration::from_millis(1500);

/// rmqtt's session storage plugin, by the name its configuration is looked up under.
const SESSION_PLUGIN: &str = "rmqtt-session-storage";

/// The session store's configuration (the plugin's TOML): sled in `dir`, created if
/// missing, with a 16 MiB cache. What it holds is bounded by the broker's limits:
/// `max_mqueue_len` messages per session, kept until the session expires.
fn session_store_config(dir: &std::path::Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("broker.session_dir: cannot create {}", dir.display()))?;
    let path = dir
        .to_str()
        .with_context(|| format!("broker.session_dir: {} is not UTF-8", dir.display()))?;
    Ok(format!(
        "storage.type = \"sled\"\nstorage.sled.path = {path:?}\nstorage.sled.cache_capacity = \"16M\"\n"
    ))
}

/// A running embedded broker.
pub struct Broker {
    local_addr: SocketAddr,
    scx: ServerContext,
    tls_addr: Option<SocketAddr>,
    /// Sessions are stored on disk (`broker.session_dir`).
    session_store: bool,
    server: tokio::task::JoinHandle<()>,
    forwarder: tokio::task::JoinHandle<()>,
    /// Sweeps expired retained messages.
    sweeper: tokio::task::JoinHandle<()>,
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
        let tls_listener = match &config.tls {
            Some(tls) => Some(tls_listener(&config, tls)?),
            None => None,
        };
        let tls_addr = tls_listener.as_ref().map(|(_, addr)| *addr);

        let mut scx = ServerContext::new()
            // rmqtt's CPU-load check refuses connections when the machine is busy;
            // wasmrule's own workers make it busy by design.
            .busy_check_enable(false);
        if let Some(dir) = &config.session_dir {
            scx = scx.plugins_config_map_add(SESSION_PLUGIN, session_store_config(dir)?);
        }
        let scx = scx.build().await;
        let retained = retain::RetainStore::new(config.retained, config.max_retained_messages);
        *scx.extends.retain_mut().await = Box::new(retained.clone());
        let sweeper = tokio::spawn(async move {
            let mut every = tokio::time::interval(retain::SWEEP_EVERY);
            loop {
                every.tick().await;
                let n = retained.sweep().await;
                if n > 0 {
                    tracing::debug!(expired = n, "retained messages expired");
                }
            }
        });
        // `$share/<group>/<filter>` from the broker's clients (shared.rs).
        *scx.extends.shared_subscription_mut().await = Box::new(shared::RoundRobin::default());

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
        let auth = auth::AuthHook {
            passwords: config.passwords.clone(),
            certificate_listener: tls_addr
                .filter(|_| {
                    config
                        .tls
                        .as_ref()
                        .is_some_and(|t| t.client_ca_file.is_some())
                })
                .map(|a| a.port()),
        };
        register
            .add_priority(rmqtt::hook::Type::ClientAuthenticate, 1000, Box::new(auth))
            .await;
        register.start().await;
        if let Some(dir) = &config.session_dir {
            // Restores the sessions stored before a restart, then stores them as they
            // change; started before the listeners accept anyone.
            rmqtt_session_storage::register(&scx, true, false)
                .await
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .with_context(|| {
                    format!(
                        "cannot open the broker's session store in {}",
                        dir.display()
                    )
                })?;
        }

        let server_scx = scx.clone();
        let server = tokio::spawn(async move {
            let mut server =
                MqttServer::new(server_scx).listener_by_id(listener, local_addr.port());
            if let Some((tls, addr)) = tls_listener {
                server = server.listener_by_id(tls, addr.port());
            }
            let server = server.build();
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
        if let Some(addr) = tls_addr {
            tracing::info!(%addr, "embedded MQTT broker listening with TLS");
        }
        Ok(Broker {
            local_addr,
            scx: scx.clone(),
            tls_addr,
            session_store: config.session_dir.is_some(),
            server,
            forwarder,
            sweeper,
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

    /// The address of the TLS listener, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Waits for the forwarder to hand over what it holds (after the shutdown token is
    /// cancelled), then stops accepting connections.
    pub async fn stop(self) {
        let _ = self.forwarder.await;
        self.sweeper.abort();
        self.server.abort();
        let _ = self.server.await;
        if self.session_store {
            // The store writes in the background and sled flushes every 500 ms: give
            // the last writes time to reach the disk before the process ends.
            tokio::time::sleep(SESSION_STORE_SETTLE).await;
        }
    }
}

/// The listener's settings from the config: limits, QoS, anonymous clients (the
/// password file decides the others, `auth.rs`; the ACL what they may do, `acl.rs`).
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
        // A restart binds the same port while the last run's connections linger in
        // TIME_WAIT.
        .reuseaddr(Some(true))
        .max_packet_size(config.max_packet_size)
        .max_qos_allowed(max_qos)
        .max_inflight(inflight)
        .max_mqueue_len(config.max_mqueue_len)
        .max_connections(config.max_connections)
        .max_session_expiry_interval(config.session_expiry)
        .allow_anonymous(config.allow_anonymous))
}

/// The TLS listener, bound, and its address: the plain listener's settings with rmqtt's
/// TLS (the files were checked with the config, `BrokerConfig::check_tls`).
fn tls_listener(
    config: &BrokerConfig,
    tls: &BrokerTls,
) -> anyhow::Result<(rmqtt::net::Listener, SocketAddr)> {
    // rmqtt-net brings its own crypto provider; wasmrule's must be the process default
    // either way (`tls.rs`).
    crate::tls::provider();
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let require_certificates = tls.client_ca_file.is_some();
    let listener = listener_options(config)?
        .name("wasmrule/tls")
        .laddr(tls.listen)
        .tls_cert(path(&tls.cert_file))
        .tls_key(path(&tls.key_file))
        .tls_client_ca_certs(path(&tls.client_ca_file))
        .tls_cross_certificate(require_certificates)
        .cert_cn_as_username(require_certificates)
        .bind()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot listen on {}", tls.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("TLS listener address")?;
    let listener = listener
        .tls()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("cannot start the TLS listener")?;
    Ok((listener, addr))
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
