//! The pack's logic against the SDK's Redis model: each event's commands are applied
//! to the model, so later events read what earlier ones wrote, as in a real run
//! (tests/emqx4.rs runs the built rules against a real broker and Redis).

use wasmrule_guest::testing::FakeRedis;
use wasmrule_guest::{Action, Event};

use super::*;

fn event(json: &str) -> Event<'_> {
    Event::from_json(json.as_bytes()).unwrap()
}

fn run(redis: &mut FakeRedis, actions: Result<Vec<Action>, RuleError>) -> Vec<String> {
    let actions = actions.unwrap();
    redis.apply(&actions).unwrap();
    actions.iter().map(ToString::to_string).collect()
}

/// Runs a rule function that reads, with a fresh read budget, and applies its writes.
fn with_reads(
    redis: &mut FakeRedis,
    f: impl Fn(&Event, &mut wasmrule_guest::Context) -> Result<Vec<Action>, RuleError>,
    json: &str,
) -> Vec<String> {
    redis.reset_budget();
    let actions = f(&event(json), &mut redis.context());
    run(redis, actions)
}

fn hash(redis: &mut FakeRedis, key: &str) -> Vec<(String, String)> {
    let v = redis.context().hgetall(key).unwrap();
    v.pairs()
        .map(|(f, v)| {
            (
                f.as_str().unwrap().to_owned(),
                String::from_utf8_lossy(v.as_bytes().unwrap()).into_owned(),
            )
        })
        .collect()
}

fn publish(redis: &mut FakeRedis, topic: &str, msgid: &str, ms: u64, payload: &str, retain: bool) {
    let json = format!(
        r#"{{"event":"message.publish","id":"E{msgid}","msgid":"{msgid}","clientid":"pub",
        "topic":"{topic}","qos":1,"retain":{retain},"payload":"{payload}",
        "payload_encoding":"utf8","timestamp":{ms},"publish_received_at":{ms},"node":"n"}}"#
    );
    let e = event(&json);
    let mut out = on_message_publish(&e).unwrap();
    out.extend(on_message_retain(&e).unwrap());
    out.extend(on_retain_delete(&e).unwrap());
    redis.apply(&out).unwrap();
}

/// A message id as wasmrule makes them: the publish time in ms, then a counter.
fn id(ms: u64, n: u64) -> String {
    format!("{ms:012X}{n:010X}0000000001")
}

fn subscribed(client: &str, topic: &str, ms: u64, is_new: bool) -> String {
    format!(
        r#"{{"event":"session.subscribed","id":"S","clientid":"{client}","topic":"{topic}",
        "qos":1,"is_new":{is_new},"timestamp":{ms},"node":"n"}}"#
    )
}

fn acked(client: &str, topic: &str, msgid: &str) -> String {
    format!(
        r#"{{"event":"message.acked","id":"A","clientid":"{client}","topic":"{topic}",
        "msgid":"{msgid}","qos":1,"payload":"x","timestamp":1,"node":"n"}}"#
    )
}

