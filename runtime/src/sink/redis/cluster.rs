//! Redis Cluster for the writer (`redis.mode = "cluster"`): one flush's commands as one
//! pipeline per master, sent concurrently, each command's redirect followed.
//!
//! Why not redis-rs' cluster connection for the writes: it routes a pipeline as a whole
//! and refuses one whose keys span slots (one pipeline per slot would be one command
//! per round trip for device keys spread over the 16,384 slots), and on the first
//! `MOVED` or `ASK` inside a pipeline it sends the whole pipeline again elsewhere,
//! applying a second time the commands that had succeeded. So the writer keeps the
//! cluster's slot map itself (`CLUSTER SLOTS`), groups the commands of a flush by the
//! master owning each command's first key, and sends each group as one pipeline on a
//! redis-rs multiplexed connection to that master. redis-rs still does the connections,
//! the protocol and the key hashing (`Slot::for_key`); this file only decides which
//! commands go where, which the library does not offer.
//!
//! Each command is answered on its own: `MOVED` (the slot has a new owner) refreshes the
//! slot map and sends that command again to the new owner; `ASK` (the slot is migrating
//! and this key is already on the target) sends it to the named node after `ASKING`, in
//! the same pipeline. A group whose connection fails leaves its commands unconfirmed and
//! the map is read again; the writer sends those commands again (at-least-once, as with
//! one server) and acknowledges a batch only once every one of its commands is
//! confirmed. The others are not repeated.
//!
//! A command's node is that of its first key (the command tables of `tenancy/` say where
//! keys are). Commands whose keys hash to different slots get `CROSSSLOT` from Redis,
//! reported like any refused command: a tenant that needs multi-key commands keeps its
//! keys in one slot with a hash tag (`{tenant}:...`, docs/scaling.md).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_routing::Slot;
use redis::{AsyncConnectionConfig, Cmd, ConnectionInfo, RedisError, Value};

use crate::ops::metrics::Metrics;
use crate::tenancy::command_table::find_spec;
use crate::tenancy::read_table::find_read_spec;

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16384;
/// Redirects followed for one flush before its remaining commands count as unconfirmed.
const MAX_ROUNDS: usize = 8;
/// No known owner.
const NO_NODE: u16 = u16::MAX;

/// A node, as `CLUSTER SLOTS` names it.
type Node = (String, u16);

/// Connections to a cluster's masters and its slot map.
pub(crate) struct Cluster {
    /// The seed nodes, tried in turn for the slot map.
    seeds: Vec<ConnectionInfo>,
    /// Timeouts of every node connection.
    config: AsyncConnectionConfig,
    /// Open connections, by node.
    conns: HashMap<Node, MultiplexedConnection>,
    /// The masters.
    nodes: Vec<Node>,
    /// For each slot, its master's index in `nodes`.
    owner: Vec<u16>,
    /// A `MOVED` or a failed node said the map is out of date.
    stale: bool,
}

/// The replies of one flush: one per command, `None` where the command is not
/// confirmed; `error` if a connection failed on the way.
pub(crate) struct Replies {
    pub values: Vec<Option<Value>>,
    pub error: Option<RedisError>,
}

/// Where one command goes this round.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Target {
    /// The owner of its slot.
    Owner(u16),
    /// A node named by `ASK`: send `ASKING` first.
    Asking(Node),
    /// A node named by `MOVED`, before the map caught up.
    Moved(Node),
}

