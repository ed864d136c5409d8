//! The EMQX 4 Redis backend pack (`rules-wasm/emqx4-backend`) against real clients, a
//! real Redis, and wasmrule as the broker (and mosquitto, for what works with an
//! external broker): the seed's own examples (client state, subscriptions, retained
//! messages), offline messages for `queue/` (one-to-one) and `pubsub/` (one-to-many,
//! per-client cursors, across a restart), retained messages for wildcard subscribers
//! across a restart, SUB/UNSUB over `mqtt_channel`, and the broker's built-in retained
//! messages without the pack.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Commands as _;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use support::*;
use wasmrule::{Retained, Runtime};

const WAIT: Duration = Duration::from_secs(60);

/// The pack's rules.
const PACK: [&str; 5] = [
    "emqx4-clients",
    "emqx4-messages",
    "emqx4-sessions",
    "emqx4-channel",
    "emqx4-retain-lookup",
];

/// A message a client received.
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    payload: String,
    retain: bool,
}

/// An MQTT 5 client of the embedded broker that records what it receives (QoS 1
/// messages are acknowledged as they arrive).
struct Client {
    client: AsyncClient,
    got: Arc<Mutex<Vec<Got>>>,
    /// PUBACKs received: QoS 1 publishes the broker has taken (routed).
    pubacks: Arc<std::sync::atomic::AtomicUsize>,
    subacks: tokio::sync::mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects as `id`; with `persistent`, asks for a session that outlives the
    /// connection (clean start off, an hour's expiry). Returns once CONNACK is in.
    async fn connect(port: u16, id: &str, persistent: bool) -> Client {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_start(!persistent);
        if persistent {
            o.set_session_expiry_interval(Some(3600));
        }
        let (client, mut eventloop) = AsyncClient::new(o, 200);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (connack_tx, connack_rx) = tokio::sync::oneshot::channel();
        let (suback_tx, subacks) = tokio::sync::mpsc::unbounded_channel();
        let sink = got.clone();
        let pubacks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acked = pubacks.clone();
        let task = tokio::spawn(async move {
            let mut connack = Some(connack_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connack.take().map(|tx| tx.send(()));
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_) | Packet::UnsubAck(_))) => {
                        let _ = suback_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Got {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                        });
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, connack_rx)
            .await
            .expect("CONNACK")
            .unwrap();
        Client {
            client,
            got,
            pubacks,
            subacks,
            task,
        }
    }

    /// Subscribes to `filter` at QoS 1 and waits for the SUBACK.
    async fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        tokio::time::timeout(WAIT, self.subacks.recv())
            .await
            .expect("SUBACK");
    }

    async fn publish(&self, topic: &str, payload: &str, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_owned())
            .await
            .unwrap();
    }

    /// Waits until the broker has acknowledged `n` publishes in all: taken them and
    /// queued them for offline sessions. (A reconnect racing the routing of a message
    /// to its persistent session can reorder or lose it in rmqtt 0.24; docs/broker.md.)
    async fn published(&self, n: usize) {
        eventually(WAIT, "the broker's PUBACKs", || {
            (self.pubacks.load(std::sync::atomic::Ordering::Relaxed) >= n).then_some(())
        })
        .await;
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn payloads(&self, topic: &str) -> Vec<String> {
        self.got()
            .into_iter()
            .filter(|g| g.topic == topic)
            .map(|g| g.payload)
            .collect()
    }

    /// Disconnects (DISCONNECT, reason 0) and waits for the connection to end.
    async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

/// wasmrule with the embedded broker on a free port, the rules `rules` from dist/ in
/// `dir`, writing to `redis`.
async fn embedded(redis: &Redis, dir: &Path, rules: &[&str], retained: Retained) -> Runtime {
    for r in rules {
        install(&dist(r), dir, &format!("{r}.wasm"));
    }
    let mut config = embedded_config(redis, dir);
    if let Some(broker) = config.broker.as_mut() {
        broker.retained = retained;
    }
    let rt = Runtime::start(config).await.unwrap();
    assert_eq!(rt.rules.snapshot().len(), rules.len(), "every rule loaded");
    rt
}

fn port(rt: &Runtime) -> u16 {
    rt.broker_addr.unwrap().port()
}

/// Waits until the broker has seen `id` go (its state in `mqtt:client:<id>` is 0), so
/// that what is published next is for its session, not the closing connection.
async fn gone(redis: &Redis, id: &str) {
    eventually(WAIT, "the client's disconnect", || {
        (redis.hget(&format!("mqtt:client:{id}"), "state").as_deref() == Some("0")).then_some(())
    })
    .await;
}

fn zcard(redis: &Redis, key: &str) -> usize {
    redis.conn().zcard(key).unwrap()
}

fn numbers(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_examples_hold() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = embedded(&redis, dir.path(), &PACK, Retained::Rules).await;
    let port = port(&rt);

    // Online: state 1, online_at, offline_at undefined; and listed on the node.
    let test = Client::connect(port, "test", false).await;
    let state = eventually(WAIT, "mqtt:client:test online", || {
        let h = redis.hgetall("mqtt:client:test");
        (h.get("state").map(String::as_str) == Some("1")).then_some(h)
    })
    .await;
    assert_eq!(state["offline_at"], "undefined");
    let online_at: u64 = state["online_at"].parse().unwrap();
    assert!(
        online_at > 1_600_000_000 && online_at < 10_000_000_000,
        "seconds: {online_at}"
    );
    let node: Vec<String> = redis.conn().keys("mqtt:node:*").unwrap();
    assert_eq!(node.len(), 1, "{node:?}");
    assert_eq!(
        redis.hget(&node[0], "test").as_deref(),
        Some(state["online_at"].as_str())
    );

    // The business server subscribes `test` to topic1 and topic2 over mqtt_channel.
    let mut conn = redis.conn();
    for (topic, qos) in [("topic1", "1"), ("topic2", "2")] {
        let msg = format!(
            r#"{{"type": "subscribe", "topic": "{topic}", "clientid": "test", "qos": "{qos}"}}"#
        );
        eventually(WAIT, "the SUB reaches mqtt:sub:test", || {
            let _: i64 = conn.publish("mqtt_channel", &msg).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            redis.hget("mqtt:sub:test", topic).filter(|q| q == qos)
        })
        .await;
    }
    assert_eq!(
        redis.hgetall("mqtt:sub:test"),
        [("topic1", "1"), ("topic2", "2")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .into()
    );
    // ... and `test` now receives what is published there.
    let publisher = Client::connect(port, "publisher", false).await;
    let mut n = 0;
    eventually(WAIT, "test receives topic1 and topic2", || {
        n += 1;
        let p = publisher.client.clone();
        let payload = format!("hello-{n}");
        tokio::spawn(async move {
            let _ = p
                .publish("topic1", QoS::AtLeastOnce, false, payload.clone())
                .await;
            let _ = p.publish("topic2", QoS::AtLeastOnce, false, payload).await;
        });
        std::thread::sleep(Duration::from_millis(50));
        (!test.payloads("topic1").is_empty() && !test.payloads("topic2").is_empty()).then_some(())
    })
    .await;

    // A malformed message changes nothing, and is a dead letter naming why.
    let _: i64 = conn
        .publish("mqtt_channel", "{\"type\": subscribe")
        .unwrap();
    let reason = eventually(WAIT, "a dead letter for the malformed SUB", || {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> =
            redis::cmd("XRANGE")
                .arg("wasmrule:deadletter")
                .arg("-")
                .arg("+")
                .query(&mut conn)
                .ok()?;
        entries.into_iter().find_map(|(_, f)| {
            let r = f.get("reason")?;
            r.contains("mqtt_channel").then(|| r.clone())
        })
    })
    .await;
    assert!(reason.contains("not a SUB/UNSUB message"), "{reason}");
    assert_eq!(redis.hgetall("mqtt:sub:test").len(), 2);

    // UNSUB: topic1 stops arriving (a topic2 marker after each probe shows the probe
    // would have arrived by then), and leaves mqtt:sub:test.
    let unsub = r#"{"type": "unsubscribe", "topic": "topic1", "clientid": "test"}"#;
    let _: i64 = conn.publish("mqtt_channel", unsub).unwrap();
    let mut probe = 0;
    loop {
        probe += 1;
        let (before1, before2) = (test.payloads("topic1").len(), test.payloads("topic2").len());
        publisher
            .publish("topic1", &format!("probe-{probe}"), false)
            .await;
        publisher
            .publish("topic2", &format!("marker-{probe}"), false)
            .await;
        eventually(WAIT, "the topic2 marker", || {
            (test.payloads("topic2").len() > before2).then_some(())
        })
        .await;
        if test.payloads("topic1").len() == before1 {
            break;
        }
        assert!(probe < 100, "test still receives topic1 after the UNSUB");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        redis.hgetall("mqtt:sub:test").keys().collect::<Vec<_>>(),
        ["topic2"]
    );

    // A retained publish: mqtt:retain:topic with the seed's fields.
    publisher.publish("topic", "Hello world!", true).await;
    let retained = eventually(WAIT, "mqtt:retain:topic", || {
        let h = redis.hgetall("mqtt:retain:topic");
        (!h.is_empty()).then_some(h)
    })
    .await;
    let mut fields: Vec<&str> = retained.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["from", "id", "payload", "qos", "retain", "topic", "ts"]
    );
    assert_eq!(retained["from"], "publisher");
    assert_eq!(retained["payload"], "Hello world!");
    assert_eq!(retained["retain"], "true");
    assert_eq!(retained["qos"], "1");
    assert_eq!(retained["id"].len(), 32);

    // Offline: state 0 and offline_at; off the node.
    test.disconnect().await;
    let state = eventually(WAIT, "mqtt:client:test offline", || {
        let h = redis.hgetall("mqtt:client:test");
        (h.get("state").map(String::as_str) == Some("0")).then_some(h)
    })
    .await;
    let offline_at: u64 = state["offline_at"].parse().unwrap();
    assert!(offline_at >= online_at);
    assert_eq!(redis.hget(&node[0], "test"), None);
    publisher.disconnect().await;
    rt.stop().await;
}

/// `queue/a`, one-to-one, with a persistent session: what was published while it was
/// offline arrives exactly once and in order, and its acknowledgements remove the stored
/// messages, so a second subscriber gets none of them. Then the same without a session
/// (clean start): the messages come from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_messages_reach_one_subscriber_in_publish_order() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = embedded(&redis, dir.path(), &PACK, Retained::Rules).await;
    let port = port(&rt);
    let publisher = Client::connect(port, "publisher", false).await;

    for (topic, persistent) in [("queue/a", true), ("queue/b", false)] {
        let id = format!("worker-{}", topic.replace('/', "-"));
        let mut c = Client::connect(port, &id, persistent).await;
        c.subscribe(topic).await;
        c.disconnect().await;
        gone(&redis, &id).await;
        for p in numbers(1000) {
            publisher.publish(topic, &p, false).await;
        }
        publisher
            .published(if persistent { 1000 } else { 2001 })
            .await;
        let key = format!("mqtt:msg:{topic}");
        eventually(WAIT, "1,000 messages stored", || {
            (zcard(&redis, &key) == 1000).then_some(())
        })
        .await;

        let mut c = Client::connect(port, &id, persistent).await;
        c.subscribe(topic).await;
        eventually(WAIT, "1,000 received and acknowledged", || {
            (c.payloads(topic).len() >= 1000 && zcard(&redis, &key) == 0).then_some(())
        })
        .await;
        assert_eq!(
            c.payloads(topic),
            numbers(1000),
            "{topic}: exactly once, in order"
        );
        let hashes: Vec<String> = redis.conn().keys("mqtt:msg:0*").unwrap();
        assert!(
            hashes.is_empty(),
            "acknowledged messages removed: {hashes:?}"
        );

        // Nothing is stored for a second subscriber: it gets only what comes live.
        let mut second = Client::connect(port, &format!("{id}-2"), false).await;
        second.subscribe(topic).await;
        publisher.publish(topic, "live", false).await;
        eventually(WAIT, "the live message", || {
            (!second.payloads(topic).is_empty()).then_some(())
        })
        .await;
        assert_eq!(second.payloads(topic), ["live"]);
        assert_eq!(c.payloads(topic).len(), 1001);
        c.disconnect().await;
        second.disconnect().await;
    }
    publisher.disconnect().await;
    rt.stop().await;
}

