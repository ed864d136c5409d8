//! The embedded broker's retained messages (MQTT 3.1.1 section 3.3.1.3, MQTT 5 3.3.1.3):
//! the last retained publish of each topic, delivered to every later subscriber whose
//! filter matches it (wildcards included), cleared by a retained publish with an empty
//! payload, and dropped when its MQTT 5 Message Expiry Interval passes.
//!
//! rmqtt routes retained publishes and looks retained messages up at SUBSCRIBE (retain
//! handling included) through its `RetainStorage` trait, and ships an in-memory topic
//! tree (`DefaultRetainStorage`) whose trait methods do nothing unless its retainer
//! plugin is loaded. [`RetainStore`] is that trait over the same tree, bounded by
//! `broker.max_retained_messages`, or, with `broker.retained = "rules"`, a store that
//! keeps nothing: the broker still accepts retained publishes (and says so in CONNACK)
//! while rules keep them (`docs/emqx4-backend.md`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::types::{Retain, TopicFilter, TopicName};

use super::config::Retained;

/// How often expired retained messages are swept out of memory (a lookup never returns
/// one either way).
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Retained messages, as rmqtt asks for them. Cheap to clone.
#[derive(Clone)]
pub(super) struct RetainStore {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Retained,
    max: usize,
    tree: DefaultRetainStorage,
    /// Limit reached: logged once per crossing.
    full_logged: std::sync::atomic::AtomicBool,
}

impl RetainStore {
    pub(super) fn new(mode: Retained, max: usize) -> Self {
        RetainStore {
            inner: Arc::new(Inner {
                mode,
                max,
                tree: DefaultRetainStorage::new(),
                full_logged: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Drops expired messages; returns how many.
    pub(super) async fn sweep(&self) -> usize {
        self.inner.tree.remove_expired_messages().await
    }
}

#[async_trait]
impl RetainStorage for RetainStore {
    fn enable(&self) -> bool {
        // Also with `Rules`: clients must be told retained messages are available
        // (MQTT 5 CONNACK Retain Available), or they may not send any.
        true
    }

    async fn set(
        &self,
        topic: &TopicName,
        retain: Retain,
        expiry_interval: Option<Duration>,
    ) -> rmqtt::Result<()> {
        if self.inner.mode == Retained::Rules {
            return Ok(());
        }
        let replaces = !self
            .inner
            .tree
            .get_message(&TopicFilter::from(topic.as_ref()))
            .await?
            .is_empty();
        let clears = retain.publish.payload.is_empty();
        if !clears && !replaces && self.count().await >= self.inner.max as isize {
            if !self
                .inner
                .full_logged
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    %topic,
                    max = self.inner.max,
                    "broker.max_retained_messages reached: a retained message for a new \
                     topic was routed but not retained (logged once until there is room)"
                );
            }
            return Ok(());
        }
        self.inner
            .full_logged
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.inner
            .tree
            .set_with_timeout(topic, retain, expiry_interval)
            .await
    }

    async fn get(&self, topic_filter: &TopicFilter) -> rmqtt::Result<Vec<(TopicName, Retain)>> {
        if self.inner.mode == Retained::Rules {
            return Ok(Vec::new());
        }
        self.inner.tree.get_message(topic_filter).await
    }

    async fn count(&self) -> isize {
        RetainStorage::count(&self.inner.tree).await
    }

    async fn max(&self) -> isize {
        RetainStorage::max(&self.inner.tree).await
    }
}