impl Cluster {
    /// Connects to the cluster through `seeds` and reads its slot map.
    pub(crate) async fn connect(
        seeds: Vec<ConnectionInfo>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<Cluster> {
        let mut c = Cluster {
            seeds,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout)),
            conns: HashMap::new(),
            nodes: Vec::new(),
            owner: Vec::new(),
            stale: true,
        };
        c.refresh().await?;
        Ok(c)
    }

    /// A PING to the first master.
    pub(crate) async fn ping(&mut self) -> redis::RedisResult<()> {
        let node = self.nodes.first().cloned().ok_or_else(no_node)?;
        let mut conn = self.conn(&node).await?;
        let r = redis::cmd("PING").query_async::<()>(&mut conn).await;
        if r.is_err() {
            self.conns.remove(&node);
        }
        r
    }

    /// The connection to `node`, made if needed.
    async fn conn(&mut self, node: &Node) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.conns.get(node) {
            return Ok(c.clone());
        }
        let url = format!("redis://{}:{}", node.0, node.1);
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
        // The seeds' settings (user, password, no CLIENT SETINFO) for every node.
        let info = match self.seeds.first() {
            Some(seed) => info.set_redis_settings(seed.redis_settings().clone()),
            None => info,
        };
        let c = redis::Client::open(info)?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        self.conns.insert(node.clone(), c.clone());
        Ok(c)
    }

    /// Reads the slot map (`CLUSTER SLOTS`) from a known master, else from a seed.
    async fn refresh(&mut self) -> redis::RedisResult<()> {
        let mut last = no_node();
        let known: Vec<Node> = self.nodes.clone();
        let mut candidates: Vec<Result<Node, ConnectionInfo>> = known.into_iter().map(Ok).collect();
        candidates.extend(self.seeds.iter().cloned().map(Err));
        for candidate in candidates {
            let conn = match &candidate {
                Ok(node) => self.conn(node).await,
                Err(seed) => match redis::Client::open(seed.clone()) {
                    Ok(client) => {
                        client
                            .get_multiplexed_async_connection_with_config(&self.config)
                            .await
                    }
                    Err(e) => Err(e),
                },
            };
            let reply = match conn {
                Ok(mut c) => {
                    redis::cmd("CLUSTER")
                        .arg("SLOTS")
                        .query_async::<Value>(&mut c)
                        .await
                }
                Err(e) => Err(e),
            };
            match reply {
                Ok(v) => {
                    let (nodes, owner) = parse_slots(&v).ok_or_else(|| {
                        RedisError::from((
                            redis::ErrorKind::Parse,
                            "unexpected CLUSTER SLOTS reply",
                            format!("{v:?}"),
                        ))
                    })?;
                    self.nodes = nodes;
                    self.owner = owner;
                    self.stale = false;
                    return Ok(());
                }
                Err(e) => {
                    if let Ok(node) = &candidate {
                        self.conns.remove(node);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Sends `cmds` as one pipeline per node, concurrently, following redirects.
    pub(crate) async fn query(&mut self, cmds: &[Cmd], metrics: &Metrics) -> Replies {
        let mut values: Vec<Option<Value>> = vec![None; cmds.len()];
        let mut targets: Vec<(usize, Option<Target>)> =
            (0..cmds.len()).map(|i| (i, None)).collect();
        for _ in 0..MAX_ROUNDS {
            if targets.is_empty() {
                return Replies {
                    values,
                    error: None,
                };
            }
            if self.stale
                && let Err(e) = self.refresh().await
            {
                return Replies {
                    values,
                    error: Some(e),
                };
            }
            let mut groups: HashMap<Target, Vec<usize>> = HashMap::new();
            for (i, t) in targets.drain(..) {
                let t = t.unwrap_or_else(|| Target::Owner(self.owner_of(&cmds[i])));
                groups.entry(t).or_default().push(i);
            }
            let mut sends = Vec::with_capacity(groups.len());
            let mut error = None;
            for (target, items) in groups {
                let node = match &target {
                    Target::Owner(n) => self.nodes.get(usize::from(*n)).cloned(),
                    Target::Asking(node) | Target::Moved(node) => Some(node.clone()),
                };
                let conn = match node {
                    Some(node) => self.conn(&node).await.map(|c| (node, c)),
                    None => Err(no_node()),
                };
                let (node, mut conn) = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        // These stay unconfirmed.
                        self.stale = true;
                        error = Some(e);
                        continue;
                    }
                };
                let asking = matches!(target, Target::Asking(_));
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for &i in &items {
                    if asking {
                        pipe.add_command(redis::cmd("ASKING"));
                    }
                    pipe.add_command(cmds[i].clone());
                }
                Metrics::add(&metrics.redis_pipelines, 1);
                metrics.redis_pipeline_commands.observe(items.len() as u64);
                sends.push(async move {
                    let r = pipe.query_async::<Vec<Value>>(&mut conn).await;
                    (node, items, asking, r)
                });
            }
            for (node, items, asking, result) in futures_util::future::join_all(sends).await {
                let replies = match result {
                    Ok(r) => r,
                    Err(e) => {
                        // These stay unconfirmed; the other groups' replies are kept. The
                        // node may have failed over: read the map again.
                        self.conns.remove(&node);
                        self.stale = true;
                        error = Some(e);
                        continue;
                    }
                };
                let mut replies = replies.into_iter();
                for i in items {
                    if asking {
                        let _ = replies.next();
                    }
                    match replies.next() {
                        Some(Value::ServerError(e)) if e.code() == "MOVED" => {
                            Metrics::add(&metrics.redis_redirects, 1);
                            self.stale = true;
                            targets.push((i, redirect_node(&e).map(Target::Moved)));
                        }
                        Some(Value::ServerError(e)) if e.code() == "ASK" => {
                            Metrics::add(&metrics.redis_redirects, 1);
                            targets.push((i, redirect_node(&e).map(Target::Asking)));
                        }
                        Some(v) => values[i] = Some(v),
                        None => {}
                    }
                }
            }
            if error.is_some() {
                return Replies { values, error };
            }
        }
        let error = (!targets.is_empty()).then(|| {
            RedisError::from((
                redis::ErrorKind::Io,
                "too many cluster redirects in one flush",
            ))
        });
        Replies { values, error }
    }

    /// The master of the slot of `cmd`'s first key; the first master for a command
    /// without keys.
    fn owner_of(&self, cmd: &Cmd) -> u16 {
        let Some(key) = first_key(cmd) else {
            return 0;
        };
        match self.owner.get(usize::from(slot_number(key))) {
            Some(&n) if n != NO_NODE => n,
            _ => 0,
        }
    }
}

fn no_node() -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "no reachable node of the Redis Cluster",
    ))
}