/// `pubsub/b`, one-to-many: two persistent subscribers each get every message; after
/// a restart that lost both sessions, each gets what follows its own acknowledged
/// cursor (`mqtt:acked:<clientid>:pubsub/b`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_subscribers_resume_from_their_own_cursors() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let topic = "pubsub/b";
    let rt = embedded(&redis, dir.path(), &PACK, Retained::Rules).await;
    let port1 = port(&rt);
    let publisher = Client::connect(port1, "publisher", false).await;
    let mut subs = Vec::new();
    for id in ["p1", "p2"] {
        let mut c = Client::connect(port1, id, true).await;
        c.subscribe(topic).await;
        c.disconnect().await;
        gone(&redis, id).await;
    }
    for p in numbers(300) {
        publisher.publish(topic, &p, false).await;
    }
    publisher.published(300).await;
    for id in ["p1", "p2"] {
        let mut c = Client::connect(port1, id, true).await;
        c.subscribe(topic).await;
        subs.push(c);
    }
    let last = |redis: &Redis| -> Option<String> {
        let ids: Vec<String> = redis.conn().zrange("mqtt:msg:pubsub/b", -1, -1).ok()?;
        ids.into_iter().next()
    };
    let cursor =
        |id: &str| -> Option<String> { redis.conn().get(format!("mqtt:acked:{id}:{topic}")).ok() };
    eventually(
        WAIT,
        "both got 300 and their cursors are at the last",
        || {
            let l = last(&redis)?;
            (subs.iter().all(|c| c.payloads(topic).len() >= 300)
                && cursor("p1").as_ref() == Some(&l)
                && cursor("p2").as_ref() == Some(&l))
            .then_some(())
        },
    )
    .await;
    for c in &subs {
        assert_eq!(c.payloads(topic), numbers(300));
    }
    // p1 leaves; 200 more reach p2 live.
    let p2 = subs.pop().unwrap();
    subs.pop().unwrap().disconnect().await;
    gone(&redis, "p1").await;
    let more: Vec<String> = (300..500).map(|i| i.to_string()).collect();
    for p in &more {
        publisher.publish(topic, p, false).await;
    }
    eventually(WAIT, "p2 acknowledged all 500", || {
        (p2.payloads(topic).len() >= 500 && cursor("p2") == last(&redis)).then_some(())
    })
    .await;
    p2.disconnect().await;
    publisher.disconnect().await;
    rt.stop().await;

    // A new wasmrule (sessions were in memory: both are new). Each subscribes again.
    let dir2 = tempfile::tempdir().unwrap();
    let rt = embedded(&redis, dir2.path(), &PACK, Retained::Rules).await;
    let port2 = port(&rt);
    let mut p1 = Client::connect(port2, "p1", true).await;
    p1.subscribe(topic).await;
    let mut p2 = Client::connect(port2, "p2", true).await;
    p2.subscribe(topic).await;
    eventually(WAIT, "p1 got the 200 after its cursor", || {
        (p1.payloads(topic).len() >= 200 && cursor("p1") == last(&redis)).then_some(())
    })
    .await;
    assert_eq!(p1.payloads(topic), more);
    // p2 was at the end: a live message is all it gets.
    let publisher = Client::connect(port2, "publisher", false).await;
    publisher.publish(topic, "live", false).await;
    eventually(WAIT, "the live message", || {
        (!p2.payloads(topic).is_empty()).then_some(())
    })
    .await;
    assert_eq!(p2.payloads(topic), ["live"]);
    for c in [p1, p2, publisher] {
        c.disconnect().await;
    }
    rt.stop().await;
}

