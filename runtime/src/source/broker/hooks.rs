//! rmqtt hook calls -> wasmrule events. One handler is registered for every hook type
//! in [`TYPES`]; each call builds at most one event, and only when a loaded rule asks
//! for it, then hands it to the forwarding channel.
//!
//! Two hooks do more than observe:
//! - the ACL hooks decide (rmqtt's ACL hooks are decision hooks: the first handler that
//!   answers ends the chain), so the decision and its `client.check_authz_complete`
//!   event come from the same place; an allowed PUBLISH also becomes the
//!   `message.publish` event there, so rules never see a message the ACL refused;
//! - rmqtt's no-subscribers hook names only the publisher, so the handler keeps the
//!   last allowed publish per client (a session publishes one message at a time) and
//!   pairs it with that hook to emit `message.dropped` with reason `no_subscribers`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::session::Session;
use rmqtt::types::{
    Id, Publish, PublishAclResult, Reason, Subscribe, SubscribeAclResult, Unsubscribe,
};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::acl::{Acl, Action, Client};
use super::reason;
use crate::event::{
    BrokerEvent, EventKind, MSGID_PROPERTY, Message, PublishProperties, msgid, next_seq, now_ms,
    payload_fields,
};
use crate::ops::metrics::Metrics;
use crate::rules::ruleset::{RuleSet, Rules};

/// The hooks wasmrule listens to.
pub(super) const TYPES: [Type; 12] = [
    Type::MessagePublish,
    Type::SessionCreated,
    Type::ClientConnected,
    Type::ClientDisconnected,
    Type::ClientSubscribeCheckAcl,
    Type::MessagePublishCheckAcl,
    Type::SessionSubscribed,
    Type::SessionUnsubscribed,
    Type::MessageDelivered,
    Type::MessageAcked,
    Type::MessageDropped,
    Type::MessageNonsubscribed,
];

/// The last publish a client made, kept until the broker has routed it.
struct Pending {
    topic: String,
    qos: u8,
    retain: bool,
    payload: Bytes,
    received_at: u64,
}

struct Inner {
    acl: Acl,
    max_qos: u8,
    rules: Arc<Rules>,
    tx: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
    pending: Mutex<HashMap<String, Pending>>,
    /// (client id, filter) of SUBSCRIBEs whose filter the session already had, from the
    /// ACL check (before the broker replaces it) to `session.subscribed` (`is_new`).
    resubscribed: Mutex<std::collections::HashSet<(String, String)>>,
}

/// The hook handler (cheap to clone: one per registered hook type).
#[derive(Clone)]
pub(super) struct EventHooks {
    inner: Arc<Inner>,
}

impl EventHooks {
    pub(super) fn new(
        acl: Acl,
        max_qos: u8,
        rules: Arc<Rules>,
        tx: mpsc::Sender<Message>,
        metrics: Arc<Metrics>,
    ) -> Self {
        EventHooks {
            inner: Arc::new(Inner {
                acl,
                max_qos,
                rules,
                tx,
                metrics,
                pending: Mutex::new(HashMap::new()),
                resubscribed: Mutex::new(std::collections::HashSet::new()),
            }),
        }
    }

    fn wants(&self, topic: &str) -> bool {
        self.inner.rules.load().wants(topic)
    }