/// The first key of `cmd`, by the command tables (writes, then v2 reads).
fn first_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(b) => b,
        _ => &[][..],
    });
    let name = args.next()?;
    let at = find_spec(name)
        .or_else(|| find_read_spec(name))
        .map_or(1, |s| s.first_key);
    if at == 0 {
        return None;
    }
    args.nth(at - 1)
}

/// The slot number of `key`, by redis-rs' own hashing (CRC16 of the hash tag or key).
/// redis-rs gives `Slot` without its number, so the numbers are looked up once.
fn slot_number(key: &[u8]) -> u16 {
    static NUMBERS: OnceLock<HashMap<Slot, u16>> = OnceLock::new();
    let numbers = NUMBERS.get_or_init(|| {
        (0..SLOTS)
            .filter_map(|n| Slot::new(n).map(|s| (s, n)))
            .collect()
    });
    numbers.get(&Slot::for_key(key)).copied().unwrap_or(0)
}

/// `host:port` of a `MOVED` or `ASK` error (`MOVED <slot> <host>:<port>`).
fn redirect_node(e: &redis::ServerError) -> Option<Node> {
    node_of_details(e.details()?)
}

/// `host:port` of a redirect's details, `<slot> <host>:<port>`.
fn node_of_details(details: &str) -> Option<Node> {
    let addr = details.split_whitespace().nth(1)?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The masters and each slot's owner from a `CLUSTER SLOTS` reply: entries of
/// `[start, end, [host, port, id, ...], replicas...]`.
fn parse_slots(v: &Value) -> Option<(Vec<Node>, Vec<u16>)> {
    let Value::Array(ranges) = v else {
        return None;
    };
    let mut nodes: Vec<Node> = Vec::new();
    let mut owner = vec![NO_NODE; usize::from(SLOTS)];
    for r in ranges {
        let Value::Array(r) = r else { return None };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (r.first(), r.get(1), r.get(2))
        else {
            return None;
        };
        let host = match master.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let Value::Int(port) = master.get(1)? else {
            return None;
        };
        let node = (host, u16::try_from(*port).ok()?);
        let index = match nodes.iter().position(|n| *n == node) {
            Some(i) => i,
            None => {
                nodes.push(node);
                nodes.len() - 1
            }
        };
        let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
        for slot in owner.get_mut(start..=end)? {
            *slot = u16::try_from(index).ok()?;
        }
    }
    Some((nodes, owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hash_tags_and_first_keys() {
        // Known slots (CLUSTER KEYSLOT): "foo" is 12182, a hash tag hashes only itself.
        assert_eq!(slot_number(b"foo"), 12182);
        assert_eq!(slot_number(b"{foo}:bar"), 12182);
        assert_eq!(slot_number(b"123456789"), 12739);
        // A tenant's key prefix with a hash tag pins all its keys to one slot.
        assert_eq!(slot_number(b"{acme}:device:1"), slot_number(b"{acme}:x"));
        assert_ne!(slot_number(b"acme:device:1"), slot_number(b"acme:x"));
        let mut c = redis::cmd("HSET");
        c.arg("device:1").arg("f").arg("v");
        assert_eq!(first_key(&c), Some(&b"device:1"[..]));
        let mut c = redis::cmd("GET");
        c.arg("k");
        assert_eq!(first_key(&c), Some(&b"k"[..]));
    }

    #[test]
    fn slot_map_and_redirects() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let v = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                node("127.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7002),
            ]),
        ]);
        let (nodes, owner) = parse_slots(&v).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            (owner[0], owner[8191], owner[8192], owner[16383]),
            (0, 0, 1, 1)
        );
        assert!(parse_slots(&Value::Int(1)).is_none());
        assert_eq!(
            node_of_details("3999 127.0.0.1:6381"),
            Some(("127.0.0.1".to_owned(), 6381))
        );
        assert_eq!(node_of_details("3999"), None);
    }
}