/// Retained messages kept in Redis reach a new wildcard subscriber, also after
/// wasmrule was restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_in_redis_outlive_a_restart() {
    let redis = Redis::start();
    let want = |c: &Client| {
        let mut got: Vec<(String, String, bool)> = c
            .got()
            .into_iter()
            .map(|g| (g.topic, g.payload, g.retain))
            .collect();
        got.sort();
        got
    };
    let temps = vec![
        ("sensors/a/temp".to_owned(), "21.5".to_owned(), true),
        ("sensors/b/temp".to_owned(), "19.0".to_owned(), true),
    ];
    for round in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let rt = embedded(&redis, dir.path(), &PACK, Retained::Rules).await;
        let port = port(&rt);
        if round == 0 {
            let publisher = Client::connect(port, "publisher", false).await;
            publisher.publish("sensors/a/temp", "21.5", true).await;
            publisher.publish("sensors/b/temp", "19.0", true).await;
            publisher.publish("sensors/b/hum", "40", true).await;
            publisher.publish("sensors/c/temp", "gone", true).await;
            publisher.publish("sensors/c/temp", "", true).await;
            eventually(WAIT, "three retained topics", || {
                let n: usize = redis.conn().scard("mqtt:retained").unwrap();
                let c = redis.hgetall("mqtt:retain:sensors/c/temp");
                (n == 3 && c.is_empty()).then_some(())
            })
            .await;
            publisher.disconnect().await;
        }
        let mut c = Client::connect(port, &format!("reader-{round}"), false).await;
        c.subscribe("sensors/+/temp").await;
        eventually(WAIT, "both retained temperatures", || {
            (c.got().len() >= 2).then_some(())
        })
        .await;
        assert_eq!(want(&c), temps, "round {round}");
        c.disconnect().await;
        rt.stop().await;
    }
}