    fn resubscribed(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashSet<(String, String)>> {
        // As for `pending`: single operations.
        self.inner
            .resubscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        // Every critical section is a single map operation: a panic cannot leave the
        // map half-changed.
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn send(&self, m: Message) {
        if self.inner.tx.send(m).await.is_err() {
            // Shutting down: the forwarder is gone.
            Metrics::add(&self.inner.metrics.source_events_dropped, 1);
        }
    }

    /// Sends an event; callers check that some rule wants `kind` before building it.
    async fn emit(&self, kind: EventKind, fields: Map<String, Value>) {
        self.send(Message::broker_event(BrokerEvent::new(kind, fields)))
            .await;
    }

    /// Decides a PUBLISH or SUBSCRIBE and reports the decision to rules in `set` that
    /// want it.
    async fn authorize(&self, set: &RuleSet, s: &Session, action: Action, topic: &str) -> bool {
        let id = &s.id;
        let client = Client {
            clientid: &id.client_id,
            username: id.username.as_deref(),
            ipaddress: id.remote_addr.map(|a| a.ip()),
        };
        let d = self.inner.acl.check(&client, action, topic);
        if set.wants(EventKind::ClientCheckAuthzComplete.topic()) {
            let mut f = who(id);
            f.insert("topic".into(), topic.into());
            f.insert("action".into(), action.name().into());
            f.insert("authz_source".into(), d.source.into());
            f.insert(
                "result".into(),
                if d.allow { "allow" } else { "deny" }.into(),
            );
            self.emit(EventKind::ClientCheckAuthzComplete, f).await;
        }
        d.allow
    }

    /// An allowed PUBLISH: kept for a possible `no_subscribers` drop, and handed to rules
    /// in `set` that want its topic.
    async fn on_publish(&self, set: &RuleSet, s: &Session, p: &Publish) {
        let received_at = p
            .create_time
            .filter(|t| *t > 0)
            .map_or_else(now_ms, |t| t as u64);
        let topic = p.topic.to_string();
        if set.wants(EventKind::MessageDropped.topic()) {
            self.pending().insert(
                s.id.client_id.to_string(),
                Pending {
                    topic: topic.clone(),
                    qos: p.qos.value(),
                    retain: p.retain,
                    payload: p.payload.clone(),
                    received_at,
                },
            );
        }
        if !set.wants(&topic) {
            return;
        }
        let mut m = Message::new(topic, p.payload.clone(), p.qos.value(), p.retain);
        m.msgid = msgid_of(p);
        m.clientid = Some(s.id.client_id.to_string());
        m.username = s.id.username.as_ref().map(|u| u.to_string());
        m.received_at = received_at;
        m.properties = p.properties.as_ref().and_then(|props| {
            let pp = PublishProperties {
                payload_format_indicator: props.is_utf8_payload.then_some(1),
                message_expiry_interval: props.message_expiry_interval.map(|v| v.get()),
                content_type: props.content_type.as_ref().map(|v| v.to_string()),
                response_topic: props.response_topic.as_ref().map(|v| v.to_string()),
                correlation_data: props.correlation_data.clone(),
                user_properties: props
                    .user_properties
                    .iter()
                    // The broker's own, not the publisher's (`msgid` instead).
                    .filter(|(k, _)| k != MSGID_PROPERTY)
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            };
            (pp != PublishProperties::default()).then(|| Box::new(pp))
        });
        self.send(m).await;
    }
}

/// The message id the broker gave `p` (`MessagePublish` hook), if it gave one.
fn msgid_of(p: &Publish) -> Option<String> {
    p.properties.as_ref().and_then(|props| {
        props
            .user_properties
            .iter()
            .rfind(|(k, _)| k == MSGID_PROPERTY)
            .map(|(_, v)| v.to_string())
    })
}

/// `clientid`, `username` and `peerhost` of a client.
fn who(id: &Id) -> Map<String, Value> {
    let mut f = Map::new();
    f.insert("clientid".into(), id.client_id.to_string().into());
    f.insert(
        "username".into(),
        id.username
            .as_ref()
            .map_or(Value::Null, |u| u.to_string().into()),
    );
    if let Some(a) = id.remote_addr {
        f.insert("peerhost".into(), a.ip().to_string().into());
    }
    f
}

/// The fields EMQX gives every message event: topic, qos, flags, payload, times.
fn message_fields(p: &Publish, f: &mut Map<String, Value>) {
    f.insert("topic".into(), p.topic.to_string().into());
    f.insert("qos".into(), p.qos.value().into());
    f.insert("flags".into(), json!({"retain": p.retain, "dup": p.dup}));
    payload_fields(&p.payload, f);
    if let Some(t) = p.create_time.filter(|t| *t > 0) {
        f.insert("publish_received_at".into(), t.into());
    }
}

/// Publisher fields of a message event seen on the receiver's side.
fn from_fields(from: &Id, f: &mut Map<String, Value>) {
    f.insert("from_clientid".into(), from.client_id.to_string().into());
    f.insert(
        "from_username".into(),
        from.username
            .as_ref()
            .map_or(Value::Null, |u| u.to_string().into()),
    );
}

#[async_trait]
impl Handler for EventHooks {
    /// One method per hook. The ACL hooks answer with a decision; every other hook
    /// only observes and passes the accumulated result on.
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::MessagePublish(_, _, p) => {
                if let Some(p) = self.tag_msgid(p) {
                    return (true, Some(HookResult::Publish(p)));
                }
            }
            Parameter::SessionCreated(s) => self.session_created(s).await,
            Parameter::MessagePublishCheckAcl(s, p) => return self.publish_check_acl(s, p).await,
            Parameter::ClientSubscribeCheckAcl(s, sub) => {
                return self.subscribe_check_acl(s, sub).await;
            }
            Parameter::ClientConnected(s) => self.client_connected(s).await,
            Parameter::ClientDisconnected(s, r) => self.client_disconnected(s, r).await,
            Parameter::SessionSubscribed(s, sub) => self.session_subscribed(s, sub).await,
            Parameter::SessionUnsubscribed(s, unsub) => self.session_unsubscribed(s, unsub).await,
            Parameter::MessageDelivered(s, from, p) => {
                self.message_seen(EventKind::MessageDelivered, s, from, p)
                    .await;
            }
            Parameter::MessageAcked(s, from, p) => {
                self.message_seen(EventKind::MessageAcked, s, from, p).await;
            }
            Parameter::MessageDropped(to, from, p, r) => {
                self.message_dropped(to.as_ref(), from, p, r).await;
            }
            Parameter::MessageNonsubscribed(from) => self.message_nonsubscribed(from).await,
            _ => {}
        }
        (true, acc)
    }
}

