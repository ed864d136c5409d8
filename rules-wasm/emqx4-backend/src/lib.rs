//! The EMQX 4 Redis backend (`emqx_backend_redis`) as rule logic: the same hooks, the
//! same key layout and commands, so that what reads those keys today keeps working
//! (docs/emqx4-backend.md has the tables side by side).
//!
//! Each hook function of the plugin is a function here, named as in the plugin's
//! configuration; the pack's rules (one `.wasm` each, in the folders beside this crate)
//! route events to them:
//!
//! | rule | events | functions |
//! |---|---|---|
//! | `emqx4-clients` | `client.connected`, `client.disconnected` | [`on_client_connected`], [`on_client_disconnected`] |
//! | `emqx4-messages` | `message.publish` on `#` | [`on_message_publish`], [`on_message_retain`], [`on_retain_delete`] |
//! | `emqx4-sessions` | `session.created`, `session.subscribed`, `session.unsubscribed`, `message.acked` | [`on_subscribe_lookup`], [`on_message_fetch_for_queue`], [`on_message_fetch_for_pubsub`], [`on_session_unsubscribed`], [`on_message_acked_for_queue`], [`on_message_acked_for_pubsub`] |
//! | `emqx4-channel` | the Redis channel `mqtt_channel` | [`on_channel_message`] (SUB/UNSUB) |
//! | `emqx4-retain-lookup` | `session.subscribed` | [`on_retain_lookup`] |
//!
//! The first two work with any broker (client events with an EMQX, `--emqx-events`);
//! the others need the embedded broker, and wasmrule refuses them at load otherwise.

use std::borrow::Cow;

use wasmrule_guest::{Action, Command, Context, Event, RuleError, Value, action};

pub mod layout;

use layout::{acked_key, client_key, msg_key, node_key, retain_key, sub_key, topic_key};

/// How long stored and retained messages live, seconds: the plugin's `expired_time`
/// (3600 by default). Set at build time: `EMQX4_EXPIRED_TIME=600 rules-wasm/build.sh rust`.
pub const EXPIRED_TIME: u64 = parse_or(option_env!("EMQX4_EXPIRED_TIME"), 3600);

/// Most stored messages one subscription fetches (each is one action; the host's
/// `limits.max_commands`, 1000 by default, bounds an invocation's actions). The rest
/// stay stored and come with the next subscription. Build time:
/// `EMQX4_MAX_FETCH`.
pub const MAX_FETCH: u64 = parse_or(option_env!("EMQX4_MAX_FETCH"), 1000);

/// Stored messages read per `SORT_RO` page.
const PAGE: u64 = 250;

/// The user property that names a delivered message's id, so that its
/// `message.acked` event carries it (wasmrule's embedded broker reads it back).
pub const MSGID_PROPERTY: &str = "wasmrule-msgid";

const fn parse_or(s: Option<&str>, default: u64) -> u64 {
    let Some(s) = s else { return default };
    let b = s.as_bytes();
    if b.is_empty() {
        return default;
    }
    let mut n: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        assert!(
            b[i].is_ascii_digit(),
            "EMQX4_* build settings are whole numbers"
        );
        n = n * 10 + (b[i] - b'0') as u64;
        i += 1;
    }
    n
}

/// Seconds since the Unix epoch of the event: the plugin's `ts`, `online_at` and
/// `offline_at` are in seconds.
fn seconds(e: &Event) -> u64 {
    e.timestamp() / 1000
}

fn clientid<'e>(e: &'e Event) -> Result<&'e str, RuleError> {
    e.clientid()
        .ok_or_else(|| RuleError::new(format!("{} without a clientid", e.event_type())))
}

fn cmd(name: &str) -> Command {
    Command::new(name)
}

// ---------------------------------------------------------------------------------
// Client state: mqtt:client:<clientid>, mqtt:node:<node>
// ---------------------------------------------------------------------------------

/// `client.connected`: `HSET mqtt:client:<clientid> state 1 online_at <ts> offline_at
/// undefined`, and the client joins `mqtt:node:<node>`.
pub fn on_client_connected(e: &Event) -> Result<Vec<Action>, RuleError> {
    let id = clientid(e)?;
    let ts = seconds(e);
    Ok(vec![
        cmd("HSET")
            .arg(client_key(id))
            .arg("state")
            .arg("1")
            .arg("online_at")
            .arg(ts)
            .arg("offline_at")
            .arg("undefined")
            .into(),
        cmd("HSET").arg(node_key(e.node())).arg(id).arg(ts).into(),
    ])
}