#[test]
fn client_state_is_the_seeds_hash() {
    let mut redis = FakeRedis::new();
    let on = r#"{"event":"client.connected","id":"1","clientid":"test","timestamp":1481685802000,"node":"emqx@127.0.0.1"}"#;
    run(&mut redis, on_client_connected(&event(on)));
    assert_eq!(
        hash(&mut redis, "mqtt:client:test"),
        [
            ("state", "1"),
            ("online_at", "1481685802"),
            ("offline_at", "undefined")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(
        hash(&mut redis, "mqtt:node:emqx@127.0.0.1"),
        [("test".to_owned(), "1481685802".to_owned())]
    );
    let off = r#"{"event":"client.disconnected","id":"2","clientid":"test","reason":"normal","timestamp":1481685924000,"node":"emqx@127.0.0.1"}"#;
    run(&mut redis, on_client_disconnected(&event(off)));
    assert_eq!(
        hash(&mut redis, "mqtt:client:test"),
        [
            ("state", "0"),
            ("online_at", "1481685802"),
            ("offline_at", "1481685924")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert!(hash(&mut redis, "mqtt:node:emqx@127.0.0.1").is_empty());
    // Taken over by a new connection: still online.
    run(&mut redis, on_client_connected(&event(on)));
    let kicked = off.replace("normal", "kicked");
    assert!(run(&mut redis, on_client_disconnected(&event(&kicked))).is_empty());
}

#[test]
fn messages_are_stored_in_publish_order_and_retained_ones_kept() {
    let mut redis = FakeRedis::new();
    let (a, b) = (id(1_700_000_000_000, 1), id(1_700_000_000_000, 2));
    publish(&mut redis, "t/1", &b, 1_700_000_000_000, "second", false);
    publish(&mut redis, "t/1", &a, 1_700_000_000_000, "first", false);
    let h = hash(&mut redis, &format!("mqtt:msg:{a}"));
    let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["id", "from", "qos", "topic", "retain", "payload", "ts"]
    );
    assert_eq!(h[5].1, "first");
    assert_eq!(h[6].1, "1700000000");
    // Same millisecond: the id decides, and ids count up.
    let order = redis.context().zrange("mqtt:msg:t/1", 0, -1).unwrap();
    let order: Vec<&str> = order
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(order, [a.as_str(), b.as_str()]);
    assert!(redis.context().pttl(format!("mqtt:msg:{a}")).unwrap() > 0);

    publish(&mut redis, "topic", &id(5, 1), 5_000, "Hello world!", true);
    let r = hash(&mut redis, "mqtt:retain:topic");
    assert_eq!(r[1], ("from".into(), "pub".into()));
    assert_eq!(r[4], ("retain".into(), "true".into()));
    assert_eq!(r[5], ("payload".into(), "Hello world!".into()));
    assert!(redis.context().sismember("mqtt:retained", "topic").unwrap());
    publish(&mut redis, "topic", &id(6, 1), 6_000, "", true);
    assert!(hash(&mut redis, "mqtt:retain:topic").is_empty());
    assert!(!redis.context().sismember("mqtt:retained", "topic").unwrap());
}

#[test]
fn a_queue_is_fetched_in_order_once_and_an_ack_removes_for_everyone() {
    let mut redis = FakeRedis::new();
    let ids: Vec<String> = (0..5).map(|i| id(1_000 + i, i)).collect();
    for (i, m) in ids.iter().enumerate() {
        publish(
            &mut redis,
            "queue/a",
            m,
            1_000 + i as u64,
            &format!("m{i}"),
            false,
        );
    }
    // Published after the subscription: comes live, not fetched.
    publish(&mut redis, "queue/a", &id(9_000, 9), 9_000, "late", false);
    let sub = subscribed("c1", "queue/a", 2_000, true);
    let out = with_reads(&mut redis, on_message_fetch_for_queue, &sub);
    assert_eq!(out.len(), 5, "{out:?}");
    for (i, line) in out.iter().enumerate() {
        assert_eq!(
            line,
            &format!(
                "MQTT DELIVER c1 queue/a qos=1 retain=0 prop:wasmrule-msgid={} payload=m{i}",
                ids[i]
            )
        );
    }
    // A resubscription of a filter the session had: the broker's queue has it.
    let again = subscribed("c1", "queue/a", 2_000, false);
    assert!(with_reads(&mut redis, on_message_fetch_for_queue, &again).is_empty());
    for m in &ids {
        run(
            &mut redis,
            on_message_acked_for_queue(&event(&acked("c1", "queue/a", m))),
        );
    }
    let other = subscribed("c2", "queue/a", 2_000, true);
    assert!(with_reads(&mut redis, on_message_fetch_for_queue, &other).is_empty());
    assert!(hash(&mut redis, &format!("mqtt:msg:{}", ids[0])).is_empty());
}

#[test]
fn pubsub_subscribers_each_get_what_follows_their_own_cursor() {
    let mut redis = FakeRedis::new();
    let ids: Vec<String> = (0..4).map(|i| id(1_000 + i, i)).collect();
    for (i, m) in ids.iter().enumerate() {
        publish(
            &mut redis,
            "pubsub/b",
            m,
            1_000 + i as u64,
            &format!("m{i}"),
            false,
        );
    }
    run(
        &mut redis,
        on_message_acked_for_pubsub(&event(&acked("c1", "pubsub/b", &ids[1]))),
    );
    let fetch = |redis: &mut FakeRedis, client: &str| {
        let e = subscribed(client, "pubsub/b", 5_000, true);
        with_reads(redis, on_message_fetch_for_pubsub, &e)
    };
    let c1 = fetch(&mut redis, "c1");
    assert_eq!(c1.len(), 2, "{c1:?}");
    assert!(c1[0].ends_with("payload=m2") && c1[1].ends_with("payload=m3"));
    assert_eq!(fetch(&mut redis, "c2").len(), 4);
    // Unsubscribing forgets the cursor.
    let unsub = r#"{"event":"session.unsubscribed","id":"U","clientid":"c1","topic":"pubsub/b","timestamp":1,"node":"n"}"#;
    assert_eq!(
        run(&mut redis, on_session_unsubscribed(&event(unsub))),
        ["DEL mqtt:acked:c1:pubsub/b"]
    );
    assert_eq!(fetch(&mut redis, "c1").len(), 4);
}

#[test]
fn sub_and_unsub_over_the_channel() {
    let mut redis = FakeRedis::new();
    let msg = |payload: &str| {
        format!(
            r#"{{"event":"redis.message","id":"R","topic":"$redis/channel/mqtt_channel","channel":"mqtt_channel","payload":{},"timestamp":1,"node":"n"}}"#,
            serde_json::Value::from(payload)
        )
    };
    let sub = msg(r#"{"type": "subscribe", "topic": "topic0", "clientid": "test", "qos": "0"}"#);
    assert_eq!(
        run(&mut redis, on_channel_message(&event(&sub))),
        [
            "HSET mqtt:sub:test topic0 0",
            "MQTT SUBSCRIBE test topic0 qos=0"
        ]
    );
    let unsub = msg(r#"{"type": "unsubscribe", "topic": "topic0", "clientid": "test"}"#);
    assert_eq!(
        run(&mut redis, on_channel_message(&event(&unsub))),
        ["HDEL mqtt:sub:test topic0", "MQTT UNSUBSCRIBE test topic0"]
    );
    for (bad, says) in [
        ("{not json", "not a SUB/UNSUB message"),
        (
            r#"{"type":"subscribe","topic":"a/#/b","clientid":"c"}"#,
            "not a topic filter",
        ),
        (
            r#"{"type":"subscribe","topic":"a","clientid":"c","qos":"7"}"#,
            "not 0, 1 or 2",
        ),
        (r#"{"type":"move","topic":"a","clientid":"c"}"#, "neither"),
    ] {
        let err = on_channel_message(&event(&msg(bad))).unwrap_err();
        assert!(err.message().contains(says), "{bad}: {}", err.message());
    }
    // The session lookup subscribes what the hash lists.
    let created =
        r#"{"event":"session.created","id":"C","clientid":"test","timestamp":1,"node":"n"}"#;
    run(&mut redis, on_channel_message(&event(&sub)));
    assert_eq!(
        with_reads(&mut redis, on_subscribe_lookup, created),
        ["MQTT SUBSCRIBE test topic0 qos=0"]
    );
}

#[test]
fn retained_messages_reach_new_subscribers_of_matching_filters() {
    let mut redis = FakeRedis::new();
    publish(&mut redis, "sensors/a/temp", &id(1, 1), 1_000, "21", true);
    publish(&mut redis, "sensors/b/temp", &id(2, 1), 2_000, "22", true);
    publish(&mut redis, "sensors/b/hum", &id(3, 1), 3_000, "40", true);
    let lookup = |redis: &mut FakeRedis, filter: &str| {
        let e = subscribed("c", filter, 9_000, true);
        let mut out = with_reads(redis, on_retain_lookup, &e);
        out.sort();
        out
    };
    let temps = lookup(&mut redis, "sensors/+/temp");
    assert_eq!(temps.len(), 2, "{temps:?}");
    assert!(temps[0].starts_with("MQTT DELIVER c sensors/a/temp qos=1 retain=1"));
    assert!(temps[0].ends_with("payload=21"));
    assert_eq!(lookup(&mut redis, "sensors/#").len(), 3);
    let exact = lookup(&mut redis, "sensors/b/hum");
    assert_eq!(exact.len(), 1);
    assert!(exact[0].contains(&format!("prop:wasmrule-msgid={}", id(3, 1))));
    assert!(lookup(&mut redis, "other/#").is_empty());
}
