//! `[broker]`: the embedded broker's listener and limits. The section as written
//! ([`RawBroker`]), its defaults (in [`BrokerConfig::new`]) and checks, and the
//! validated [`BrokerConfig`] that `Broker::start` (`mod.rs`) takes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::acl::Acl;
use crate::config::check::{check_qos, positive};

pub const DEFAULT_BROKER_ADDR: &str = "127.0.0.1:1883";

/// How the embedded broker listens and what it allows.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// TCP address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Who may publish and subscribe where.
    pub acl: Acl,
    /// Largest MQTT packet accepted, in bytes; a client sending more is disconnected
    /// (`frame_too_large`).
    pub max_packet_size: u32,
    /// Highest QoS a client may publish or subscribe with (0, 1 or 2).
    pub max_qos: u8,
    /// QoS 1/2 messages in flight to one client.
    pub max_inflight: u16,
    /// Messages queued for one client before new ones are dropped (`queue_full`).
    pub max_mqueue_len: usize,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Longest session expiry a client may ask for (MQTT 5), and the expiry of MQTT
    /// 3.1.1 sessions with clean_session = false.
    pub session_expiry: Duration,
}

impl BrokerConfig {
    /// Defaults for a broker on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        BrokerConfig {
            listen,
            acl: Acl::default(),
            max_packet_size: 1 << 20,
            max_qos: 2,
            max_inflight: 16,
            max_mqueue_len: 1000,
            max_connections: 100_000,
            session_expiry: Duration::from_secs(2 * 3600),
        }
    }
}

/// `[broker]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBroker {
    listen: Option<String>,
    acl_file: Option<PathBuf>,
    max_packet_size: Option<u32>,
    max_qos: Option<u8>,
    max_inflight: Option<u16>,
    max_mqueue_len: Option<usize>,
    max_connections: Option<usize>,
    session_expiry_secs: Option<u64>,
}

impl RawBroker {
    /// Validates the section over the defaults; errors name the key.
    pub(crate) fn build(self) -> anyhow::Result<BrokerConfig> {
        let b = self;
        let listen = parse_listen_addr(b.listen.as_deref().unwrap_or(DEFAULT_BROKER_ADDR))
            .context("listen")?;
        let mut c = BrokerConfig::new(listen);
        if let Some(file) = &b.acl_file {
            c.acl = Acl::from_file(file)?;
        }
        if let Some(v) = b.max_packet_size {
            c.max_packet_size = positive(v, "max_packet_size")?;
        }
        if let Some(q) = b.max_qos {
            c.max_qos = check_qos(q).context("max_qos")?;
        }
        if let Some(v) = b.max_inflight {
            c.max_inflight = positive(v, "max_inflight")?;
        }
        if let Some(v) = b.max_mqueue_len {
            c.max_mqueue_len = positive(v, "max_mqueue_len")?;
        }
        if let Some(v) = b.max_connections {
            c.max_connections = positive(v, "max_connections")?;
        }
        if let Some(v) = b.session_expiry_secs {
            c.session_expiry = Duration::from_secs(v);
        }
        Ok(c)
    }
}

/// `host:port` for a listener; a bare port means loopback.
///
/// # Errors
///
/// When it is neither a port nor an address.
pub(crate) fn parse_listen_addr(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not an address like 127.0.0.1:1883"))
}
