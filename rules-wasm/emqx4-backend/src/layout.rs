//! The plugin's key layout (EMQX 4 `emqx_backend_redis`), in one place.

/// `mqtt:client:<clientid>`: hash `state`, `online_at`, `offline_at`.
pub fn client_key(clientid: &str) -> String {
    format!("mqtt:client:{clientid}")
}

/// `mqtt:node:<node>`: hash clientid -> connect time, the clients online on a node.
pub fn node_key(node: &str) -> String {
    format!("mqtt:node:{node}")
}

/// `mqtt:sub:<clientid>`: hash topic -> QoS, the subscriptions a business server keeps.
pub fn sub_key(clientid: &str) -> String {
    format!("mqtt:sub:{clientid}")
}

/// What `mqtt:msg:<msgid>` keys start with (`SORT_RO ... GET mqtt:msg:*->payload`).
pub const MSG_PREFIX: &str = "mqtt:msg:";

/// `mqtt:msg:<msgid>`: hash `id from qos topic retain payload ts`, a stored message.
pub fn msg_key(msgid: &str) -> String {
    format!("{MSG_PREFIX}{msgid}")
}

/// `mqtt:msg:<topic>`: sorted set of the topic's stored message ids, in publish order.
/// The same prefix as the message hashes, as in the plugin: ids are 32 hex digits, so
/// only a topic of that form could collide with a message id.
pub fn topic_key(topic: &str) -> String {
    format!("{MSG_PREFIX}{topic}")
}

/// What `mqtt:retain:<topic>` keys start with.
pub const RETAIN_PREFIX: &str = "mqtt:retain:";

/// `mqtt:retain:<topic>`: hash `id from qos topic retain payload ts`, the topic's
/// retained message.
pub fn retain_key(topic: &str) -> String {
    format!("{RETAIN_PREFIX}{topic}")
}

/// Set of the topics that have a retained message: the index a wildcard retain lookup
/// reads. wasmrule's addition; outside the `mqtt:retain:` prefix so that no topic can
/// collide with it.
pub const RETAINED_TOPICS: &str = "mqtt:retained";

/// `mqtt:acked:<clientid>:<topic>`: string, the id of the last `pubsub/#` message the
/// client acknowledged on the topic.
pub fn acked_key(clientid: &str, topic: &str) -> String {
    format!("mqtt:acked:{clientid}:{topic}")
}

/// Whether `filter` has a wildcard level.
pub fn has_wildcard(filter: &str) -> bool {
    filter.split('/').any(|l| l == "+" || l == "#")
}