impl EventHooks {
    /// Decides a PUBLISH: protocol violations end the connection, the ACL allows or
    /// refuses, and an allowed one becomes the `message.publish` event.
    async fn publish_check_acl(&self, s: &Session, p: &Publish) -> ReturnType {
        // Protocol violations rmqtt lets through end the connection, as the
        // MQTT 5 specification asks: a PUBLISH above the announced maximum QoS
        // (3.3.4, DISCONNECT 0x9B) or to a topic name with wildcards (3.3.2.1).
        let violation = if p.qos.value() > self.inner.max_qos {
            Some(reason::QOS_NOT_SUPPORTED)
        } else if p.topic.contains(['+', '#']) {
            Some(reason::TOPIC_NAME_INVALID)
        } else {
            None
        };
        if let Some(why) = violation {
            let mut r = PublishAclResult::rejected(true, Some(why.into()));
            r.0.reason_code = rmqtt::codec::v5::PublishAckReason::ImplementationSpecificError;
            return (false, Some(HookResult::PublishAclResult(r)));
        }
        // One look at the rule set for the whole publish path.
        let set = self.inner.rules.snapshot();
        let result = if self.authorize(&set, s, Action::Publish, &p.topic).await {
            self.on_publish(&set, s, p).await;
            PublishAclResult::allow()
        } else {
            PublishAclResult::rejected(false, None)
        };
        (false, Some(HookResult::PublishAclResult(result)))
    }

    /// When some rule wants the events of a message's delivery, gives the message its id
    /// as a user property, so that `message.delivered` and `message.acked` carry the
    /// id `message.publish` had (and a stored message keeps it); a property of that
    /// name from the publisher is replaced. `None`: nothing to change.
    fn tag_msgid(&self, p: &Publish) -> Option<Publish> {
        let set = self.inner.rules.snapshot();
        if !set.wants(EventKind::MessageAcked.topic())
            && !set.wants(EventKind::MessageDelivered.topic())
        {
            return None;
        }
        let at = p
            .create_time
            .filter(|t| *t > 0)
            .map_or_else(now_ms, |t| t as u64);
        let mut p = p.clone();
        let props = p.properties.get_or_insert_with(Default::default);
        props.user_properties.retain(|(k, _)| k != MSGID_PROPERTY);
        props
            .user_properties
            .push((MSGID_PROPERTY.into(), msgid(at, next_seq()).into()));
        Some(p)
    }

    /// `session.created`: a client's session is new (not resumed).
    async fn session_created(&self, s: &Session) {
        if self.wants(EventKind::SessionCreated.topic()) {
            let mut f = who(&s.id);
            f.insert("created_at".into(), now_ms().into());
            self.emit(EventKind::SessionCreated, f).await;
        }
    }

    /// Decides a SUBSCRIBE by the ACL.
    async fn subscribe_check_acl(&self, s: &Session, sub: &Subscribe) -> ReturnType {
        let set = self.inner.rules.snapshot();
        if set.wants(EventKind::SessionSubscribed.topic())
            && let Ok(subs) = s.subscriptions().await
            && subs.read().await.contains_key(&sub.topic_filter)
        {
            self.resubscribed()
                .insert((s.id.client_id.to_string(), sub.topic_filter.to_string()));
        }
        let result = if self
            .authorize(&set, s, Action::Subscribe, &sub.topic_filter)
            .await
        {
            SubscribeAclResult::new_success(sub.opts.qos(), None)
        } else {
            SubscribeAclResult::new_failure(rmqtt::codec::v5::SubscribeAckReason::NotAuthorized)
        };
        (false, Some(HookResult::SubscribeAclResult(result)))
    }

