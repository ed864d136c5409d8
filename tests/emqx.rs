//! The external-EMQX event adapter end to end, with the documented payloads of
//! `examples/emqx-fixtures/` (no EMQX runs here): a mosquitto plays EMQX.
//!
//! Mosquitto refuses client publishes to `$SYS/...`, but its bridge brings them in: a
//! second mosquitto (`emqx`) takes the fixtures on `emqx-sys/brokers/...`, and the
//! broker wasmrule connects to imports them as `$SYS/brokers/...`, QoS 1. The `$event/...`
//! fixtures are published to wasmrule's broker directly. `event-log` appends every
//! event a rule receives to `events:<type>`.

mod support;

use std::time::Duration;

use serde_json::{Map, Value};
use support::*;
use wasmrule::Metrics;
use wasmrule::Runtime;

const WAIT: Duration = Duration::from_secs(10);

/// One fixture: its file name, the topic EMQX publishes it on, and the payload bytes.
struct Fixture {
    file: String,
    topic: String,
    payload: Vec<u8>,
}

fn fixtures() -> Vec<Fixture> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/emqx-fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/emqx-fixtures/") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        out.push(Fixture {
            file: path.file_name().unwrap().to_string_lossy().into_owned(),
            topic: v["topic"].as_str().unwrap().to_owned(),
            payload: serde_json::to_vec(&v["payload"]).unwrap(),
        });
    }
    assert!(out.len() >= 13, "fixtures found: {}", out.len());
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

struct Env {
    redis: Redis,
    // Field order: wasmrule's broker goes before the one it bridges from.
    mqtt: Mosquitto,
    emqx: Mosquitto,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let emqx = Mosquitto::start();
        let bridge = format!(
            "connection emqx\naddress 127.0.0.1:{}\ntopic brokers/# in 1 $SYS/ emqx-sys/\n",
            emqx.port
        );
        Env {
            redis: Redis::start(),
            mqtt: Mosquitto::start_with_conf(false, 1_000_000, &bridge),
            emqx,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn runtime(&self, emqx_events: bool) -> Runtime {
        let mut c = config(&self.redis, &self.mqtt, self.dir.path());
        c.mqtt.emqx_events = emqx_events;
        Runtime::start(c).await.expect("runtime starts")
    }

    /// The events of `kind` the event-log rule has seen so far.
    fn events(&self, kind: &str) -> Vec<Value> {
        self.redis
            .lrange(&format!("events:{kind}"))
            .iter()
            .map(|e| serde_json::from_slice(e).expect("event JSON"))
            .collect()
    }
}

/// Publishers on the two brokers.
struct Publishers {
    emqx: Publisher,
    mqtt: Publisher,
}

impl Publishers {
    async fn connect(env: &Env) -> Publishers {
        Publishers {
            emqx: Publisher::connect(&env.emqx).await,
            mqtt: Publisher::connect(&env.mqtt).await,
        }
    }

    /// Publishes `payload` where EMQX would publish it on `topic`.
    async fn publish(&self, topic: &str, payload: &[u8]) {
        match topic.strip_prefix("$SYS/") {
            Some(rest) => {
                self.emqx
                    .publish(&format!("emqx-sys/{rest}"), payload)
                    .await
            }
            None => self.mqtt.publish(topic, payload).await,
        }
    }

    /// Publishes `fixtures` every 200 ms until `check` holds: the first rounds may come
    /// before the bridge and wasmrule's subscriptions are up.
    async fn until<T>(
        &self,
        fixtures: &[&Fixture],
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            for f in fixtures {
                self.publish(&f.topic, &f.payload).await;
            }
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(v) = check() {
                    return v;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "within {WAIT:?}: {what}"
            );
        }
    }
}

/// The fields a rule must see for `f`: what the adapter maps it to, less the timestamp
/// when EMQX gave none (the event then carries the time it was made).
fn expected(f: &Fixture) -> (String, Map<String, Value>) {
    let e = wasmrule::emqx_to_event(&f.topic, &f.payload)
        .unwrap()
        .unwrap_or_else(|| panic!("{}: not an EMQX event topic", f.file));
    let mut fields = e.fields();
    let payload: Value = serde_json::from_slice(&f.payload).unwrap();
    if payload.get("ts").is_none() {
        fields.remove("timestamp");
    }
    (e.kind.name().to_owned(), fields)
}

