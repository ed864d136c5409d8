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

/// Where to write commands. Its `Debug` shows no password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]`, `rediss://` (TLS) or
    /// `unix:///path`.
    pub url: String,
    /// The ACL user, over the URL's.
    pub username: Option<String>,
    /// The password, over the URL's (from `redis.password` or `redis.password_file`).
    pub password: Option<String>,
    /// Most commands sent in one pipeline.
    pub max_pipeline: usize,
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
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    max_pipeline: Option<usize>,
    spill: Option<RawSpill>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

impl RawRedis {
    /// Validates the section and fills in defaults.
    pub(crate) fn build(self) -> anyhow::Result<RedisConfig> {
        let url = self.url.unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        check_redis_url(&url).context("redis.url")?;
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
        check_redis_url(url)?;
        self.url = url.to_owned();
        Ok(())
    }

    /// Reads the TLS files for a `rediss://` URL (once the command line had its say);
    /// TLS files with another URL are a mistake worth naming.
    ///
    /// # Errors
    ///
    /// As [`ClientTls::load`], and when TLS files are set for a plain URL.
    pub(crate) fn load_tls(&mut self) -> anyhow::Result<()> {
        self.tls = None;
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
        let info = redis::IntoConnectionInfo::into_connection_info(self.url.as_str())?;
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        Ok(info.set_redis_settings(settings))
    }

    /// The URL for logs and errors: with the user, never the password (`***` in its
    /// place when there is one).
    pub fn display_url(&self) -> String {
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
            .field("max_pipeline", &self.max_pipeline)
            .field("spill", &self.spill)
            .finish_non_exhaustive()
    }
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
        username: None,
        password: None,
        max_pipeline: 1,
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
}
