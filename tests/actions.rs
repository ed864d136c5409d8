//! Rules that act (ABI v2) against real servers: a threshold rule that reads its last
//! value and publishes alerts, checked against an independent Python model; a
//! downlink rule triggered by a Redis channel and by a Redis stream (through a SIGKILL
//! and restart), with an external broker and with the embedded one; sessions driven
//! from Redis in the embedded broker (subscribe on connect, deliver to one client); and
//! a tenant's rule that tries to reach another tenant's keys, topics and clients.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Commands as _;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use support::*;
use wasmrule::Runtime;

const WAIT: Duration = Duration::from_secs(30);

/// Every message received on `filter` (QoS 1), as (topic, payload), in arrival order.
struct Subscriber {
    got: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// A client subscribed to `filter`, once its SUBACK is in.
    async fn connect(port: u16, filter: &str) -> Subscriber {
        Self::client(port, &format!("sub-{}", free_port()), Some(filter)).await
    }

    /// Client `id`, subscribed to `filter` if given; returns once the broker has
    /// answered (SUBACK, or CONNACK without a filter).
    async fn client(port: u16, id: &str, filter: Option<&str>) -> Subscriber {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(o, 100);
        if let Some(f) = filter {
            client.subscribe(f, QoS::AtLeastOnce).await.unwrap();
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let wants_suback = filter.is_some();
        let sink = got.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) if wants_suback => {
                        ready_tx.take().map(|tx| tx.send(()));
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if !wants_suback => {
                        ready_tx.take().map(|tx| tx.send(()));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push((
                            String::from_utf8_lossy(&p.topic).into_owned(),
                            String::from_utf8_lossy(&p.payload).into_owned(),
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("the broker's answer")
            .unwrap();
        Subscriber { got, task }
    }

    fn got(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A deterministic sequence of readings: `devices` devices, `n` readings in all, with
/// jumps large and small and repeats, in the order they are published.
fn readings(devices: usize, n: usize) -> Vec<(String, String)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut value: Vec<i64> = (0..devices).map(|_| 2000).collect();
    (0..n)
        .map(|_| {
            let d = (next() % devices as u64) as usize;
            // Steps of -20% .. +20% in hundredths, sometimes none at all.
            let step = (next() % 41) as i64 - 20;
            value[d] = (value[d] + value[d] * step / 100).max(1);
            let v = value[d];
            (format!("d{d}"), format!("{}.{:02}", v / 100, v % 100))
        })
        .collect()
}

/// The alerts the Python model computes for `readings`, per device in order.
fn model_alerts(readings: &[(String, String)]) -> BTreeMap<String, Vec<(String, String)>> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/models/threshold_alert.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    for (d, v) in readings {
        writeln!(stdin, "{d} {v}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let mut alerts: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        alerts
            .entry(f[0].to_owned())
            .or_default()
            .push((f[1].to_owned(), f[2].to_owned()));
    }
    alerts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threshold_alerts_are_exactly_the_models_through_mosquitto_and_redis() {
    let (redis, mqtt) = (Redis::start(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    install(&dist("threshold-alert"), dir.path(), "threshold-alert.wasm");
    let mut config = config(&redis, &mqtt, dir.path());
    // What is checked is the alerts, not how fast reads are: on a CI machine whose two
    // cores run the whole suite, a read can wait longer than the default 100 ms, and
    // that reading would then be a dead letter (`unavailable`) and its alert missing.
    config.limits.reads.max_wait = Duration::from_secs(2);
    let rt = Runtime::start(config).await.unwrap();
    let alerts = Subscriber::connect(mqtt.port, "alerts/#").await;
    let inputs = readings(50, 10_000);
    let want = model_alerts(&inputs);
    // One connection per device, publishing its readings in order (back to back): the
    // order the rule must see them in.
    let mut per_device: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (d, v) in &inputs {
        per_device.entry(d).or_default().push(v);
    }
    let publisher = Publisher::connect(&mqtt).await;
    let mut conn = redis.conn();
    publish_until(
        &publisher,
        "readings/warmup",
        "1",
        WAIT,
        "the rule serving",
        || conn.get::<_, Option<String>>("last:warmup").ok().flatten(),
    )
    .await;
    for (d, v) in &inputs {
        publisher
            .publish_qos(&format!("readings/{d}"), v.as_bytes().to_vec(), 0)
            .await;
    }
    // Every reading handled: each device's last value is its last reading.
    eventually(WAIT, "every device's last reading in Redis", || {
        per_device
            .iter()
            .all(|(d, vs)| {
                conn.get::<_, Option<String>>(format!("last:{d}"))
                    .ok()
                    .flatten()
                    .as_deref()
                    == vs.last().copied()
            })
            .then_some(())
    })
    .await;
    let expected: usize = want.values().map(Vec::len).sum();
    assert!(expected > 500, "the inputs must alert often: {expected}");
    // A last pair of readings that alerts: its alert is taken after every earlier
    // one (one writer, actions in batch order, one connection), so once it is here
    // nothing earlier is still on its way.
    publisher.publish("readings/sentinel", "100").await;
    publisher.publish("readings/sentinel", "200").await;
    let received = eventually(WAIT, "the sentinel's alert", || {
        let got = alerts.got();
        got.iter()
            .any(|(t, _)| t == "alerts/sentinel")
            .then_some(got)
    })
    .await;
    let number = |v: &serde_json::Value| v.as_f64().expect("a number").to_string();
    let mut got: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (topic, payload) in received.iter().filter(|(t, _)| t != "alerts/sentinel") {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let device = topic.strip_prefix("alerts/").unwrap();
        assert_eq!(v["device"], device);
        got.entry(device.to_owned())
            .or_default()
            .push((number(&v["previous"]), number(&v["current"])));
    }
    // The model's readings as the same numbers (JSON drops trailing zeros).
    let want: BTreeMap<String, Vec<(String, String)>> = want
        .into_iter()
        .map(|(d, a)| {
            let n = |s: &str| s.parse::<f64>().unwrap().to_string();
            (d, a.iter().map(|(p, c)| (n(p), n(c))).collect())
        })
        .collect();
    // No reading failed (a read that timed out would be a dead letter, and its alert
    // missing).
    let letters: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("wasmrule:deadletter")
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(3)
        .query(&mut conn)
        .unwrap();
    assert!(letters.is_empty(), "dead letters: {letters:?}");
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), expected);
    assert_eq!(got, want);
    rt.stop().await;
}

/// Waits until wasmrule listens on Redis channel `channel`.
async fn subscribed_to_channel(redis: &Redis, channel: &str) {
    let mut conn = redis.conn();
    eventually(WAIT, "wasmrule subscribed to the Redis channel", || {
        let n: Vec<(String, u64)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut conn)
            .ok()?;
        (n.first()?.1 > 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_channel_message_becomes_a_device_command_through_mosquitto() {
    let (redis, mqtt) = (Redis::start(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    install(&dist("downlink"), dir.path(), "downlink.wasm");
    let rt = Runtime::start(config(&redis, &mqtt, dir.path()))
        .await
        .unwrap();
    let device = Subscriber::connect(mqtt.port, "devices/d1/cmd").await;
    subscribed_to_channel(&redis, "downlink").await;
    let command = r#"{"device":"d1","cmd":"reboot"}"#;
    let _: i64 = redis.conn().publish("downlink", command).unwrap();
    let got = eventually(WAIT, "the command on devices/d1/cmd", || {
        let got = device.got();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(got, vec![("devices/d1/cmd".to_owned(), command.to_owned())]);
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_channel_message_becomes_a_device_command_through_the_embedded_broker() {
    let redis = Redis::start();
    let (rt, _dir) = embedded(&redis, &["downlink"]).await;
    let port = rt.broker_addr.unwrap().port();
    let device = Subscriber::connect(port, "devices/d1/cmd").await;
    subscribed_to_channel(&redis, "downlink").await;
    let command = r#"{"device":"d1","cmd":"reboot"}"#;
    let _: i64 = redis.conn().publish("downlink", command).unwrap();
    let got = eventually(WAIT, "the command on devices/d1/cmd", || {
        let got = device.got();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert_eq!(got, vec![("devices/d1/cmd".to_owned(), command.to_owned())]);
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stream_loses_no_command_when_wasmrule_is_killed_mid_stream() {
    let (redis, mqtt) = (Redis::start(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    install(&dist("downlink"), dir.path(), "downlink.wasm");
    let logs = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "--mqtt-url",
        &mqtt.url(),
        "--redis-url",
        &redis.url(),
        "--rules-dir",
        &dir.path().display().to_string(),
        "--http-addr",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let device = Subscriber::connect(mqtt.port, "devices/+/cmd").await;
    let mut wasmrule = WasmruleProcess::start(&args, &logs.path().join("wasmrule.log"));
    let mut conn = redis.conn();
    // The group exists once wasmrule reads the stream.
    eventually(WAIT, "wasmrule's consumer group on the stream", || {
        let groups: redis::Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg("downlink")
            .query(&mut conn)
            .ok()?;
        matches!(&groups, redis::Value::Array(g) if !g.is_empty()).then_some(())
    })
    .await;
    const N: usize = 3000;
    for i in 0..N {
        let payload = format!(r#"{{"device":"d{}","cmd":"c-{i}"}}"#, i % 7);
        let _: String = redis::cmd("XADD")
            .arg("downlink")
            .arg("*")
            .arg("payload")
            .arg(&payload)
            .query(&mut conn)
            .unwrap();
        if i == N / 3 {
            wasmrule.kill();
        }
        if i == N / 2 {
            wasmrule.restart();
        }
    }
    let want: HashSet<String> = (0..N).map(|i| format!("c-{i}")).collect();
    eventually(Duration::from_secs(60), "every command delivered", || {
        let got: HashSet<String> = device
            .got()
            .iter()
            .map(|(_, p)| {
                let v: serde_json::Value = serde_json::from_str(p).unwrap();
                v["cmd"].as_str().unwrap().to_owned()
            })
            .collect();
        (got == want).then_some(())
    })
    .await;
    eventually(WAIT, "nothing pending in the group", || {
        let summary: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg("downlink")
            .arg("wasmrule")
            .query(&mut conn)
            .ok()?;
        (summary.0 == 0).then_some(())
    })
    .await;
    wasmrule.terminate(Duration::from_secs(10));
}

/// Waits until tenant-probe serves: its `get` probe has recorded something.
async fn probe_serving(publisher: &Publisher, redis: &Redis) {
    publish_until(
        publisher,
        "acme/probe/get",
        "x",
        WAIT,
        "the rule serving",
        || {
            redis
                .conn()
                .get::<_, Option<String>>("acme:probe:get")
                .ok()
                .flatten()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_read_publish_or_subscribe_beyond_its_own() {
    let (redis, mqtt) = (Redis::start(), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("acme")).unwrap();
    install(
        &dist("tenant-probe"),
        &dir.path().join("acme"),
        "probe.wasm",
    );
    let mut conn = redis.conn();
    let _: () = conn.set("beta:secret", "beta's").unwrap();
    let _: () = conn.set("{beta}secret", "beta's").unwrap();
    // A hash whose HGETALL reply is over the 1 MiB read budget.
    let fields: Vec<(String, String)> = (0..2048)
        .map(|i| (format!("f{i}"), "v".repeat(1024)))
        .collect();
    let _: () = conn.hset_multiple("acme:big", &fields).unwrap();
    let mut config = config(&redis, &mqtt, dir.path());
    // The read bomb is about the count: give its reads all the time they need on a
    // busy machine, so the wait budget is not what stops them.
    config.limits.reads.max_wait = Duration::from_secs(10);
    let rt = Runtime::start(config).await.unwrap();
    // A subscriber to everything, on the broker's side of things.
    let everything = Subscriber::connect(mqtt.port, "#").await;
    let publisher = Publisher::connect(&mqtt).await;
    probe_serving(&publisher, &redis).await;
    for probe in [
        "scan",
        "hashtag",
        "readbomb",
        "hugereply",
        "publish",
        "subscribe",
        "actionbomb",
        "ok",
    ] {
        publisher.publish(&format!("acme/probe/{probe}"), "x").await;
    }
    eventually(WAIT, "the last probe's publish", || {
        everything
            .got()
            .iter()
            .any(|(t, _)| t == "acme/probe-done")
            .then_some(())
    })
    .await;
    let get = |k: &str| redis.conn().get::<_, Option<String>>(k).unwrap();
    // Probes on different topics may run on different workers: wait for each record.
    for k in ["scan", "hashtag", "readbomb", "hugereply"] {
        let key = format!("acme:probe:{k}");
        eventually(WAIT, &key, || get(&key)).await;
    }
    // Key-space scans are not reads; keys are the tenant's own, hash tags too.
    assert_eq!(
        get("acme:probe:scan").as_deref(),
        Some("not_allowed not_allowed")
    );
    assert_eq!(get("acme:probe:get").as_deref(), Some("nil"));
    assert_eq!(get("acme:probe:hashtag").as_deref(), Some("nil"));
    // Read bombs stop at the budget: 16 reads, then over_budget; so does a huge reply.
    assert_eq!(
        get("acme:probe:readbomb").as_deref(),
        Some("16 over_budget")
    );
    assert_eq!(get("acme:probe:hugereply").as_deref(), Some("over_budget"));
    // The refused outputs wrote nothing, published nothing (the probe-done publish left
    // after them on the same connection), and are dead letters with their reason.
    assert_eq!(get("acme:probe:publish"), None);
    assert_eq!(get("acme:probe:subscribe"), None);
    // The three refused events are dead letters (their workers' batches are written)...
    let letters: Vec<(String, Vec<(String, String)>)> =
        eventually(WAIT, "three dead letters", || {
            let l: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg("acme:wasmrule:deadletter")
                .arg("-")
                .arg("+")
                .query(&mut redis.conn())
                .ok()?;
            (l.len() >= 3).then_some(l)
        })
        .await;
    // ... and one more probe after them: anything those batches had let through would
    // be taken before its publish (one action queue, in order).
    publisher.publish("acme/probe/ok", "x").await;
    eventually(WAIT, "the second probe-done", || {
        let n = everything
            .got()
            .iter()
            .filter(|(t, _)| t == "acme/probe-done")
            .count();
        (n >= 2).then_some(())
    })
    .await;
    let topics: Vec<String> = everything.got().into_iter().map(|(t, _)| t).collect();
    assert!(!topics.iter().any(|t| t.starts_with("beta/")), "{topics:?}");
    let mut kinds: Vec<String> = letters
        .iter()
        .filter_map(|(_, f)| f.iter().find(|(k, _)| k == "kind").map(|(_, v)| v.clone()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec!["action_client", "action_topic", "too_many_commands"],
        "{letters:?}"
    );
    assert!(
        !topics.iter().any(|t| t.starts_with("acme/bomb/")),
        "an action bomb went out"
    );
    // beta's keys are as they were.
    assert_eq!(get("beta:secret").as_deref(), Some("beta's"));
    rt.stop().await;
}

/// A wasmrule with the embedded broker serving `rules` from rules-wasm/dist.
async fn embedded(redis: &Redis, rules: &[&str]) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for r in rules {
        install(&dist(r), dir.path(), &format!("{r}.wasm"));
    }
    let config = embedded_config(redis, dir.path());
    (Runtime::start(config).await.unwrap(), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_follow_redis_subscribe_on_connect_and_deliver_to_one_client() {
    let redis = Redis::start();
    let mut conn = redis.conn();
    let _: () = conn
        .hset("mqtt:sub:dev-1", "devices/dev-1/cmd", "1")
        .unwrap();
    let _: () = conn.hset("mqtt:sub:dev-1", "fleet/#", "0").unwrap();
    let (rt, _dir) = embedded(&redis, &["client-sessions"]).await;
    let port = rt.broker_addr.unwrap().port();
    // dev-1 subscribes to nothing: the rule subscribes it from Redis when it connects.
    let dev1 = Subscriber::client(port, "dev-1", None).await;
    let other = Subscriber::client(port, "dev-2", None).await;
    let mut o = MqttOptions::new("sender", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (sender, mut sender_loop) = AsyncClient::new(o, 100);
    let sender_task = tokio::spawn(async move { while sender_loop.poll().await.is_ok() {} });
    // Published until the subscription (made by the rule, after CONNACK) is in place.
    let deadline = tokio::time::Instant::now() + WAIT;
    while dev1.got().is_empty() {
        sender
            .publish("devices/dev-1/cmd", QoS::AtLeastOnce, false, "reboot")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "dev-1 never subscribed"
        );
    }
    assert_eq!(dev1.got()[0], ("devices/dev-1/cmd".into(), "reboot".into()));
    sender
        .publish("fleet/all", QoS::AtLeastOnce, false, "hello")
        .await
        .unwrap();
    eventually(WAIT, "fleet/all at dev-1", || {
        dev1.got()
            .iter()
            .any(|(t, _)| t == "fleet/all")
            .then_some(())
    })
    .await;
    // A delivery to dev-2 alone, from a Redis channel.
    subscribed_to_channel(&redis, "deliver").await;
    let _: i64 = conn
        .publish(
            "deliver",
            r#"{"client":"dev-2","topic":"private/dev-2","payload":"just you"}"#,
        )
        .unwrap();
    eventually(WAIT, "the delivery at dev-2", || {
        (other.got() == vec![("private/dev-2".to_owned(), "just you".to_owned())]).then_some(())
    })
    .await;
    assert!(
        !dev1.got().iter().any(|(t, _)| t == "private/dev-2"),
        "a delivery reached another client"
    );
    sender_task.abort();
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_while_redis_is_down_is_unavailable_to_the_rule_and_nothing_is_lost() {
    let (mut redis, mqtt) = (Redis::start_with(true), Mosquitto::start());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("acme")).unwrap();
    install(
        &dist("tenant-probe"),
        &dir.path().join("acme"),
        "probe.wasm",
    );
    let rt = Runtime::start(config(&redis, &mqtt, dir.path()))
        .await
        .unwrap();
    let publisher = Publisher::connect(&mqtt).await;
    probe_serving(&publisher, &redis).await;
    let _: () = redis.conn().del("acme:probe:get").unwrap();
    redis.kill();
    let ran = wasmrule::Metrics::get(&rt.metrics.invocations);
    publisher.publish("acme/probe/get", "x").await;
    // The rule ran (its read failed fast instead of hanging), while Redis was down.
    eventually(WAIT, "the probe run with Redis down", || {
        (wasmrule::Metrics::get(&rt.metrics.invocations) > ran).then_some(())
    })
    .await;
    redis.restart();
    // What it returned was kept and written once Redis was back.
    let got = eventually(WAIT, "the probe's record", || {
        redis
            .conn()
            .get::<_, Option<String>>("acme:probe:get")
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(got, "unavailable");
    rt.stop().await;
}
