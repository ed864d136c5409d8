//! `[broker]`: the embedded broker's listeners and limits. The section as written
//! ([`RawBroker`]), its defaults (in [`BrokerConfig::new`]) and checks, and the
//! validated [`BrokerConfig`] that `Broker::start` (`mod.rs`) takes. The TLS listener's
//! files ([`BrokerTls`]) are checked once the command line had its say
//! ([`BrokerConfig::check_tls`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::acl::Acl;
use super::auth::Passwords;
use crate::config::check::{check_qos, positive};
use crate::tls;

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
    /// A second listener, with TLS.
    pub tls: Option<BrokerTls>,
    /// Users and their password hashes (`password_file`); `None` checks no password.
    pub passwords: Option<std::sync::Arc<Passwords>>,
    /// Whether a client without a username may connect: by default yes without a
    /// password file, no with one.
    pub allow_anonymous: bool,
    /// Where sessions (subscriptions, queued and in-flight QoS 1/2 messages) are kept
    /// across restarts; `None` keeps them in memory only.
    pub session_dir: Option<PathBuf>,
    /// Who keeps retained messages.
    pub retained: Retained,
    /// Most retained messages kept in memory (`Retained::Memory`); a retained publish to
    /// a new topic beyond it is routed but not retained.
    pub max_retained_messages: usize,
}

impl Retained {
    /// `"memory"` or `"rules"`.
    ///
    /// # Errors
    ///
    /// Naming the value and what is expected.
    pub fn parse(s: &str) -> anyhow::Result<Retained> {
        match s {
            "memory" => Ok(Retained::Memory),
            "rules" => Ok(Retained::Rules),
            other => bail!(
                "{other:?}: expected \"memory\" (the broker keeps retained messages) or \
                 \"rules\" (rules keep them, as the EMQX 4 backend pack does in Redis)"
            ),
        }
    }
}

/// Who keeps the embedded broker's retained messages (`broker.retained`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retained {
    /// The broker, in memory (`"memory"`, the default): a retained publish is delivered
    /// to every later matching subscriber; lost at a restart.
    Memory,
    /// Rules (`"rules"`): the broker still takes retained publishes (and tells clients
    /// it does) but keeps none; rules store them and deliver them to new subscribers,
    /// as the EMQX 4 backend pack does in Redis (docs/emqx4-backend.md).
    Rules,
}

/// The embedded broker's TLS listener: its address, certificate and key, and the CA
/// whose client certificates it requires, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerTls {
    /// TCP address of the TLS listener (port 0 picks a free one).
    pub listen: SocketAddr,
    /// PEM file of the broker's certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM file of its private key.
    pub key_file: Option<PathBuf>,
    /// PEM file of the CAs whose client certificates are accepted. When set, a client
    /// must present one, and its certificate's common name (CN) is its username, for
    /// the ACL and in events, whatever the CONNECT packet says.
    pub client_ca_file: Option<PathBuf>,
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
            tls: None,
            passwords: None,
            allow_anonymous: true,
            session_dir: None,
            retained: Retained::Memory,
            max_retained_messages: 1_000_000,
        }
    }

    /// Checks the TLS listener's files: readable, a certificate chain, a private key
    /// that is the certificate's, a client CA file with certificates.
    ///
    /// # Errors
    ///
    /// Naming the key (`broker.tls_cert_file`, ...) and the file.
    pub(crate) fn check_tls(&self) -> anyhow::Result<()> {
        let Some(t) = &self.tls else { return Ok(()) };
        let (Some(cert_file), Some(key_file)) = (&t.cert_file, &t.key_file) else {
            bail!(
                "the embedded broker's TLS listener ({}) needs broker.tls_cert_file and \
                 broker.tls_key_file (--embedded-broker-cert, --embedded-broker-key)",
                t.listen
            );
        };
        let client_ca = t
            .client_ca_file
            .as_deref()
            .map(|f| (f, "broker.tls_client_ca_file"));
        tls::check_server_files(
            (cert_file, "broker.tls_cert_file"),
            (key_file, "broker.tls_key_file"),
            client_ca,
        )
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
    tls_listen: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    password_file: Option<PathBuf>,
    allow_anonymous: Option<bool>,
    session_dir: Option<PathBuf>,
    retained: Option<String>,
    max_retained_messages: Option<usize>,
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
        if let Some(file) = &b.password_file {
            c.passwords = Some(std::sync::Arc::new(Passwords::from_file(file)?));
        }
        c.allow_anonymous = b.allow_anonymous.unwrap_or(c.passwords.is_none());
        c.session_dir = b.session_dir;
        if let Some(r) = &b.retained {
            c.retained = Retained::parse(r).context("retained")?;
        }
        if let Some(v) = b.max_retained_messages {
            c.max_retained_messages = positive(v, "max_retained_messages")?;
        }
        match b.tls_listen {
            Some(addr) => {
                c.tls = Some(BrokerTls {
                    listen: parse_listen_addr(&addr).context("tls_listen")?,
                    cert_file: b.tls_cert_file,
                    key_file: b.tls_key_file,
                    client_ca_file: b.tls_client_ca_file,
                })
            }
            None if b.tls_cert_file.is_some() || b.tls_client_ca_file.is_some() => {
                bail!(
                    "tls_cert_file and tls_client_ca_file need tls_listen (the TLS listener's address)"
                )
            }
            None => {}
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
