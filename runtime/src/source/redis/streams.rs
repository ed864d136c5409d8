//! Redis streams as events, at least once: each wanted stream is read through the
//! consumer group `wasmrule` (created at the stream's end, `MKSTREAM`, when missing)
//! as consumer [`Streams::consumer`]. Each entry becomes a tracked event; once every
//! rule's writes and actions for it are done (`ack.rs`, [`StreamAcks`]) it is
//! acknowledged with `XACK`. At start, and after each reconnect, the consumer's own
//! pending entries (read before a crash, never acknowledged) are read again first.
//!
//! Two connections: one blocks in `XREADGROUP`, the other sends `XACK`s and creates
//! groups, so acknowledgements never wait behind a blocked read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{BACKOFF_MAX, BACKOFF_MIN, event, of_kind};
use crate::ack::{StreamAcks, StreamEntry};
use crate::dispatch::Dispatcher;
use crate::event::EventKind;
use crate::rules::ruleset::{RedisTrigger, TriggerKind, Wanted};
use crate::sink::redis::RedisConfig;

/// The consumer group wasmrule reads every stream through.
pub const GROUP: &str = "wasmrule";
/// Entries per read.
const COUNT: usize = 256;
/// How long one read blocks waiting for entries.
const BLOCK: Duration = Duration::from_millis(500);

pub(super) struct Streams {
    pub(super) config: RedisConfig,
    pub(super) wanted: watch::Receiver<Wanted>,
    pub(super) dispatcher: Dispatcher,
    pub(super) acks: Arc<StreamAcks>,
    pub(super) consumer: String,
    pub(super) shutdown: CancellationToken,
}

impl Streams {
    pub(super) async fn run(mut self) {
        let (tx, mut done) = mpsc::unbounded_channel();
        self.acks.reader(tx);
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut want = of_kind(&self.wanted.borrow_and_update(), TriggerKind::Stream);
            while want.is_empty() {
                tokio::select! {
                    r = self.wanted.changed() => if r.is_err() { return },
                    () = self.shutdown.cancelled() => return,
                }
                want = of_kind(&self.wanted.borrow_and_update(), TriggerKind::Stream);
            }
            match self.serve(want, &mut done).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        "Redis streams for rules ({}): {e:#}; reconnecting in {backoff:?}",
                        self.config.display_url()
                    );
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn connect(&self, response_timeout: Duration) -> anyhow::Result<MultiplexedConnection> {
        let client = self.config.client()?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response_timeout));
        Ok(client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }

    /// Reads and forwards entries until shutdown (`Ok`) or a lost connection.
    async fn serve(
        &mut self,
        mut want: Vec<RedisTrigger>,
        done: &mut mpsc::UnboundedReceiver<StreamEntry>,
    ) -> anyhow::Result<()> {
        let mut reader = self.connect(BLOCK + Duration::from_secs(5)).await?;
        let mut control = self.connect(Duration::from_secs(5)).await?;
        create_groups(&mut control, &want).await?;
        // Own pending entries first: from id 0, until none is left.
        let mut cursors: BTreeMap<Vec<u8>, String> = want
            .iter()
            .map(|t| (t.key.clone(), "0".to_owned()))
            .collect();
        tracing::info!(streams = want.len(), "reading Redis streams for rules");
        loop {
            // Acknowledge what is done before reading more.
            ack_done(&mut control, done).await?;
            let pending = !cursors.is_empty();
            let read = read_group(&mut reader, &self.consumer, &want, &cursors, pending);
            let reply = tokio::select! {
                r = read => r?,
                r = self.wanted.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    let now = of_kind(&self.wanted.borrow_and_update(), TriggerKind::Stream);
                    create_groups(&mut control, &now).await?;
                    want = now;
                    continue;
                }
                () = self.shutdown.cancelled() => {
                    ack_done(&mut control, done).await?;
                    return Ok(());
                }
            };
            let entries = parse_read(reply);
            if pending {
                // A stream whose pending read came back empty is caught up.
                for t in &want {
                    match entries.iter().rev().find(|e| e.0 == t.key) {
                        Some(last) => {
                            cursors.insert(t.key.clone(), last.1.clone());
                        }
                        None => {
                            cursors.remove(&t.key);
                        }
                    }
                }
            }
            for (key, id, fields) in entries {
                let Some(t) = want.iter().find(|t| t.key == key) else {
                    continue;
                };
                let payload = fields
                    .iter()
                    .find(|(f, _)| f == b"payload")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let mut obj = serde_json::Map::new();
                obj.insert("entry_id".into(), id.clone().into());
                let map: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(f, v)| {
                        (
                            String::from_utf8_lossy(f).into_owned(),
                            String::from_utf8_lossy(v).into_owned().into(),
                        )
                    })
                    .collect();
                obj.insert("fields".into(), map.into());
                let mut m = event(t, EventKind::RedisStream, payload, obj);
                m.tracked = true;
                self.acks.register(m.seq, StreamEntry { key, id });
                if self.dispatcher.dispatch(m).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// `XGROUP CREATE key wasmrule $ MKSTREAM` for each stream; an existing group is fine.
async fn create_groups(
    conn: &mut MultiplexedConnection,
    want: &[RedisTrigger],
) -> anyhow::Result<()> {
    for t in want {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&t.key[..])
            .arg(GROUP)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            r => r?,
        }
    }
    Ok(())
}