/// Without the pack, the broker keeps retained messages itself: a later subscriber
/// (wildcards included) gets the last one of each topic, an empty retained payload
/// clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_keeps_retained_messages_without_the_pack() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = embedded(&redis, dir.path(), &[], Retained::Memory).await;
    let port = port(&rt);
    let mut publisher = Client::connect(port, "publisher", false).await;
    publisher.subscribe("home/cellar/temp").await;
    publisher.publish("home/kitchen/temp", "old", true).await;
    publisher.publish("home/kitchen/temp", "20", true).await;
    publisher.publish("home/hall/temp", "18", true).await;
    publisher.publish("home/hall/temp", "", true).await;
    publisher.publish("home/cellar/temp", "12", true).await;
    publisher
        .publish("home/cellar/temp", "not retained", false)
        .await;
    eventually(WAIT, "the publisher's messages all taken", || {
        publisher
            .payloads("home/cellar/temp")
            .contains(&"not retained".to_owned())
            .then_some(())
    })
    .await;
    // Its own subscription to the last topic shows when the broker has taken them all.
    let mut probe = Client::connect(port, "probe", false).await;
    probe.subscribe("home/+/temp").await;
    eventually(WAIT, "two retained messages", || {
        (probe.got().len() >= 2).then_some(())
    })
    .await;
    let mut got: Vec<(String, String, bool)> = probe
        .got()
        .into_iter()
        .map(|g| (g.topic, g.payload, g.retain))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("home/cellar/temp".to_owned(), "12".to_owned(), true),
            ("home/kitchen/temp".to_owned(), "20".to_owned(), true),
        ]
    );
    probe.disconnect().await;
    publisher.disconnect().await;
    rt.stop().await;
}