    /// `client.connected`.
    async fn client_connected(&self, s: &Session) {
        Metrics::add(&self.inner.metrics.broker_connections, 1);
        if !self.wants(EventKind::ClientConnected.topic()) {
            return;
        }
        let mut f = who(&s.id);
        if let Some(a) = s.id.remote_addr {
            f.insert("peername".into(), a.to_string().into());
        }
        if let Some(a) = s.id.local_addr {
            f.insert("sockname".into(), a.to_string().into());
        }
        if let Ok(ci) = s.connect_info().await {
            f.insert("proto_name".into(), "MQTT".into());
            f.insert("proto_ver".into(), ci.proto_ver().into());
            f.insert("keepalive".into(), ci.keep_alive().into());
            f.insert("clean_start".into(), ci.clean_start().into());
        }
        f.insert("connected_at".into(), now_ms().into());
        self.emit(EventKind::ClientConnected, f).await;
    }

    /// `client.disconnected`; also forgets the client's pending publish.
    async fn client_disconnected(&self, s: &Session, r: &Reason) {
        Metrics::add(&self.inner.metrics.broker_disconnections, 1);
        self.pending().remove(s.id.client_id.as_ref() as &str);
        if !self.wants(EventKind::ClientDisconnected.topic()) {
            return;
        }
        let mut f = who(&s.id);
        if let Some(a) = s.id.remote_addr {
            f.insert("peername".into(), a.to_string().into());
        }
        f.insert("reason".into(), reason::disconnect_reason(r).into());
        f.insert("disconnected_at".into(), now_ms().into());
        tracing::debug!(clientid = %s.id.client_id, reason = ?r, "client disconnected");
        self.emit(EventKind::ClientDisconnected, f).await;
    }

    /// `session.subscribed`.
    async fn session_subscribed(&self, s: &Session, sub: &Subscribe) {
        Metrics::add(&self.inner.metrics.broker_subscriptions, 1);
        let key = (s.id.client_id.to_string(), sub.topic_filter.to_string());
        let is_new = !self.resubscribed().remove(&key);
        if self.wants(EventKind::SessionSubscribed.topic()) {
            let mut f = who(&s.id);
            f.insert("topic".into(), key.1.into());
            f.insert("qos".into(), sub.opts.qos_value().into());
            f.insert("is_new".into(), is_new.into());
            // Every message routed after this point has a higher id: what a rule may
            // fetch for the subscriber is what came before it.
            f.insert("first_msgid".into(), msgid(now_ms(), next_seq()).into());
            self.emit(EventKind::SessionSubscribed, f).await;
        }
    }

    /// `session.unsubscribed`.
    async fn session_unsubscribed(&self, s: &Session, unsub: &Unsubscribe) {
        if self.wants(EventKind::SessionUnsubscribed.topic()) {
            let mut f = who(&s.id);
            f.insert("topic".into(), unsub.topic_filter.to_string().into());
            self.emit(EventKind::SessionUnsubscribed, f).await;
        }
    }

    /// `message.delivered` or `message.acked`: the subscriber's side of a message.
    async fn message_seen(&self, kind: EventKind, s: &Session, from: &Id, p: &Publish) {
        if self.wants(kind.topic()) {
            let mut f = who(&s.id);
            from_fields(from, &mut f);
            message_fields(p, &mut f);
            if let Some(id) = msgid_of(p) {
                f.insert("msgid".into(), id.into());
            }
            self.emit(kind, f).await;
        }
    }

    /// `delivery.dropped` (on its way to subscriber `to`) or `message.dropped`.
    async fn message_dropped(&self, to: Option<&Id>, from: &Id, p: &Publish, r: &Reason) {
        self.inner.metrics.broker_dropped(&reason::drop_reason(r));
        let kind = if to.is_some() {
            EventKind::DeliveryDropped
        } else {
            EventKind::MessageDropped
        };
        if !self.wants(kind.topic()) {
            return;
        }
        let mut f = match to {
            // Dropped on its way to a subscriber: the subscriber's view.
            Some(to) => {
                let mut f = who(to);
                from_fields(from, &mut f);
                f
            }
            None => who(from),
        };
        message_fields(p, &mut f);
        f.insert("reason".into(), reason::drop_reason(r).into());
        self.emit(kind, f).await;
    }

    /// No subscriber took the client's last publish: `message.dropped` with reason
    /// `no_subscribers`, built from the publish kept at the ACL hook.
    async fn message_nonsubscribed(&self, from: &Id) {
        let p = self.pending().remove(from.client_id.as_ref() as &str);
        if let Some(p) = p.filter(|_| self.wants(EventKind::MessageDropped.topic())) {
            let mut f = who(from);
            f.insert("topic".into(), p.topic.into());
            f.insert("qos".into(), p.qos.into());
            f.insert("flags".into(), json!({"retain": p.retain, "dup": false}));
            payload_fields(&p.payload, &mut f);
            f.insert("publish_received_at".into(), p.received_at.into());
            f.insert("reason".into(), "no_subscribers".into());
            self.emit(EventKind::MessageDropped, f).await;
        }
    }
}
