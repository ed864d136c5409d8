//! `[redis]`: where to write, as whom, and how much per pipeline. The section as written
//! ([`RawRedis`]), its defaults and checks, and the validated [`RedisConfig`] the writer
//! takes, which turns into the client's connection settings and, for logs, a URL without
//! the password; TLS (`rediss://`) files are read and checked here too (`tls.rs`), so a
//! bad one is named at startup. The spill's own section (`[redis.spill]`) is in `sink/spill/config.rs`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::config::check::positive;
use crate::sink::spill::{RawSpill, SpillConfig};
use crate::tls::{ClientTls, TlsFiles};

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Which kind of Redis deployment the writer talks to (`redis.mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    /// One server, at `url`.
    Single,
    /// A Redis Cluster, found through these seed nodes (`redis://host:port` each).
    Cluster { nodes: Vec<String> },
    /// The master named `master`, as these sentinels (`redis://host:port` each) report
    /// it.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// Where to write commands. Its `Debug` shows no password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]`, `rediss://` (TLS) or
    /// `unix:///path`; in the other modes, how the nodes were given (for logs).
    pub url: String,
    /// Single server, cluster or sentinel.
    pub mode: RedisMode,
    /// The ACL user, over the URL's.
    pub username: Option<String>,
    /// The password, over the URL's (from `redis.password` or `redis.password_file`).
    pub password: Option<String>,
    /// Most commands sent in one pipeline.
    pub max_pipeline: usize,
    /// A flush is confirmed only once this many replicas have it (`WAIT`), within
    /// the timeout; else it is sent again. `None`: the master's reply confirms.
    pub wait_replicas: Option<(u32, std::time::Duration)>,
    /// The on-disk spill for QoS 0 batches while Redis is unreachable; `None` is off.
    pub spill: Option<SpillConfig>,
    /// The TLS files (`tls_ca_file`, `tls_cert_file`, `tls_key_file`).
    pub tls_files: TlsFiles,
    /// TLS, read from `tls_files` once the URL is final ([`RedisConfig::load_tls`]).
    pub tls: Option<ClientTls>,
}

/// `[redis]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    url: Option<String>,
    mode: Option<String>,
    nodes: Option<Vec<String>>,
    sentinels: Option<Vec<String>>,
    master_name: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    max_pipeline: Option<usize>,
    wait_replicas: Option<u32>,
    wait_timeout_ms: Option<u64>,
    spill: Option<RawSpill>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

impl RawRedis {
    /// Validates the section and fills in defaults.
    pub(crate) fn build(self) -> anyhow::Result<RedisConfig> {
        let url = self.url.unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        let (url, mode) = parse_url_mode(&url).context("redis.url")?;
        let mode = build_mode(
            mode,
            &url,
            self.mode.as_deref(),
            self.nodes,
            self.sentinels,
            self.master_name,
        )?;
        let password =
            match (self.password, self.password_file) {
                (Some(_), Some(_)) => {
                    bail!("redis.password and redis.password_file: set one, not both")
                }
                (Some(p), None) => Some(p),
                (None, Some(file)) => Some(read_password(&file).with_context(|| {
                    format!("redis.password_file: cannot read {}", file.display())
                })?),
                (None, None) => None,
            };
        let tls_files = TlsFiles {
            ca_file: self.tls_ca_file,
            cert_file: self.tls_cert_file,
            key_file: self.tls_key_file,
        };
        Ok(RedisConfig {
            tls: None,
            tls_files,
            url,
            username: self.username,
            password,
            max_pipeline: positive(self.max_pipeline.unwrap_or(1024), "redis.max_pipeline")?,
            wait_replicas: wait_replicas(self.wait_replicas, self.wait_timeout_ms, &mode)?,
            mode,
            spill: self.spill.map(RawSpill::build).transpose()?,
        })
    }
}

/// The file's first line: the password, without its line ending.
fn read_password(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("the file is empty");
    }
    Ok(line.to_owned())
}

impl RedisConfig {
    /// Points the writer at `url` (`--redis-url`).
    ///
    /// # Errors
    ///
    /// As [`check_redis_url`].
    pub(crate) fn set_url(&mut self, url: &str) -> anyhow::Result<()> {
        let (url, mode) = parse_url_mode(url)?;
        self.mode = match (mode, &self.mode) {
            (Some(m), _) => m,
            (None, RedisMode::Single) => RedisMode::Single,
            // A plain URL in cluster mode: the one seed node.
            (None, RedisMode::Cluster { .. }) => RedisMode::Cluster {
                nodes: node_urls(vec![url.clone()], &url)?,
            },
            (None, RedisMode::Sentinel { .. }) => bail!(
                "with redis.mode = \"sentinel\" give the sentinels as \
                 redis+sentinel://host:port[,host:port...]/<master name>"
            ),
        };
        self.url = url;
        Ok(())
    }

