//! `[redis]`: where to write and how much per pipeline. The section as written
//! ([`RawRedis`]), its defaults and checks, and the validated [`RedisConfig`] the writer
//! takes. The spill's own section (`[redis.spill]`) is in `sink/spill/config.rs`.

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::config::check::positive;
use crate::sink::spill::{RawSpill, SpillConfig};

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Where to write commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    /// Most commands sent in one pipeline.
    pub max_pipeline: usize,
    /// The on-disk spill for QoS 0 batches while Redis is unreachable; `None` is off.
    pub spill: Option<SpillConfig>,
}

/// `[redis]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedis {
    url: Option<String>,
    max_pipeline: Option<usize>,
    spill: Option<RawSpill>,
}

impl RawRedis {
    /// Validates the section and fills in defaults.
    pub(crate) fn build(self) -> anyhow::Result<RedisConfig> {
        let url = self.url.unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        check_redis_url(&url).context("redis.url")?;
        Ok(RedisConfig {
            url,
            max_pipeline: positive(self.max_pipeline.unwrap_or(1024), "redis.max_pipeline")?,
            spill: self.spill.map(RawSpill::build).transpose()?,
        })
    }
}

/// A `redis://` or `unix://` URL the client accepts.
///
/// # Errors
///
/// When it has another scheme or the client cannot parse it.
pub(crate) fn check_redis_url(url: &str) -> anyhow::Result<()> {
    if !(url.starts_with("redis://") || url.starts_with("unix://")) {
        bail!("{url:?}: expected redis://host:port[/db] or unix:///path (TLS is not built in)");
    }
    redis::Client::open(url).map_err(|e| anyhow::anyhow!("{url:?}: {e}"))?;
    Ok(())
}
