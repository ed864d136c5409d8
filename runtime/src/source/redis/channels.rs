//! Redis pub/sub channels as events: one pub/sub connection, subscribed to exactly the
//! channels the rules want, re-subscribed after a reconnect. A message published while
//! the connection is down is not seen (Redis pub/sub keeps nothing): at most once.

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{BACKOFF_MAX, BACKOFF_MIN, event, of_kind};
use crate::dispatch::Dispatcher;
use crate::event::EventKind;
use crate::rules::ruleset::{RedisTrigger, TriggerKind, Wanted};
use crate::sink::redis::RedisConfig;

pub(super) struct Channels {
    pub(super) config: RedisConfig,
    pub(super) wanted: watch::Receiver<Wanted>,
    pub(super) dispatcher: Dispatcher,
    pub(super) shutdown: CancellationToken,
}

impl Channels {
    pub(super) async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            // Nothing to do until some rule names a channel.
            let mut want = of_kind(&self.wanted.borrow_and_update(), TriggerKind::Channel);
            while want.is_empty() {
                tokio::select! {
                    r = self.wanted.changed() => if r.is_err() { return },
                    () = self.shutdown.cancelled() => return,
                }
                want = of_kind(&self.wanted.borrow_and_update(), TriggerKind::Channel);
            }
            match self.serve(want).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(
                        "Redis pub/sub for rules ({}): {e}; reconnecting in {backoff:?}",
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

    /// Subscribes and forwards messages until shutdown (`Ok`) or a lost connection.
    async fn serve(&mut self, mut want: Vec<RedisTrigger>) -> anyhow::Result<()> {
        let client = self.config.client()?;
        let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
        for t in &want {
            sink.subscribe(&t.key[..]).await?;
        }
        tracing::info!(
            channels = want.len(),
            "subscribed to Redis channels for rules"
        );
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        anyhow::bail!("the connection closed");
                    };
                    let channel = msg.get_channel_name().as_bytes();
                    // Every tenant listening on this channel: one event each (their
                    // rules are indexed under the same namespaced topic).
                    if let Some(t) = want.iter().find(|t| t.key == channel) {
                        let m = event(t, EventKind::RedisMessage, msg.get_payload_bytes().to_vec(), serde_json::Map::new());
                        if self.dispatcher.dispatch(m).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                r = self.wanted.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    let now = of_kind(&self.wanted.borrow_and_update(), TriggerKind::Channel);
                    for t in now.iter().filter(|t| !want.contains(t)) {
                        sink.subscribe(&t.key[..]).await?;
                    }
                    for t in want.iter().filter(|t| !now.contains(t)) {
                        sink.unsubscribe(&t.key[..]).await?;
                    }
                    want = now;
                }
                () = self.shutdown.cancelled() => return Ok(()),
            }
        }
    }
}
