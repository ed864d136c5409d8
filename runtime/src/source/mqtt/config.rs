//! `[mqtt]`: where and how to connect to an MQTT broker. The section as written
//! ([`RawMqtt`]), its defaults and checks, and the validated [`MqttConfig`] the
//! connection uses; also the `mqtt://` / `mqtts://` URL grammar, which `--mqtt-url` and
//! `wasmrule simulate` (plain `mqtt://` only) share. TLS files are read and checked
//! here, when the config is built (`tls.rs`).

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::config::check::{check_qos, positive};
use crate::tls::{ClientTls, TlsFiles};

pub const DEFAULT_MQTT_URL: &str = "mqtt://127.0.0.1:1883";

/// Which MQTT protocol version to speak to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttProtocol {
    V311,
    V5,
}

/// Where and how to connect to the MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub protocol: MqttProtocol,
    /// QoS of wasmrule's subscriptions (0, 1 or 2).
    pub qos: u8,
    pub keep_alive: Duration,
    /// Largest packet accepted from the broker, in bytes.
    pub max_packet_size: u32,
    /// Start without a stored session. False keeps the session (subscriptions and
    /// queued QoS 1/2 messages) across disconnects and restarts.
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps the session after a disconnect.
    pub session_expiry: Duration,
    /// QoS 1/2 messages the broker may have in flight to wasmrule unacknowledged (MQTT 5
    /// Receive Maximum): the bound on work held in memory and on repeats after a crash.
    /// MQTT 5 also: the bound on the actions' publishes in flight to the broker.
    pub inflight: u16,
    /// The broker is EMQX: turn its client-event topics into broker events
    /// (`emqx.rs`, docs/events.md).
    pub emqx_events: bool,
    /// Subscribe as `$share/<group>/<filter>`: the broker splits the messages among
    /// the instances in the group (docs/scaling.md).
    pub share_group: Option<String>,
    /// The TLS files (`tls_ca_file`, `tls_cert_file`, `tls_key_file`).
    pub tls_files: TlsFiles,
    /// The URL is `mqtts://` or `ssl://`.
    pub tls_url: bool,
    /// TLS, read from `tls_files` once the URL is final ([`MqttConfig::load_tls`]).
    pub tls: Option<ClientTls>,
}

/// `[mqtt]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMqtt {
    url: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    protocol: Option<String>,
    qos: Option<u8>,
    keep_alive_secs: Option<u64>,
    max_packet_size: Option<u32>,
    clean_session: Option<bool>,
    session_expiry_secs: Option<u32>,
    inflight: Option<u16>,
    emqx_events: Option<bool>,
    share_group: Option<String>,
    tls_ca_file: Option<std::path::PathBuf>,
    tls_cert_file: Option<std::path::PathBuf>,
    tls_key_file: Option<std::path::PathBuf>,
}

impl RawMqtt {
    /// Validates the section and fills in defaults. `id_chosen`: a client id is given
    /// on the command line, which keeps the session by default as one in the file does.
    pub(crate) fn build(self, id_chosen: bool) -> anyhow::Result<MqttConfig> {
        let m = self;
        let url = m.url.as_deref().unwrap_or(DEFAULT_MQTT_URL);
        let u = parse_url(url).context("mqtt.url")?;
        let tls_files = TlsFiles {
            ca_file: m.tls_ca_file,
            cert_file: m.tls_cert_file,
            key_file: m.tls_key_file,
        };
        let protocol = match m.protocol.as_deref().unwrap_or("5") {
            "5" | "5.0" => MqttProtocol::V5,
            "3.1.1" | "4" => MqttProtocol::V311,
            other => bail!("mqtt.protocol: {other:?} is not \"3.1.1\" or \"5\""),
        };
        // A session is only worth keeping under a stable client id: by default it is
        // kept when the id is chosen (file or --client-id), not for the generated one.
        let id_chosen = m.client_id.is_some() || id_chosen;
        let client_id = match m.client_id {
            Some(id) => check_client_id(&id).context("mqtt.client_id")?,
            None => format!("wasmrule-{}", std::process::id()),
        };
        let keep_alive = m.keep_alive_secs.unwrap_or(30);
        if !(5..=65535).contains(&keep_alive) {
            bail!("mqtt.keep_alive_secs: {keep_alive} is outside 5..=65535");
        }
        Ok(MqttConfig {
            tls_url: u.tls,
            tls: None,
            tls_files,
            host: u.host,
            port: u.port,
            client_id,
            username: m.username.or(u.user),
            password: m.password.or(u.password),
            protocol,
            qos: check_qos(m.qos.unwrap_or(1)).context("mqtt.qos")?,
            keep_alive: Duration::from_secs(keep_alive),
            max_packet_size: positive(
                m.max_packet_size.unwrap_or(1 << 20),
                "mqtt.max_packet_size",
            )?,
            clean_session: m.clean_session.unwrap_or(!id_chosen),
            session_expiry: Duration::from_secs(m.session_expiry_secs.unwrap_or(3600).into()),
            inflight: positive(m.inflight.unwrap_or(1000), "mqtt.inflight")?,
            emqx_events: m.emqx_events.unwrap_or(false),
            share_group: m
                .share_group
                .map(|g| check_share_group(&g))
                .transpose()
                .context("mqtt.share_group")?,
        })
    }
}