    /// The connection settings of each cluster seed node or sentinel, with
    /// `username` and `password` for the cluster's nodes (sentinels take theirs from
    /// their URLs).
    ///
    /// # Errors
    ///
    /// When a URL does not parse (checked when the config was built).
    pub(crate) fn node_infos(&self) -> redis::RedisResult<Vec<redis::ConnectionInfo>> {
        let (urls, auth) = match &self.mode {
            RedisMode::Single => (std::slice::from_ref(&self.url), true),
            RedisMode::Cluster { nodes } => (&nodes[..], true),
            RedisMode::Sentinel { sentinels, .. } => (&sentinels[..], false),
        };
        urls.iter()
            .map(|u| {
                let info = redis::IntoConnectionInfo::into_connection_info(u.as_str())?;
                let settings = info.redis_settings().clone().set_skip_set_lib_name();
                let settings = if auth {
                    self.with_auth(settings)
                } else {
                    settings
                };
                Ok(info.set_redis_settings(settings))
            })
            .collect()
    }

    /// The settings for the master the sentinels name: `username`, `password`, no
    /// `CLIENT SETINFO`.
    pub(crate) fn master_settings(&self) -> redis::RedisConnectionInfo {
        self.with_auth(redis::RedisConnectionInfo::default().set_skip_set_lib_name())
    }

    /// `settings` with `username` and `password` over them.
    fn with_auth(&self, mut settings: redis::RedisConnectionInfo) -> redis::RedisConnectionInfo {
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        settings
    }

    /// Reads the TLS files for a `rediss://` URL (once the command line had its say);
    /// TLS files with another URL are a mistake worth naming.
    ///
    /// # Errors
    ///
    /// As [`ClientTls::load`], and when TLS files are set for a plain URL.
    pub(crate) fn load_tls(&mut self) -> anyhow::Result<()> {
        self.tls = None;
        if self.mode != RedisMode::Single {
            if self.tls_files.any() {
                bail!(
                    "redis.tls_*_file: TLS is not supported with redis.mode = cluster or \
                     sentinel yet"
                );
            }
            return Ok(());
        }
        if self.url.starts_with("rediss://") {
            self.tls = Some(ClientTls::load(&self.tls_files, "redis")?);
        } else if self.tls_files.any() {
            bail!(
                "redis.tls_*_file is set but {:?} is not a rediss:// URL",
                self.display_url()
            );
        }
        Ok(())
    }

    /// The client for these settings: [`RedisConfig::connection_info`], over TLS with
    /// the configured CA (else the system's) and client certificate for `rediss://`.
    ///
    /// # Errors
    ///
    /// When the URL does not parse (checked when the config was built).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        let info = self.connection_info()?;
        let Some(tls) = &self.tls else {
            return redis::Client::open(info);
        };
        // redis-rs builds its rustls configuration from the process default provider.
        crate::tls::provider();
        let certificates = redis::TlsCertificates {
            client_tls: tls.client_pem.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: tls.ca_pem.clone(),
        };
        redis::Client::build_with_tls(info, certificates)
    }
    /// The client's connection settings: the URL's, with `username` and `password` over
    /// them, and without the `CLIENT SETINFO` the client would send on connecting (a
    /// Redis user limited to wasmrule's commands may not run it; docs/security.md).
    ///
    /// # Errors
    ///
    /// When the URL does not parse (checked when the config was built).
    pub fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        let url = match &self.mode {
            RedisMode::Single => self.url.as_str(),
            // Redis-triggered rules (`source/redis`) subscribe on one node: pub/sub
            // reaches every node of a cluster.
            RedisMode::Cluster { nodes } => nodes[0].as_str(),
            // The master's address comes from the sentinels, at connection time: only
            // the writer asks them (connection.rs).
            RedisMode::Sentinel { .. } => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "Redis-triggered rules are not supported with redis.mode = \"sentinel\" yet",
                )));
            }
        };
        let info = redis::IntoConnectionInfo::into_connection_info(url)?;
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        Ok(info.set_redis_settings(self.with_auth(settings)))
    }

    /// The URL for logs and errors: with the user, never the password (`***` in its
    /// place when there is one).
    pub fn display_url(&self) -> String {
        match &self.mode {
            RedisMode::Single => {}
            RedisMode::Cluster { nodes } => {
                let nodes: Vec<String> = nodes.iter().map(|n| redact_url(n)).collect();
                return format!("cluster {}", nodes.join(","));
            }
            RedisMode::Sentinel { sentinels, master } => {
                let s: Vec<String> = sentinels.iter().map(|n| redact_url(n)).collect();
                return format!("master {master:?} of sentinels {}", s.join(","));
            }
        }
        let Some(mut url) = redis::parse_redis_url(&self.url) else {
            return mask_userinfo(&self.url);
        };
        if let Some(user) = &self.username {
            let _ = url.set_username(user);
        }
        if url.password().is_some() || self.password.is_some() {
            let _ = url.set_password(Some("***"));
        }
        url.to_string()
    }
}