/// `XACK`s every entry reported done so far.
async fn ack_done(
    conn: &mut MultiplexedConnection,
    done: &mut mpsc::UnboundedReceiver<StreamEntry>,
) -> anyhow::Result<()> {
    let mut by_key: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    while let Ok(e) = done.try_recv() {
        by_key.entry(e.key).or_default().push(e.id);
    }
    for (key, ids) in by_key {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&key[..]).arg(GROUP);
        for id in &ids {
            cmd.arg(id);
        }
        cmd.query_async::<()>(conn).await?;
    }
    Ok(())
}

/// One `XREADGROUP`: the pending entries after each cursor (`pending`), or new ones,
/// blocking up to [`BLOCK`].
async fn read_group(
    conn: &mut MultiplexedConnection,
    consumer: &str,
    want: &[RedisTrigger],
    cursors: &BTreeMap<Vec<u8>, String>,
    pending: bool,
) -> anyhow::Result<Value> {
    let streams: Vec<&RedisTrigger> = if pending {
        want.iter()
            .filter(|t| cursors.contains_key(&t.key))
            .collect()
    } else {
        want.iter().collect()
    };
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(COUNT);
    if !pending {
        cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
    }
    cmd.arg("STREAMS");
    for t in &streams {
        cmd.arg(&t.key[..]);
    }
    for t in &streams {
        if pending {
            cmd.arg(cursors[&t.key].as_str());
        } else {
            cmd.arg(">");
        }
    }
    Ok(cmd.query_async(conn).await?)
}

type Entry = (Vec<u8>, String, Vec<(Vec<u8>, Vec<u8>)>);

/// `[[key, [[id, [field, value, ...]], ...]], ...]` (or nil after a timeout) as
/// (key, id, fields) in order. Entries deleted while pending come back with nil
/// fields: they are skipped, nothing is left to handle.
fn parse_read(v: Value) -> Vec<Entry> {
    let mut out = Vec::new();
    let bulk = |v: &Value| match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
    let streams = match v {
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return out,
    };
    for s in streams {
        let Value::Array(parts) = s else { continue };
        let (Some(key), Some(Value::Array(entries))) = (parts.first().and_then(bulk), parts.get(1))
        else {
            continue;
        };
        for e in entries {
            let Value::Array(e) = e else { continue };
            let (Some(id), Some(Value::Array(kv))) = (e.first().and_then(bulk), e.get(1)) else {
                continue;
            };
            let Ok(id) = String::from_utf8(id) else {
                continue;
            };
            let fields = kv
                .chunks(2)
                .filter_map(|p| Some((bulk(p.first()?)?, bulk(p.get(1)?)?)))
                .collect();
            out.push((key.clone(), id, fields));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_parse_in_order_and_skip_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            b("acme:cmds"),
            Value::Array(vec![
                Value::Array(vec![b("1-0"), Value::Array(vec![b("payload"), b("x")])]),
                Value::Array(vec![b("2-0"), Value::Nil]),
                Value::Array(vec![
                    b("3-0"),
                    Value::Array(vec![b("a"), b("1"), b("b"), b("2")]),
                ]),
            ]),
        ])]);
        let got = parse_read(reply);
        let ids: Vec<&str> = got.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(ids, vec!["1-0", "3-0"]);
        assert_eq!(got[0].0, b"acme:cmds");
        assert_eq!(got[1].2.len(), 2);
        assert!(parse_read(Value::Nil).is_empty());
    }
}
