//! `[runtime]`: the settings of the runtime as a whole (`runtime.rs`): worker threads
//! and their queues, the I/O threads, the node name, the shutdown timeout and the HTTP
//! endpoint's address. The section as written ([`RawRuntime`]), its defaults and
//! checks, and the validated [`RuntimeConfig`].

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::config::check::positive;

pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9464";

/// Worker threads and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Threads that run rules.
    pub workers: usize,
    /// Threads of the async runtime: MQTT, Redis, the embedded broker, HTTP.
    pub io_threads: usize,
    /// Messages waiting per worker before the MQTT reader pauses (backpressure).
    pub queue: usize,
    /// Node name put in events (`node`).
    pub node: String,
    /// How long a graceful shutdown may take to finish, write and acknowledge what is
    /// in flight.
    pub shutdown_timeout: Duration,
    /// Address of the health and metrics endpoint; `None` turns it off.
    pub http_addr: Option<std::net::SocketAddr>,
}

/// `[runtime]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    workers: Option<usize>,
    io_threads: Option<usize>,
    queue: Option<usize>,
    node: Option<String>,
    shutdown_timeout_secs: Option<u64>,
    http_addr: Option<String>,
}

impl RawRuntime {
    /// Validates the section and fills in defaults (a worker per core, an I/O thread
    /// per four, the host name).
    pub(crate) fn build(self) -> anyhow::Result<RuntimeConfig> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(RuntimeConfig {
            workers: match self.workers {
                None | Some(0) => cores,
                Some(n) if n <= 256 => n,
                Some(n) => bail!("runtime.workers: {n} is more than 256"),
            },
            io_threads: match self.io_threads {
                None | Some(0) => default_io_threads(cores),
                Some(n) if n <= 64 => n,
                Some(n) => bail!("runtime.io_threads: {n} is more than 64"),
            },
            queue: positive(self.queue.unwrap_or(1024), "runtime.queue")?,
            node: self.node.unwrap_or_else(default_node),
            shutdown_timeout: Duration::from_secs(positive(
                self.shutdown_timeout_secs.unwrap_or(10),
                "runtime.shutdown_timeout_secs",
            )?),
            http_addr: parse_http_addr(self.http_addr.as_deref().unwrap_or(DEFAULT_HTTP_ADDR))
                .context("runtime.http_addr")?,
        })
    }
}

/// I/O threads for `cores` cores: one per four, at least one. The rules run on worker
/// threads of their own, so the async runtime only moves bytes and wakes tasks; with
/// fewer threads, a message's hand-offs between the MQTT reader, the dispatcher and the
/// Redis writer stay on one thread instead of waking another. On 2 cores, one I/O
/// thread instead of two took a message from 7.38 to 6.73 CPU-us in the e2e bench and
/// from 8.0 to 6.5 in the peer harness, at a higher rate (docs/performance.md).
fn default_io_threads(cores: usize) -> usize {
    (cores / 4).max(1)
}

/// An address for the HTTP endpoint, or `off`.
///
/// # Errors
///
/// When it is neither.
pub(crate) fn parse_http_addr(s: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if s == "off" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{s:?} is not an address like 127.0.0.1:9464, or \"off\""))
}

fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("wasmrule@{host}")
}
