//! The writer's connection in each `redis.mode`, behind one face: [`connect`] makes it,
//! [`Conn::query`] sends one flush's commands and gives one reply per command (or
//! none where a command is not confirmed), [`Conn::ping`] checks it.
//!
//! - `single`: one multiplexed connection to the URL's server; a flush is one pipeline.
//! - `sentinel`: the same, to the master the sentinels name at connection time
//!   (redis-rs' `sentinel` support, which also checks that the node calls itself
//!   master). After a failover the old connection fails or answers `READONLY`, the
//!   writer reconnects, and the sentinels name the new master; what was not confirmed
//!   is sent again there.
//! - `cluster`: `cluster.rs`, one connection and one pipeline per master.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, Value};

use super::cluster::{Cluster, Replies};
use super::config::{RedisConfig, RedisMode};
use crate::ops::metrics::Metrics;

pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to Redis in one of the modes.
pub(crate) enum Conn {
    /// One server: the URL's, or the master the sentinels named.
    Node(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(Box<Cluster>),
}

impl Conn {
    /// Sends `cmds` (one flush) and returns their replies in order.
    pub(crate) async fn query(&mut self, cmds: Vec<Cmd>, metrics: &Metrics) -> Replies {
        Metrics::add(&metrics.redis_flushes, 1);
        match self {
            Conn::Cluster(c) => c.query(&cmds, metrics).await,
            Conn::Node(conn) => {
                let n = cmds.len();
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for c in cmds {
                    pipe.add_command(c);
                }
                Metrics::add(&metrics.redis_pipelines, 1);
                metrics.redis_pipeline_commands.observe(n as u64);
                match pipe.query_async::<Vec<Value>>(conn).await {
                    Ok(values) => {
                        let mut values: Vec<Option<Value>> = values.into_iter().map(Some).collect();
                        values.resize(n, None);
                        Replies {
                            values,
                            error: None,
                        }
                    }
                    Err(e) => Replies {
                        values: vec![None; n],
                        error: Some(e),
                    },
                }
            }
        }
    }

    /// One PING.
    pub(crate) async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Conn::Node(c) => redis::cmd("PING").query_async::<()>(c).await,
            Conn::Cluster(c) => c.ping().await,
        }
    }
}

/// One connection attempt, bounded by the connect and response timeouts.
pub(crate) async fn connect(config: &RedisConfig) -> redis::RedisResult<Conn> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    match &config.mode {
        RedisMode::Single => config
            .client()?
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map(Conn::Node),
        RedisMode::Cluster { .. } => {
            let seeds = config.node_infos()?;
            Cluster::connect(seeds, CONNECT_TIMEOUT, RESPONSE_TIMEOUT)
                .await
                .map(|c| Conn::Cluster(Box::new(c)))
        }
        RedisMode::Sentinel { master, .. } => {
            let node = SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(config.master_settings());
            let mut client = SentinelClient::build(
                config.node_infos()?,
                master.as_str(),
                Some(node),
                SentinelServerType::Master,
            )?;
            // Bounded as a whole: asking the sentinels, then connecting to the master.
            match tokio::time::timeout(
                CONNECT_TIMEOUT * 2,
                client.get_async_connection_with_config(&cfg),
            )
            .await
            {
                Ok(r) => r.map(Conn::Node),
                Err(_) => Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "timed out asking the sentinels for the master",
                ))),
            }
        }
    }
}