/// `scheme://user:***@rest` for a URL that does not parse: whatever stands between
/// the first `:` after `://` and the last `@` is hidden.
fn mask_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.display_url())
            .field("mode", &self.mode)
            .field("max_pipeline", &self.max_pipeline)
            .field("spill", &self.spill)
            .finish_non_exhaustive()
    }
}

/// A URL and the mode it implies: `redis+cluster://host:port[,host:port...]` (the seed
/// nodes) or `redis+sentinel://host:port[,host:port...]/<master name>`, turned into
/// `redis://` URLs; any other URL as [`check_redis_url`] takes it, implying nothing.
///
/// # Errors
///
/// When a URL is malformed.
fn parse_url_mode(url: &str) -> anyhow::Result<(String, Option<RedisMode>)> {
    let (rest, sentinel) = if let Some(r) = url.strip_prefix("redis+cluster://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("redis+sentinel://") {
        (r, true)
    } else {
        check_redis_url(url)?;
        return Ok((url.to_owned(), None));
    };
    if rest.contains('@') {
        bail!(
            "{:?}: give credentials in redis.username and redis.password, not in a \
             redis+cluster:// or redis+sentinel:// URL",
            redact_url(url)
        );
    }
    let (hosts, master) = match rest.split_once('/') {
        Some((h, m)) => (h, Some(m)),
        None => (rest, None),
    };
    let nodes = node_urls(hosts.split(',').map(str::to_owned).collect(), url)?;
    let mode = match (sentinel, master) {
        (false, None | Some("")) => RedisMode::Cluster { nodes },
        (false, Some(_)) => bail!("{url:?}: a redis+cluster:// URL has no path"),
        (true, Some(m)) if !m.is_empty() => RedisMode::Sentinel {
            sentinels: nodes,
            master: m.to_owned(),
        },
        (true, _) => bail!(
            "{url:?}: name the master: redis+sentinel://host:port[,host:port...]/<master name>"
        ),
    };
    Ok((url.to_owned(), Some(mode)))
}

/// `host:port` or `redis://host:port` entries as checked `redis://` URLs.
fn node_urls(entries: Vec<String>, what: &str) -> anyhow::Result<Vec<String>> {
    if entries.is_empty() || entries.iter().any(|e| e.trim().is_empty()) {
        bail!("{:?}: an empty node address", redact_url(what));
    }
    entries
        .into_iter()
        .map(|e| {
            let e = e.trim();
            let u = if e.contains("://") {
                e.to_owned()
            } else {
                format!("redis://{e}")
            };
            if !u.starts_with("redis://") {
                bail!(
                    "{:?}: cluster nodes and sentinels are redis://host:port (TLS is not \
                     supported in these modes yet)",
                    redact_url(&u)
                );
            }
            check_redis_url(&u)?;
            Ok(u)
        })
        .collect()
}