/// With mosquitto, the parts that work with any broker fill Redis (stored and retained
/// messages), and the parts that need the embedded broker are refused at load, saying
/// so; with EMQX's client events (`--emqx-events`), client state fills too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_external_broker_what_can_work_works() {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    for r in PACK {
        install(&dist(r), dir.path(), &format!("{r}.wasm"));
    }
    let rt = Runtime::start(config(&redis, &mqtt, dir.path()))
        .await
        .unwrap();
    let loaded: Vec<String> = rt
        .rules
        .snapshot()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(loaded, ["emqx4-messages"], "only the message store loads");
    assert_eq!(wasmrule::Metrics::get(&rt.metrics.load_errors), 4);
    let publisher = Publisher::connect(&mqtt).await;
    publish_until(
        &publisher,
        "plant/line-1",
        "42",
        WAIT,
        "a stored message",
        || (zcard(&redis, "mqtt:msg:plant/line-1") > 0).then_some(()),
    )
    .await;
    let id: Vec<String> = redis.conn().zrange("mqtt:msg:plant/line-1", 0, 0).unwrap();
    let stored = redis.hgetall(&format!("mqtt:msg:{}", id[0]));
    assert_eq!(stored["payload"], "42");
    assert_eq!(stored["topic"], "plant/line-1");
    publisher.publish_retained("plant/status", "running").await;
    let retained = eventually(WAIT, "the retained store", || {
        let h = redis.hgetall("mqtt:retain:plant/status");
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(retained["payload"], "running");
    rt.stop().await;

    // With EMQX's client events (mosquitto plays EMQX: fixtures of EMQX's event
    // messages are published to it; its `$event/...` form, since mosquitto refuses
    // client publishes to `$SYS`; tests/emqx.rs bridges those), client state fills too.
    let mut emqx = config(&redis, &mqtt, dir.path());
    emqx.mqtt.emqx_events = true;
    let rt = Runtime::start(emqx).await.unwrap();
    let mut loaded: Vec<String> = rt
        .rules
        .snapshot()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    loaded.sort();
    assert_eq!(loaded, ["emqx4-clients", "emqx4-messages"]);
    let fixture = |name: &str| -> (String, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/emqx-fixtures")
            .join(name);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        (
            v["topic"].as_str().unwrap().to_owned(),
            v["payload"].to_string(),
        )
    };
    let (topic, payload) = fixture("event-client-connected.json");
    let client: serde_json::Value = serde_json::from_str(&payload).unwrap();
    let key = format!("mqtt:client:{}", client["clientid"].as_str().unwrap());
    publish_until(
        &publisher,
        &topic,
        &payload,
        WAIT,
        "client state from EMQX's events",
        || (redis.hget(&key, "state").as_deref() == Some("1")).then_some(()),
    )
    .await;
    let (topic, payload) = fixture("event-client-disconnected.json");
    publish_until(
        &publisher,
        &topic,
        &payload,
        WAIT,
        "offline from EMQX's events",
        || (redis.hget(&key, "state").as_deref() == Some("0")).then_some(()),
    )
    .await;
    assert_ne!(redis.hget(&key, "offline_at").as_deref(), Some("undefined"));
    rt.stop().await;
}