impl MqttConfig {
    /// Points the connection at `url` (`--mqtt-url`); user and password in the URL
    /// replace the configured ones.
    ///
    /// # Errors
    ///
    /// As [`parse_mqtt_url`].
    pub(crate) fn set_url(&mut self, url: &str) -> anyhow::Result<()> {
        let u = parse_url(url)?;
        self.tls_url = u.tls;
        self.host = u.host;
        self.port = u.port;
        if u.user.is_some() {
            self.username = u.user;
            self.password = u.password;
        }
        Ok(())
    }
}

impl MqttConfig {
    /// Reads the TLS files for an `mqtts://` URL (once the command line had its say);
    /// TLS files with an `mqtt://` URL are a mistake worth naming.
    ///
    /// # Errors
    ///
    /// As [`ClientTls::load`], and when TLS files are set for a plain URL.
    pub(crate) fn load_tls(&mut self) -> anyhow::Result<()> {
        self.tls = None;
        if self.tls_url {
            self.tls = Some(ClientTls::load(&self.tls_files, "mqtt")?);
        } else if self.tls_files.any() {
            bail!(
                "mqtt.tls_*_file is set but the broker URL is not mqtts:// (mqtt://{}:{})",
                self.host,
                self.port
            );
        }
        Ok(())
    }
}

/// A client id the broker will take: 1 to 256 bytes without NUL or topic wildcards.
///
/// # Errors
///
/// When it is empty, too long, or holds NUL, `/`, `+` or `#`.
pub(crate) fn check_client_id(id: &str) -> anyhow::Result<String> {
    if id.is_empty() || id.len() > 256 || id.contains(['\0', '/', '+', '#']) {
        bail!("client id {id:?} must be 1 to 256 bytes without NUL, '/', '+' or '#'");
    }
    Ok(id.to_owned())
}

/// A share name the broker will take (MQTT 5 section 4.8.2, also what mosquitto and
/// EMQX accept over 3.1.1): 1 to 256 bytes without NUL, `/`, `+` or `#`.
///
/// # Errors
///
/// When it is empty, too long, or holds one of those characters.
pub(crate) fn check_share_group(group: &str) -> anyhow::Result<String> {
    if group.is_empty() || group.len() > 256 || group.contains(['\0', '/', '+', '#']) {
        bail!("share group {group:?} must be 1 to 256 bytes without NUL, '/', '+' or '#'");
    }
    Ok(group.to_owned())
}

type MqttUrlParts = (String, u16, Option<String>, Option<String>);

/// Parses a plain `mqtt://[user[:password]@]host[:port]` (`tcp://` also accepted), for
/// clients without TLS (`wasmrule simulate`).
///
/// # Errors
///
/// When the scheme is not `mqtt`/`tcp`, the host is missing, or the port is invalid.
pub fn parse_mqtt_url(url: &str) -> anyhow::Result<MqttUrlParts> {
    let u = parse_url(url)?;
    if u.tls {
        bail!("{url:?}: TLS is only for `wasmrule run`; use mqtt://");
    }
    Ok((u.host, u.port, u.user, u.password))
}

/// An MQTT URL, taken apart.
struct MqttUrl {
    /// `mqtts://` or `ssl://`.
    tls: bool,
    host: String,
    /// 1883 by default, 8883 with TLS.
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

/// Parses `mqtt://` or `mqtts://[user[:password]@]host[:port]` (`tcp://`, `ssl://`).
fn parse_url(url: &str) -> anyhow::Result<MqttUrl> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("{url:?}: expected mqtt://host:port or mqtts://host:port");
    };
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        "ws" | "wss" => {
            bail!("{url:?}: MQTT over WebSocket is not supported; use mqtt:// or mqtts://")
        }
        _ => bail!(
            "{url:?}: unknown scheme {scheme:?}; expected mqtt://host:port or mqtts://host:port"
        ),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        bail!("{url:?}: an MQTT URL has no path or query");
    }
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, pass) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (Some(u.to_owned()), None),
        },
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("{url:?}: unclosed '[' in host"))?;
        (h, tail.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        bail!("{url:?}: no host");
    }
    let port = match port {
        None if tls => 8883,
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => bail!("{url:?}: port {p:?} is not a number in 1..=65535"),
        },
    };
    Ok(MqttUrl {
        tls,
        host: host.to_owned(),
        port,
        user,
        password: pass,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls() {
        let p = |u: &str| parse_mqtt_url(u).map(|(h, p, u, _)| (h, p, u));
        assert_eq!(p("mqtt://h").unwrap(), ("h".into(), 1883, None));
        assert_eq!(p("tcp://h:1884/").unwrap(), ("h".into(), 1884, None));
        assert_eq!(
            p("mqtt://me@[::1]:9").unwrap(),
            ("::1".into(), 9, Some("me".into()))
        );
        for bad in [
            "h:1883",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtts://h",
            "mqtt://h/a",
        ] {
            assert!(parse_mqtt_url(bad).is_err(), "{bad}");
        }
        let u = parse_url("mqtts://broker.example").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "broker.example", 8883)
        );
        let u = parse_url("ssl://h:9").unwrap();
        assert_eq!((u.tls, u.port), (true, 9));
    }
}