/// `redis.mode` and the keys that go with it, over what the URL implied.
fn build_mode(
    implied: Option<RedisMode>,
    url: &str,
    mode: Option<&str>,
    nodes: Option<Vec<String>>,
    sentinels: Option<Vec<String>>,
    master_name: Option<String>,
) -> anyhow::Result<RedisMode> {
    let named = match mode {
        None => None,
        Some(m @ ("single" | "cluster" | "sentinel")) => Some(m),
        Some(other) => {
            bail!("redis.mode: {other:?} is not \"single\", \"cluster\" or \"sentinel\"")
        }
    };
    let kind = match (&implied, named) {
        (Some(RedisMode::Cluster { .. }), None | Some("cluster")) => "cluster",
        (Some(RedisMode::Sentinel { .. }), None | Some("sentinel")) => "sentinel",
        (Some(_), Some(m)) => bail!("redis.mode: {m:?} but redis.url is {url:?}"),
        (None | Some(RedisMode::Single), m) => m.unwrap_or("single"),
    };
    let (n, s, m) = (nodes.is_some(), sentinels.is_some(), master_name.is_some());
    match kind {
        "single" if n || s || m => bail!(
            "redis.nodes, redis.sentinels and redis.master_name need redis.mode = \
             \"cluster\" or \"sentinel\""
        ),
        "single" => Ok(RedisMode::Single),
        "cluster" if s || m => {
            bail!("redis.sentinels and redis.master_name are for redis.mode = \"sentinel\"")
        }
        "cluster" => match (implied, nodes) {
            (Some(_), Some(_)) => bail!("redis.nodes: the seed nodes are already in redis.url"),
            (Some(mode), None) => Ok(mode),
            (None, Some(nodes)) => Ok(RedisMode::Cluster {
                nodes: node_urls(nodes, "redis.nodes").context("redis.nodes")?,
            }),
            // The URL's server is the one seed.
            (None, None) => Ok(RedisMode::Cluster {
                nodes: node_urls(vec![url.to_owned()], url).context("redis.url")?,
            }),
        },
        _ if n => bail!("redis.nodes is for redis.mode = \"cluster\""),
        _ => match (implied, sentinels, master_name) {
            (Some(mode), None, None) => Ok(mode),
            (Some(_), _, _) => {
                bail!("redis.sentinels, redis.master_name: already given in redis.url")
            }
            (None, Some(sentinels), Some(master)) if !master.is_empty() => {
                Ok(RedisMode::Sentinel {
                    sentinels: node_urls(sentinels, "redis.sentinels")
                        .context("redis.sentinels")?,
                    master,
                })
            }
            (None, _, _) => bail!(
                "redis.mode = \"sentinel\" needs redis.sentinels (their addresses) and \
                 redis.master_name"
            ),
        },
    }
}

/// `redis.wait_replicas` and `redis.wait_timeout_ms` (default 1000).
fn wait_replicas(
    replicas: Option<u32>,
    timeout_ms: Option<u64>,
    mode: &RedisMode,
) -> anyhow::Result<Option<(u32, std::time::Duration)>> {
    let Some(n) = replicas.filter(|n| *n > 0) else {
        if timeout_ms.is_some() {
            bail!("redis.wait_timeout_ms needs redis.wait_replicas");
        }
        return Ok(None);
    };
    if matches!(mode, RedisMode::Cluster { .. }) {
        bail!("redis.wait_replicas: not supported with redis.mode = \"cluster\" yet");
    }
    let ms = positive(timeout_ms.unwrap_or(1000), "redis.wait_timeout_ms")?;
    Ok(Some((n, std::time::Duration::from_millis(ms))))
}

/// A `redis://` or `unix://` URL the client accepts.
///
/// # Errors
///
/// When it has another scheme or the client cannot parse it.
pub(crate) fn check_redis_url(url: &str) -> anyhow::Result<()> {
    if !["redis://", "rediss://", "unix://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        bail!(
            "{:?}: expected redis://host:port[/db], rediss://host:port[/db] (TLS) or \
             unix:///path",
            redact_url(url)
        );
    }
    if url.starts_with("rediss://") && url.contains("#insecure") {
        bail!(
            "{:?}: #insecure would turn certificate checks off; give the server's CA in \
             redis.tls_ca_file instead",
            redact_url(url)
        );
    }
    if let Err(e) = redis::Client::open(url) {
        bail!("{:?}: {e}", redact_url(url));
    }
    Ok(())
}