/// `client.disconnected`: `state 0` and `offline_at <ts>`, and the client leaves
/// `mqtt:node:<node>`. Not when the connection ended because a new one took the client
/// id over (`kicked`, `session_taken_over`): the client is online on the new one, whose
/// `client.connected` came first.
pub fn on_client_disconnected(e: &Event) -> Result<Vec<Action>, RuleError> {
    let id = clientid(e)?;
    let reason = e.get("reason");
    if matches!(
        reason.as_ref().and_then(|r| r.as_str()),
        Some("kicked" | "session_taken_over")
    ) {
        return Ok(Vec::new());
    }
    Ok(vec![
        cmd("HSET")
            .arg(client_key(id))
            .arg("state")
            .arg("0")
            .arg("offline_at")
            .arg(seconds(e))
            .into(),
        cmd("HDEL").arg(node_key(e.node())).arg(id).into(),
    ])
}

// ---------------------------------------------------------------------------------
// Stored and retained messages: mqtt:msg:<msgid>, mqtt:msg:<topic>, mqtt:retain:<topic>
// ---------------------------------------------------------------------------------

/// The message id of a message event: `msgid`, or for a source that gives none, the
/// event id.
fn msgid<'e>(e: &'e Event) -> Cow<'e, str> {
    match e.get("msgid") {
        Some(serde_json::Value::String(s)) => Cow::Owned(s),
        _ => Cow::Borrowed(e.id()),
    }
}

/// `HSET <key> id from qos topic retain payload ts`, the plugin's message hash.
fn message_hash(key: String, e: &Event, id: &str, payload: &[u8]) -> Command {
    cmd("HSET")
        .arg(key)
        .arg("id")
        .arg(id)
        .arg("from")
        .arg(e.clientid().unwrap_or("undefined"))
        .arg("qos")
        .arg(e.qos())
        .arg("topic")
        .arg(e.topic())
        .arg("retain")
        .arg(if e.retain() { "true" } else { "false" })
        .arg("payload")
        .arg(payload)
        .arg("ts")
        .arg(seconds(e))
}

/// Every `message.publish`: the message is stored for `expired_time`
/// (`HSET mqtt:msg:<msgid> ...`, `EXPIRE`) and indexed under its topic
/// (`ZADD mqtt:msg:<topic> <ms> <msgid>`). The score is the publish time in
/// milliseconds and ids sort by publish time, so the index is in publish order (EMQX 4
/// gave every member the score 1, ordering by id text). A retained publish with an
/// empty payload clears the retained message and is not stored.
pub fn on_message_publish(e: &Event) -> Result<Vec<Action>, RuleError> {
    let payload = e.payload_bytes()?;
    if e.retain() && payload.is_empty() {
        return Ok(Vec::new());
    }
    let id = msgid(e);
    let score = e
        .get("publish_received_at")
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| e.timestamp());
    Ok(vec![
        message_hash(msg_key(&id), e, &id, &payload).into(),
        cmd("EXPIRE").arg(msg_key(&id)).arg(EXPIRED_TIME).into(),
        cmd("ZADD")
            .arg(topic_key(e.topic()))
            .arg(score)
            .arg(id.as_ref())
            .into(),
        // The index outlives none of its messages by more than `expired_time`.
        cmd("EXPIRE")
            .arg(topic_key(e.topic()))
            .arg(EXPIRED_TIME)
            .into(),
    ])
}

/// A retained `message.publish` with a payload: `HSET mqtt:retain:<topic> ...` for
/// `expired_time`, and the topic joins `mqtt:retained` (the set the retain lookup reads
/// for wildcard filters; not a key of the plugin's).
pub fn on_message_retain(e: &Event) -> Result<Vec<Action>, RuleError> {
    let payload = e.payload_bytes()?;
    if !e.retain() || payload.is_empty() {
        return Ok(Vec::new());
    }
    let id = msgid(e);
    Ok(vec![
        message_hash(retain_key(e.topic()), e, &id, &payload).into(),
        cmd("EXPIRE")
            .arg(retain_key(e.topic()))
            .arg(EXPIRED_TIME)
            .into(),
        cmd("SADD")
            .arg(layout::RETAINED_TOPICS)
            .arg(e.topic())
            .into(),
    ])
}

/// A retained `message.publish` with an empty payload: the topic's retained message is
/// deleted.
pub fn on_retain_delete(e: &Event) -> Result<Vec<Action>, RuleError> {
    if !e.retain() || !e.payload_bytes()?.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![
        cmd("DEL").arg(retain_key(e.topic())).into(),
        cmd("SREM")
            .arg(layout::RETAINED_TOPICS)
            .arg(e.topic())
            .into(),
    ])
}