fn has(events: &[Value], want: &Map<String, Value>) -> bool {
    events
        .iter()
        .any(|e| want.iter().all(|(k, v)| e.get(k) == Some(v)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emqx_client_event_topics_reach_rules_as_events() {
    let env = Env::new();
    install(&dist("event-log"), env.dir.path(), "event-log.wasm");
    let rt = env.runtime(true).await;
    let publishers = Publishers::connect(&env).await;
    let all = fixtures();
    let refs: Vec<&Fixture> = all.iter().collect();

    // Every fixture reaches the rule as the event it maps to, with all its fields.
    publishers
        .until(&refs, "every fixture seen as its event", || {
            all.iter()
                .all(|f| {
                    let (kind, want) = expected(f);
                    has(&env.events(&kind), &want)
                })
                .then_some(())
        })
        .await;

    // The fields rules read, spelled out for the two events the demo uses.
    let connected = env.events("client.connected");
    let c = connected
        .iter()
        .find(|e| e["proto_ver"] == 4)
        .expect("the $SYS connected event");
    assert_eq!(c["event"], "client.connected");
    assert_eq!(c["clientid"], "emqtt-8348fe27a87976ad4db3");
    assert_eq!(c["username"], "foo");
    assert_eq!(c["peerhost"], "127.0.0.1");
    assert_eq!(
        (c["keepalive"].as_u64(), c["clean_start"].as_bool()),
        (Some(60), Some(true))
    );
    assert_eq!(c["connected_at"], 1625572213873u64);
    assert_eq!(c["timestamp"], 1625572213873u64);
    assert_eq!(c["id"].as_str().map(str::len), Some(32));
    assert!(c["node"].as_str().unwrap().starts_with("wasmrule@"));
    assert!(c.get("ts").is_none() && c.get("ipaddress").is_none());
    let disconnected = env.events("client.disconnected");
    assert!(disconnected.iter().any(|e| e["reason"] == "tcp_closed"));
    assert!(
        disconnected
            .iter()
            .any(|e| e["reason"] == "keepalive_timeout")
    );
    let d = disconnected
        .iter()
        .find(|e| e["username"].is_null())
        .expect("the EMQX 4.2 disconnected event");
    assert_eq!(d["disconnected_at"], 1582688032000u64);
    let dropped = env.events("message.dropped");
    assert_eq!(dropped[0]["payload"], "{\"temp\":22.0}");
    assert_eq!(dropped[0]["payload_encoding"], "utf8");
    // None of them was a message.publish.
    assert!(env.events("message.publish").is_empty());

    // A malformed payload is counted and skipped; the flow goes on.
    let bad = Fixture {
        file: "bad".into(),
        topic: "$event/client_connected".into(),
        payload: b"{not json".to_vec(),
    };
    publishers
        .until(&[&bad], "malformed payload counted", || {
            (Metrics::get(&rt.metrics.emqx_events_malformed) > 0).then_some(())
        })
        .await;

    // QoS 1 all the way: every message, event or skipped, is acknowledged.
    let m = &rt.metrics;
    eventually(WAIT, "every message acknowledged", || {
        let handed = Metrics::get(&m.messages_received) + Metrics::get(&m.emqx_events_malformed);
        (Metrics::get(&m.messages_acked) == handed).then_some(())
    })
    .await;

    // The subscriptions follow the rules: with only a disconnect rule left, connected
    // messages no longer reach wasmrule at all.
    std::fs::write(
        env.dir.path().join("disc.wasm"),
        echo_rule("RPUSH", "$events/client_disconnected", "disc"),
    )
    .unwrap();
    std::fs::remove_file(env.dir.path().join("event-log.wasm")).unwrap();
    let by_file = |name: &str| all.iter().find(|f| f.file == name).unwrap();
    let (conn, disc) = (
        by_file("sys-connected.json"),
        by_file("sys-disconnected.json"),
    );
    publishers
        .until(&[disc], "disconnect rule serving", || {
            (!env.redis.lrange("disc").is_empty()).then_some(())
        })
        .await;
    // Let the UNSUBSCRIBE that followed the new SUBSCRIBE reach the broker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = Metrics::get(&m.messages_received);
    let seen = env.redis.lrange("disc").len();
    for _ in 0..5 {
        publishers.publish(&conn.topic, &conn.payload).await;
    }
    publishers.publish(&disc.topic, &disc.payload).await;
    eventually(WAIT, "the disconnect after the connects", || {
        (env.redis.lrange("disc").len() > seen).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        Metrics::get(&m.messages_received),
        received + 1,
        "only the disconnect arrived"
    );
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_emqx_events_system_topics_stay_messages() {
    let env = Env::new();
    install(&dist("event-log"), env.dir.path(), "event-log.wasm");
    // A rule on the raw `$SYS` topics, to show the messages do arrive. (Not one on
    // `$event/#`: the default tenant's topics, `default_policy` in config.rs, are `#`,
    // `$events/#` and `$SYS/#`, so it would not load.)
    std::fs::write(
        env.dir.path().join("sys.wasm"),
        echo_rule("RPUSH", "$SYS/brokers/#", "sys_raw"),
    )
    .unwrap();
    let rt = env.runtime(false).await;
    let publishers = Publishers::connect(&env).await;
    let all = fixtures();
    let refs: Vec<&Fixture> = all.iter().collect();
    let seen = publishers
        .until(&refs, "every $SYS fixture seen by the raw rule", || {
            let seen: Vec<Value> = env
                .redis
                .lrange("sys_raw")
                .iter()
                .map(|raw| serde_json::from_slice(raw).unwrap())
                .collect();
            let sys = all.iter().filter(|f| f.topic.starts_with("$SYS/"));
            sys.clone()
                .all(|f| seen.iter().any(|e| e["topic"] == f.topic.as_str()))
                .then_some(seen)
        })
        .await;
    for e in &seen {
        assert_eq!(e["event"], "message.publish", "{e}");
        assert!(e.get("clientid").is_none(), "{e}");
    }
    for kind in [
        "client.connected",
        "client.disconnected",
        "session.subscribed",
        "session.unsubscribed",
        "message.delivered",
        "message.acked",
        "message.dropped",
    ] {
        assert!(
            env.events(kind).is_empty(),
            "{kind} events with emqx_events off"
        );
    }
    assert_eq!(Metrics::get(&rt.metrics.emqx_events_malformed), 0);
    rt.stop().await;
}