/// `url` for logs and errors: its password, if any, as `***`.
pub(crate) fn redact_url(url: &str) -> String {
    RedisConfig {
        url: url.to_owned(),
        mode: RedisMode::Single,
        username: None,
        password: None,
        max_pipeline: 1,
        wait_replicas: None,
        spill: None,
        tls_files: TlsFiles::default(),
        tls: None,
    }
    .display_url()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(toml: &str) -> anyhow::Result<RedisConfig> {
        toml::from_str::<RawRedis>(toml)?.build()
    }

    #[test]
    fn credentials_from_the_url_the_keys_or_a_file_never_shown() {
        let c = redis(r#"url = "redis://app:pw1@127.0.0.1:7000/2""#).unwrap();
        assert_eq!(c.display_url(), "redis://app:***@127.0.0.1:7000/2");
        let s = c.connection_info().unwrap();
        let s = s.redis_settings();
        assert_eq!((s.username(), s.password()), (Some("app"), Some("pw1")));
        assert!(s.skip_set_lib_name(), "no CLIENT SETINFO");
        assert!(!format!("{c:?}").contains("pw1"), "{c:?}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw2\n").unwrap();
        let c = redis(&format!(
            "url = \"redis://127.0.0.1:7000\"\nusername = \"wasmrule\"\npassword_file = {:?}",
            file.display().to_string()
        ))
        .unwrap();
        let info = c.connection_info().unwrap();
        let s = info.redis_settings();
        assert_eq!(
            (s.username(), s.password()),
            (Some("wasmrule"), Some("pw2"))
        );
        assert_eq!(c.display_url(), "redis://wasmrule:***@127.0.0.1:7000");
        assert!(!format!("{c:?}").contains("pw2"));

        let c = redis("username = \"u\"\npassword = \"pw3\"").unwrap();
        assert_eq!(
            c.connection_info().unwrap().redis_settings().password(),
            Some("pw3")
        );
        assert!(!c.display_url().contains("pw3"));
    }

    #[test]
    fn password_errors_name_the_key_not_the_password() {
        let both = redis("password = \"pw4\"\npassword_file = \"/x\"").unwrap_err();
        assert!(format!("{both:#}").contains("set one, not both"));
        let missing = redis("password_file = \"/nonexistent/pw\"").unwrap_err();
        assert!(
            format!("{missing:#}").contains("redis.password_file"),
            "{missing:#}"
        );
        let insecure = check_redis_url("rediss://h:6380/#insecure").unwrap_err();
        assert!(format!("{insecure:#}").contains("redis.tls_ca_file"));
        let bad = check_redis_url("redis://u:pw5@[bad").unwrap_err();
        assert!(!format!("{bad:#}").contains("pw5"), "{bad:#}");
    }

    #[test]
    fn modes_from_keys_or_urls() {
        let c = redis("").unwrap();
        assert_eq!(c.mode, RedisMode::Single);
        let c =
            redis("mode = \"cluster\"\nnodes = [\"127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]")
                .unwrap();
        assert_eq!(
            c.mode,
            RedisMode::Cluster {
                nodes: vec![
                    "redis://127.0.0.1:7000".into(),
                    "redis://127.0.0.1:7001".into()
                ]
            }
        );
        assert_eq!(c.node_infos().unwrap().len(), 2);
        let c = redis("url = \"redis+cluster://127.0.0.1:7000,127.0.0.1:7001\"").unwrap();
        assert!(matches!(&c.mode, RedisMode::Cluster { nodes } if nodes.len() == 2));
        let c =
            redis("mode = \"sentinel\"\nsentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"m\"")
                .unwrap();
        assert_eq!(
            c.mode,
            RedisMode::Sentinel {
                sentinels: vec!["redis://127.0.0.1:26379".into()],
                master: "m".into()
            }
        );
        let c = redis("url = \"redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/m\"").unwrap();
        assert!(
            matches!(&c.mode, RedisMode::Sentinel { sentinels, master } if sentinels.len() == 2 && master == "m")
        );

        let e = |t: &str| format!("{:#}", redis(t).unwrap_err());
        assert!(e("mode = \"clustre\"").contains("redis.mode: \"clustre\" is not"));
        assert!(e("mode = \"sentinel\"").contains("redis.sentinels"));
        assert!(e("nodes = [\"h:1\"]").contains("redis.mode"));
        assert!(e("url = \"redis+sentinel://h:1\"").contains("name the master"));
        assert!(e("url = \"redis+cluster://u:p@h:1\"").contains("redis.username"));
        assert!(e("mode = \"cluster\"\nnodes = [\"rediss://h:1\"]").contains("TLS"));
        assert!(e("mode = \"cluster\"\nurl = \"unix:///tmp/r.sock\"").contains("TLS"));

        let mut c = redis("mode = \"cluster\"\nnodes = [\"h:1\"]").unwrap();
        c.set_url("redis://h:2").unwrap();
        assert_eq!(
            c.mode,
            RedisMode::Cluster {
                nodes: vec!["redis://h:2".into()]
            }
        );
        c.set_url("redis://h:3").unwrap();
        let mut c = redis("").unwrap();
        c.set_url("redis+cluster://h:4").unwrap();
        assert!(matches!(c.mode, RedisMode::Cluster { .. }));
    }
}