// ---------------------------------------------------------------------------------
// Sessions: mqtt:sub:<clientid>, offline messages, acks
// ---------------------------------------------------------------------------------

fn qos_of(v: &Value) -> u8 {
    // The plugin's QoS 2 subscriptions are QoS 1 here: actions are at most QoS 1.
    match v.as_str().and_then(|s| s.trim().parse::<u8>().ok()) {
        Some(0) => 0,
        _ => 1,
    }
}

/// `session.created`: `HGETALL mqtt:sub:<clientid>`, and the client is subscribed to
/// each topic at its QoS.
pub fn on_subscribe_lookup(e: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let id = clientid(e)?;
    let subs = ctx.hgetall(sub_key(id))?;
    Ok(subs
        .pairs()
        .filter_map(|(topic, qos)| Some(action::subscribe(id, topic.as_str()?, qos_of(qos))))
        .collect())
}

/// A stored message as the fetch reads it.
struct Stored {
    id: String,
    from_qos: u8,
    payload: Vec<u8>,
}

/// The stored messages of `topic` from position `from` on, in publish order, at most
/// [`MAX_FETCH`]: one `SORT_RO` per page, ids with their hash fields. Ids whose hash
/// has expired come back in `gone`.
fn stored_messages(
    ctx: &mut Context,
    topic: &str,
    mut from: u64,
    keep: impl Fn(&str) -> bool,
) -> Result<(Vec<Stored>, Vec<String>), RuleError> {
    let (mut out, mut gone) = (Vec::new(), Vec::new());
    let field = |f: &str| format!("{}*->{f}", layout::MSG_PREFIX);
    loop {
        let page = ctx.read(&[
            "SORT_RO".to_owned(),
            topic_key(topic),
            "BY".into(),
            "nosort".into(),
            "LIMIT".into(),
            from.to_string(),
            PAGE.to_string(),
            "GET".into(),
            "#".into(),
            "GET".into(),
            field("qos"),
            "GET".into(),
            field("payload"),
        ])?;
        let items = page.into_array().unwrap_or_default();
        let n = items.len() / 3;
        let mut it = items.into_iter();
        while let (Some(id), Some(qos), Some(payload)) = (it.next(), it.next(), it.next()) {
            let Some(id) = id.as_str().map(str::to_owned) else {
                continue;
            };
            match payload.into_bytes() {
                None => gone.push(id),
                Some(_) if !keep(&id) => {}
                Some(payload) => out.push(Stored {
                    id,
                    from_qos: qos_of(&qos),
                    payload,
                }),
            }
            if out.len() as u64 >= MAX_FETCH {
                return Ok((out, gone));
            }
        }
        if (n as u64) < PAGE {
            return Ok((out, gone));
        }
        from += PAGE;
    }
}

/// The deliveries of fetched messages, with their ids, and the removal of expired ones
/// from the index.
fn deliveries(e: &Event, client: &str, stored: (Vec<Stored>, Vec<String>)) -> Vec<Action> {
    let topic = e.topic();
    let granted = e.qos();
    let (messages, gone) = stored;
    let mut out: Vec<Action> = Vec::with_capacity(messages.len() + 1);
    if !gone.is_empty() {
        let mut zrem = cmd("ZREM").arg(topic_key(topic));
        for id in &gone {
            zrem = zrem.arg(id.as_str());
        }
        out.push(zrem.into());
    }
    for m in messages {
        out.push(
            action::deliver(client, topic, m.payload)
                .qos(m.from_qos.min(granted))
                .property(MSGID_PROPERTY, m.id)
                .into(),
        );
    }
    out
}

/// Whether a `session.subscribed` is for a filter the session already had: what was
/// published meanwhile is in the broker's own queue for the session, not to be fetched
/// again.
fn resubscribed(e: &Event) -> bool {
    e.get("is_new").and_then(|v| v.as_bool()) == Some(false)
}

/// The publish time (ms) in a message id (its first 12 hex digits).
fn id_time(id: &str) -> Option<u64> {
    u64::from_str_radix(id.get(..12)?, 16).ok()
}

/// Whether a stored message was published before the subscription: later ones reach
/// the subscriber live. The embedded broker says where that is (`first_msgid`: ids from
/// it on were routed to the subscription); otherwise the subscription's time in ms.
fn before(e: &Event) -> impl Fn(&str) -> bool {
    let first = match e.get("first_msgid") {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    let at = e.timestamp();
    move |id: &str| match &first {
        Some(first) => id < first.as_str(),
        None => id_time(id).is_none_or(|t| t <= at),
    }
}

/// `session.subscribed` to a `queue/#` topic: its stored messages are delivered to the
/// subscriber, in publish order (one-to-one: the first to acknowledge one removes it
/// for everyone, [`on_message_acked_for_queue`]).
pub fn on_message_fetch_for_queue(e: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let id = clientid(e)?;
    if resubscribed(e) || layout::has_wildcard(e.topic()) {
        return Ok(Vec::new());
    }
    let stored = stored_messages(ctx, e.topic(), 0, before(e))?;
    Ok(deliveries(e, id, stored))
}

/// `session.subscribed` to a `pubsub/#` topic: the stored messages after the client's
/// cursor `mqtt:acked:<clientid>:<topic>` are delivered (one-to-many: each subscriber
/// has its own cursor).
pub fn on_message_fetch_for_pubsub(e: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let id = clientid(e)?;
    let topic = e.topic();
    if resubscribed(e) || layout::has_wildcard(topic) {
        return Ok(Vec::new());
    }
    let cursor = ctx.get(acked_key(id, topic))?;
    let cursor = cursor.as_str().map(str::to_owned);
    // Start after the cursor's position when it is still indexed; ids compare in
    // publish order, so the ones before it are skipped either way.
    let from = match &cursor {
        Some(c) => ctx
            .read(&["ZRANK", &topic_key(topic), c])?
            .as_i64()
            .map_or(0, |r| r as u64 + 1),
        None => 0,
    };
    let published_before = before(e);
    let keep = move |m: &str| published_before(m) && cursor.as_deref().is_none_or(|c| m > c);
    let stored = stored_messages(ctx, topic, from, keep)?;
    Ok(deliveries(e, id, stored))
}

/// `session.unsubscribed`: `DEL mqtt:acked:<clientid>:<topic>`.
pub fn on_session_unsubscribed(e: &Event) -> Result<Vec<Action>, RuleError> {
    let id = clientid(e)?;
    Ok(vec![cmd("DEL").arg(acked_key(id, e.topic())).into()])
}

/// `message.acked` of a `queue/#` message: it is removed (its hash and its index
/// entry). A message without an id (one a rule published) is not a stored one.
pub fn on_message_acked_for_queue(e: &Event) -> Result<Vec<Action>, RuleError> {
    let Some(serde_json::Value::String(id)) = e.get("msgid") else {
        return Ok(Vec::new());
    };
    Ok(vec![
        cmd("ZREM")
            .arg(topic_key(e.topic()))
            .arg(id.as_str())
            .into(),
        cmd("DEL").arg(msg_key(&id)).into(),
    ])
}

/// `message.acked` of a `pubsub/#` message: `SET mqtt:acked:<clientid>:<topic> <msgid>`.
pub fn on_message_acked_for_pubsub(e: &Event) -> Result<Vec<Action>, RuleError> {
    let Some(serde_json::Value::String(id)) = e.get("msgid") else {
        return Ok(Vec::new());
    };
    let client = clientid(e)?;
    Ok(vec![
        cmd("SET").arg(acked_key(client, e.topic())).arg(id).into(),
    ])
}

// ---------------------------------------------------------------------------------
// SUB/UNSUB over Redis: the channel mqtt_channel
// ---------------------------------------------------------------------------------

/// A message on `mqtt_channel`, as a business server publishes it:
/// `{"type": "subscribe", "topic": "topic0", "clientid": "test", "qos": "0"}`.
#[derive(serde::Deserialize)]
struct ChannelMessage {
    #[serde(rename = "type")]
    kind: String,
    topic: String,
    clientid: String,
    #[serde(default)]
    qos: Option<serde_json::Value>,
}

/// SUB/UNSUB: a `subscribe` records the subscription in `mqtt:sub:<clientid>` and
/// subscribes the connected client (one not connected gets it from
/// [`on_subscribe_lookup`] when it next starts a session); an `unsubscribe` removes
/// both. Anything else is an error naming what is wrong, and changes nothing.
pub fn on_channel_message(e: &Event) -> Result<Vec<Action>, RuleError> {
    let text = e
        .payload_text()
        .ok_or("mqtt_channel: the message is not text")?;
    let m: ChannelMessage = serde_json::from_str(text)
        .map_err(|err| RuleError::new(format!("mqtt_channel: not a SUB/UNSUB message: {err}")))?;
    if !wasmrule_guest::topic::is_valid_filter(&m.topic) {
        return Err(RuleError::new(format!(
            "mqtt_channel: {:?} is not a topic filter",
            m.topic
        )));
    }
    if m.clientid.is_empty() {
        return Err("mqtt_channel: empty clientid".into());
    }
    match m.kind.as_str() {
        "subscribe" => {
            let qos = match &m.qos {
                None => 0,
                Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(u64::MAX),
                Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(u64::MAX),
                Some(_) => u64::MAX,
            };
            if qos > 2 {
                return Err(RuleError::new(format!(
                    "mqtt_channel: qos {:?} is not 0, 1 or 2",
                    m.qos
                )));
            }
            Ok(vec![
                cmd("HSET")
                    .arg(sub_key(&m.clientid))
                    .arg(m.topic.as_str())
                    .arg(qos)
                    .into(),
                action::subscribe(m.clientid.as_str(), m.topic.as_str(), qos.min(1) as u8),
            ])
        }
        "unsubscribe" => Ok(vec![
            cmd("HDEL")
                .arg(sub_key(&m.clientid))
                .arg(m.topic.as_str())
                .into(),
            action::unsubscribe(m.clientid.as_str(), m.topic.as_str()),
        ]),
        other => Err(RuleError::new(format!(
            "mqtt_channel: type {other:?} is neither \"subscribe\" nor \"unsubscribe\""
        ))),
    }
}

// ---------------------------------------------------------------------------------
// Retained messages for new subscribers
// ---------------------------------------------------------------------------------

/// `session.subscribed`: the retained messages the filter matches are delivered
/// (retain flag set). An exact topic is one `HGETALL mqtt:retain:<topic>`; a wildcard
/// filter reads every retained topic with its message in one `SORT_RO` over
/// `mqtt:retained` and matches them with MQTT's rules (EMQX 4 matched exact topics
/// only). Topics whose message expired leave `mqtt:retained`.
pub fn on_retain_lookup(e: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let client = clientid(e)?;
    let filter = e.topic();
    let granted = e.qos();
    let deliver = |topic: &str, qos: &Value, payload: Vec<u8>, id: Option<&str>| -> Action {
        let mut d = action::deliver(client, topic, payload)
            .qos(qos_of(qos).min(granted))
            .retain(true);
        if let Some(id) = id {
            d = d.property(MSGID_PROPERTY, id);
        }
        d.into()
    };
    if !layout::has_wildcard(filter) {
        let h = ctx.hgetall(retain_key(filter))?;
        let get = |name: &str| {
            h.pairs()
                .find(|(f, _)| f.as_str() == Some(name))
                .map(|(_, v)| v.clone())
        };
        let Some(payload) = get("payload").and_then(Value::into_bytes) else {
            return Ok(Vec::new());
        };
        let id = get("id");
        let qos = get("qos").unwrap_or(Value::Nil);
        return Ok(vec![deliver(
            filter,
            &qos,
            payload,
            id.as_ref().and_then(Value::as_str),
        )]);
    }
    let field = |f: &str| format!("{}*->{f}", layout::RETAIN_PREFIX);
    let all = ctx.read(&[
        "SORT_RO".to_owned(),
        layout::RETAINED_TOPICS.to_owned(),
        "BY".into(),
        "nosort".into(),
        "GET".into(),
        "#".into(),
        "GET".into(),
        field("id"),
        "GET".into(),
        field("qos"),
        "GET".into(),
        field("payload"),
    ])?;
    let mut out = Vec::new();
    let mut gone = Vec::new();
    let mut it = all.into_array().unwrap_or_default().into_iter();
    while let (Some(topic), Some(id), Some(qos), Some(payload)) =
        (it.next(), it.next(), it.next(), it.next())
    {
        let Some(topic) = topic.as_str().map(str::to_owned) else {
            continue;
        };
        match payload.into_bytes() {
            None => gone.push(topic),
            Some(p) if wasmrule_topic::matches(filter, &topic) => {
                out.push(deliver(&topic, &qos, p, id.as_str()));
            }
            Some(_) => {}
        }
        if out.len() as u64 >= MAX_FETCH {
            break;
        }
    }
    if !gone.is_empty() {
        let mut srem = cmd("SREM").arg(layout::RETAINED_TOPICS);
        for t in &gone {
            srem = srem.arg(t.as_str());
        }
        out.insert(0, srem.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
