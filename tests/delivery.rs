//! Fault injection: QoS 1 messages through the `wasmrule` binary while Redis, the
//! broker or wasmrule itself fails. Real processes, loopback only, each test bounded.
//!
//! Every message carries a sequence number; the `seq-counter` rule records it with
//! `SETBIT seen <n> 1` and `INCR writes`, so `BITCOUNT seen` counts distinct messages
//! that reached Redis and `writes - BITCOUNT seen` counts repeats. Each scenario asserts
//! that no message is lost and that repeats stay within the in-flight window per fault.
//!
//! The spill scenarios at the end stream QoS 0 messages through the `seq-order` rule,
//! which also records the order per topic.

mod support;

use std::time::Duration;

use support::*;

/// Receive Maximum given to the broker: the most unacknowledged messages in flight.
const INFLIGHT: u16 = 200;

struct Rig {
    redis: Redis,
    mqtt: Mosquitto,
    wasmrule: WasmruleProcess,
    _dir: tempfile::TempDir,
}

/// `wasmrule run` arguments: QoS 1 with a fixed client id, so the broker keeps the
/// session across restarts.
fn run_args(
    config: &std::path::Path,
    mqtt: &Mosquitto,
    redis: &Redis,
    rules: &std::path::Path,
    client_id: &str,
) -> Vec<String> {
    [
        "--config",
        config.to_str().unwrap(),
        "--mqtt-url",
        &mqtt.url(),
        "--redis-url",
        &redis.url(),
        "--rules-dir",
        rules.to_str().unwrap(),
        "--client-id",
        client_id,
        "--qos",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Rig {
    fn new() -> Rig {
        let redis = Redis::start_with(true);
        let mqtt = Mosquitto::start_with(true);
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::copy(dist("seq-counter"), rules.join("seq-counter.wasm")).unwrap();
        let config = dir.path().join("wasmrule.toml");
        // The default 10 ms deadline: it charges CPU time, so a worker descheduled on a
        // busy machine does not turn a message into a dead letter.
        std::fs::write(
            &config,
            format!(
                "[mqtt]\ninflight = {INFLIGHT}\n\
                 [runtime]\nhttp_addr = \"off\"\nshutdown_timeout_secs = 10\n"
            ),
        )
        .unwrap();
        let args = run_args(&config, &mqtt, &redis, &rules, "wasmrule-delivery");
        let wasmrule = WasmruleProcess::start(&args, &dir.path().join("wasmrule.log"));
        Rig {
            redis,
            mqtt,
            wasmrule,
            _dir: dir,
        }
    }

    fn counts(&self) -> Option<(u64, u64)> {
        let mut c = redis::Client::open(self.redis.url())
            .ok()?
            .get_connection()
            .ok()?;
        let seen: u64 = redis::cmd("BITCOUNT").arg("seen").query(&mut c).ok()?;
        let writes: Option<u64> = redis::cmd("GET").arg("writes").query(&mut c).ok()?;
        Some((seen, writes.unwrap_or(0)))
    }

    /// Waits until wasmrule serves: its subscription is live and it writes.
    async fn wait_serving(&self, publisher: &Publisher) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        // Sequence number 0 is the warm-up probe, counted like the others.
        loop {
            publisher.publish("seq/warmup", "0").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.counts().is_some_and(|(seen, _)| seen >= 1) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wasmrule not serving within 10 s:\n{}",
                self.wasmrule.log()
            );
        }
    }

    /// Waits until messages 0..=n are all in Redis; returns (distinct, writes).
    async fn wait_all(&self, n: u64, timeout: Duration) -> (u64, u64) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((seen, writes)) = self.counts() {
                if seen == n + 1 {
                    // Let late repeats land before counting them.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    return self.counts().unwrap();
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "only {seen} of {} messages reached Redis ({writes} writes)\nwasmrule log:\n{}",
                        n + 1,
                        self.wasmrule.log()
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Something that goes wrong, at a given point of the stream.
#[derive(Debug, Clone, Copy)]
enum Fault {
    RedisKill,
    RedisRestart,
    RedisPause,
    RedisResume,
    BrokerRestart,
    WasmruleKill,
    WasmruleTerm,
    WasmruleRestart,
}

/// Publishes sequence numbers 1..=n at about `per_sec` messages per second, applying
/// each fault just before the message it is scheduled at; returns how many faults
/// lost wasmrule's or Redis's state (the ones that may cause repeats).
async fn stream(
    rig: &mut Rig,
    publisher: &Publisher,
    n: u64,
    per_sec: u64,
    faults: &[(u64, Fault)],
) -> u64 {
    let per_10ms = (per_sec / 100).max(1);
    let mut disruptive = 0;
    for i in 1..=n {
        for &(_, f) in faults.iter().filter(|(at, _)| *at == i) {
            eprintln!("message {i}: {f:?}");
            match f {
                Fault::RedisKill => {
                    rig.redis.kill();
                    disruptive += 1;
                }
                Fault::RedisRestart => rig.redis.restart(),
                Fault::RedisPause => signal(rig.redis.pid(), "STOP"),
                Fault::RedisResume => signal(rig.redis.pid(), "CONT"),
                Fault::BrokerRestart => {
                    rig.mqtt.restart();
                    disruptive += 1;
                }
                Fault::WasmruleKill => {
                    rig.wasmrule.kill();
                    disruptive += 1;
                }
                Fault::WasmruleTerm => {
                    let status = rig.wasmrule.terminate(Duration::from_secs(15));
                    assert!(
                        status.success(),
                        "SIGTERM exit status {status}\n{}",
                        rig.wasmrule.log()
                    );
                    disruptive += 1;
                }
                Fault::WasmruleRestart => rig.wasmrule.restart(),
            }
        }
        publisher.publish(&format!("seq/{i}"), i.to_string()).await;
        if i % per_10ms == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    disruptive
}

async fn scenario(name: &str, n: u64, per_sec: u64, faults: &[(u64, Fault)]) {
    let mut rig = Rig::new();
    let publisher = Publisher::connect_with(&rig.mqtt, &format!("pub-{name}"), false).await;
    rig.wait_serving(&publisher).await;
    let disruptive = stream(&mut rig, &publisher, n, per_sec, faults).await;
    let (seen, writes) = rig.wait_all(n, Duration::from_secs(60)).await;
    let repeats = writes - seen;
    eprintln!(
        "{name}: {seen} of {} messages in Redis, {repeats} repeated writes, {disruptive} disruptive faults",
        n + 1
    );
    assert_eq!(seen, n + 1, "{name}: messages lost");
    // Each fault can repeat at most what was in flight: the broker's window of
    // unacknowledged messages (plus the probe messages of the warm-up).
    let bound = disruptive.max(1) * (u64::from(INFLIGHT) + 50);
    assert!(
        repeats <= bound,
        "{name}: {repeats} repeats exceed the in-flight bound {bound}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_aof() {
    use Fault::*;
    let faults = [
        (800, RedisKill),
        (1100, RedisRestart),
        (2000, RedisKill),
        (2300, RedisRestart),
    ];
    scenario("redis-kill", 3000, 1000, &faults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_then_resumed() {
    use Fault::*;
    scenario(
        "redis-pause",
        3000,
        1000,
        &[(1000, RedisPause), (2500, RedisResume)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_with_persistence() {
    scenario(
        "broker-restart",
        3000,
        1000,
        &[(1500, Fault::BrokerRestart)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasmrule_killed_and_restarted() {
    use Fault::*;
    scenario(
        "wasmrule-kill",
        3000,
        1000,
        &[(1000, WasmruleKill), (1500, WasmruleRestart)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasmrule_terminated_and_restarted() {
    use Fault::*;
    scenario(
        "wasmrule-term",
        3000,
        1000,
        &[(1000, WasmruleTerm), (1500, WasmruleRestart)],
    )
    .await;
}

/// wasmrule killed while it holds a backlog it could not write (Redis paused): with
/// acknowledgement before the write, this backlog would be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasmrule_killed_while_redis_is_stuck() {
    use Fault::*;
    let faults = [
        (1000, RedisPause),
        (1500, WasmruleKill),
        (1600, RedisResume),
        (1700, WasmruleRestart),
    ];
    scenario("kill-with-backlog", 3000, 1000, &faults).await;
}

/// The acceptance run: 20000 QoS 1 messages on distinct topics while
/// redis-server is killed and restarted and wasmrule is killed with SIGKILL and
/// restarted with the same client id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_messages_survive_redis_and_wasmrule_crashes() {
    use Fault::*;
    let faults = [
        (4000, RedisKill),
        (5000, RedisRestart),
        (10000, WasmruleKill),
        (11000, WasmruleRestart),
        (15000, RedisKill),
        (15500, RedisRestart),
    ];
    scenario("acceptance", 20000, 2000, &faults).await;
}

// ---------------------------------------------------------------------------------------
// The write-ahead spill: QoS 0 messages while Redis is down.
//
// The `seq-order` rule pushes each message's sequence number onto a list per topic
// (`RPUSH order:<topic> n`) and sets its bit in `order:seen`. The broker keeps only
// mosquitto's default 1000 messages for a subscriber that stops reading, so without
// the spill it drops QoS 0 messages during the outage.
// ---------------------------------------------------------------------------------------

/// QoS 0 topics the stream cycles through.
const ORDER_TOPICS: u64 = 8;
/// Payload padding, so that a stalled subscriber fills the broker's queue and the socket
/// buffers in seconds rather than minutes.
const PADDING: usize = 2000;
/// The outage scenario: `N` messages at `RATE` per second, redis-server killed before
/// message `DOWN_AT` and restarted before `UP_AT` (about 4 s later). wasmrule's own
/// bounded queues hold a few thousand messages, the broker 1000: the outage is longer.
const N: u64 = 12_000;
const RATE: u64 = 2000;
const DOWN_AT: u64 = 2000;
const UP_AT: u64 = 10_000;

struct SpillRig {
    redis: Redis,
    mqtt: Mosquitto,
    wasmrule: WasmruleProcess,
    http: u16,
    spill_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SpillRig {
    fn new(spill: bool) -> SpillRig {
        let redis = Redis::start_with(true);
        let mqtt = Mosquitto::start_with_queue(false, 1000);
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::copy(dist("seq-order"), rules.join("seq-order.wasm")).unwrap();
        let http = free_port();
        let spill_dir = dir.path().join("spill");
        // The default rule deadline (CPU time), as in production.
        let mut toml = format!(
            "[mqtt]\ninflight = {INFLIGHT}\n[runtime]\nhttp_addr = \"127.0.0.1:{http}\"\n\
             workers = 2\nqueue = 64\n"
        );
        if spill {
            // 1 MiB segments: a few of them fill, are replayed and deleted.
            toml += &format!(
                "[redis.spill]\ndir = \"{}\"\nmax_bytes = 67108864\nsegment_bytes = 1048576\n",
                spill_dir.display()
            );
        }
        let config = dir.path().join("wasmrule.toml");
        std::fs::write(&config, toml).unwrap();
        let args = run_args(&config, &mqtt, &redis, &rules, "wasmrule-spill");
        let wasmrule = WasmruleProcess::start(&args, &dir.path().join("wasmrule.log"));
        SpillRig {
            redis,
            mqtt,
            wasmrule,
            http,
            spill_dir,
            _dir: dir,
        }
    }

    /// Distinct sequence numbers in Redis, if it answers.
    fn seen(&self) -> Option<u64> {
        let mut c = redis::Client::open(self.redis.url())
            .ok()?
            .get_connection()
            .ok()?;
        redis::cmd("BITCOUNT").arg("order:seen").query(&mut c).ok()
    }

    /// Each topic's sequence numbers in the order Redis applied them.
    fn lists(&self) -> std::collections::BTreeMap<String, Vec<u64>> {
        let mut c = self.redis.conn();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("order:order/*")
            .query(&mut c)
            .unwrap();
        keys.into_iter()
            .map(|k| {
                let list: Vec<u64> = redis::cmd("LRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .query(&mut c)
                    .unwrap();
                (k, list)
            })
            .collect()
    }

    fn metric(&self, name: &str) -> u64 {
        metric(self.http, name).unwrap_or(0)
    }

    async fn wait_serving(&self, publisher: &Publisher) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            publisher.publish("order/warmup", "0").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.seen().is_some_and(|n| n >= 1) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "wasmrule not serving within 10 s:\n{}",
                self.wasmrule.log()
            );
        }
    }

    /// Waits until `want` distinct messages are in Redis (or, with `None`, until the
    /// count has stopped changing for 2 s); returns the count.
    async fn wait_seen(&self, want: Option<u64>, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = (0, tokio::time::Instant::now());
        loop {
            let now = tokio::time::Instant::now();
            if let Some(n) = self.seen() {
                if want == Some(n) {
                    return n;
                }
                if n != last.0 {
                    last = (n, now);
                } else if want.is_none() && now - last.1 > Duration::from_secs(2) {
                    return n;
                }
            }
            assert!(
                now < deadline,
                "{} of {want:?} messages in Redis after {timeout:?}\nwasmrule log:\n{}",
                last.0,
                self.wasmrule.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log line the spill writes when it has replayed everything, if any.
    fn drained_line(&self) -> Option<String> {
        self.wasmrule
            .log()
            .lines()
            .rfind(|l| l.contains("spill drained"))
            .map(str::to_owned)
    }
}

/// Topic and QoS of message `i`: QoS 0 round the topics, except every `qos1_every`th,
/// which goes with QoS 1 to a topic of its own.
fn order_topic(i: u64, qos1_every: Option<u64>) -> (String, u8) {
    match qos1_every {
        Some(k) if i.is_multiple_of(k) => ("order/q1".to_owned(), 1),
        _ => (format!("order/{}", i % ORDER_TOPICS), 0),
    }
}

/// Publishes `range` at about `per_sec` messages per second, calling `before(i)` before
/// message `i` (to inject faults).
async fn publish_order(
    publisher: &Publisher,
    range: std::ops::RangeInclusive<u64>,
    per_sec: u64,
    qos1_every: Option<u64>,
    mut before: impl FnMut(u64),
) {
    let per_10ms = (per_sec / 100).max(1);
    let pad = "p".repeat(PADDING);
    for i in range {
        before(i);
        let (topic, qos) = order_topic(i, qos1_every);
        publisher
            .publish_qos(&topic, format!("{i} {pad}"), qos)
            .await;
        if i % per_10ms == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Checks that every topic's messages were first applied in publish order (a repeat
/// after a lost connection may follow later). Returns the distinct sequence numbers and
/// the number of repeats.
fn check_order(lists: &std::collections::BTreeMap<String, Vec<u64>>) -> (Vec<u64>, u64) {
    let mut all = Vec::new();
    let mut repeats = 0;
    for (topic, list) in lists {
        let mut seen = std::collections::HashSet::new();
        let first: Vec<u64> = list.iter().copied().filter(|n| seen.insert(*n)).collect();
        if let Some(w) = first.windows(2).find(|w| w[0] > w[1]) {
            panic!(
                "{topic}: {} applied before {}, against publish order",
                w[0], w[1]
            );
        }
        repeats += (list.len() - first.len()) as u64;
        all.extend(first);
    }
    all.sort_unstable();
    (all, repeats)
}

/// With the spill on, a QoS 0 stream (with some QoS 1 messages, which wait in memory)
/// keeps flowing while redis-server is down for about 4 s, and every message is in Redis
/// afterwards, in publish order per topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spill_keeps_qos0_messages_while_redis_is_down_and_replays_them_in_order() {
    let mut rig = SpillRig::new(true);
    let publisher = Publisher::connect_with(&rig.mqtt, "pub-spill", false).await;
    rig.wait_serving(&publisher).await;
    let redis = &mut rig.redis;
    publish_order(&publisher, 1..=N, RATE, Some(20), |i| match i {
        DOWN_AT => redis.kill(),
        UP_AT => redis.restart(),
        _ => {}
    })
    .await;
    let seen = rig.wait_seen(Some(N + 1), Duration::from_secs(60)).await;
    let (distinct, repeats) = check_order(&rig.lists());
    assert_eq!(distinct, (0..=N).collect::<Vec<_>>());
    eventually(Duration::from_secs(10), "spill emptied", || {
        (rig.metric("wasmrule_spill_disk_bytes") == 0).then_some(())
    })
    .await;
    let spilled = rig.metric("wasmrule_spill_batches_total");
    let replayed = rig.metric("wasmrule_spill_replayed_batches_total");
    eprintln!(
        "spill on: {seen} of {} messages in Redis in order, {repeats} repeats; {spilled} batches \
         ({} bytes) spilled, {replayed} replayed\n{}",
        N + 1,
        rig.metric("wasmrule_spill_bytes_total"),
        rig.drained_line().unwrap_or_default()
    );
    assert!(spilled > 0, "the outage should have used the spill");
    assert_eq!(replayed, spilled);
    assert_eq!(rig.metric("wasmrule_spill_full_total"), 0);
    assert_eq!(rig.metric("wasmrule_spill_dropped_records_total"), 0);
    assert!(
        std::fs::read_dir(&rig.spill_dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".seg")),
        "replayed segments are deleted"
    );
}

/// The same QoS 0 stream without the spill: wasmrule stops reading while Redis is down,
/// and the broker drops what does not fit in its queue. What arrives is still in order;
/// how much is lost depends on the broker's queue and socket buffers, so it is reported
/// (docs/delivery.md), not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_spill_the_broker_drops_qos0_messages_while_redis_is_down() {
    let mut rig = SpillRig::new(false);
    let publisher = Publisher::connect_with(&rig.mqtt, "pub-nospill", false).await;
    rig.wait_serving(&publisher).await;
    let redis = &mut rig.redis;
    publish_order(&publisher, 1..=N, RATE, None, |i| match i {
        DOWN_AT => redis.kill(),
        UP_AT => redis.restart(),
        _ => {}
    })
    .await;
    let seen = rig.wait_seen(None, Duration::from_secs(60)).await;
    let (distinct, repeats) = check_order(&rig.lists());
    assert_eq!(distinct.len() as u64, seen);
    eprintln!(
        "spill off: {seen} of {} messages in Redis, {} lost, {repeats} repeats",
        N + 1,
        N + 1 - seen
    );
}

/// wasmrule stopped with SIGTERM while Redis is down: what it spilled stays on disk, the
/// next process replays it before anything newer, and every message arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spill_outlives_a_restart_during_the_outage() {
    let mut rig = SpillRig::new(true);
    let publisher = Publisher::connect_with(&rig.mqtt, "pub-spill-restart", false).await;
    rig.wait_serving(&publisher).await;
    let received = |rig: &SpillRig| rig.metric("wasmrule_messages_received_total");
    let before = received(&rig);
    let redis = &mut rig.redis;
    publish_order(&publisher, 1..=1000, 1000, None, |i| {
        if i == 300 {
            redis.kill();
        }
    })
    .await;
    // QoS 0 messages not yet taken when SIGTERM arrives are not handled: wait for all.
    eventually(
        Duration::from_secs(10),
        "all 1000 messages received",
        || (received(&rig) >= before + 1000).then_some(()),
    )
    .await;
    let status = rig.wasmrule.terminate(Duration::from_secs(15));
    assert!(
        status.success(),
        "exit status {status}\n{}",
        rig.wasmrule.log()
    );
    assert!(
        rig.wasmrule
            .log()
            .contains("stopping while Redis is unreachable"),
        "{}",
        rig.wasmrule.log()
    );

    rig.wasmrule.restart();
    eventually(
        Duration::from_secs(10),
        "wasmrule back on the broker",
        || (rig.metric("wasmrule_mqtt_connected") == 1).then_some(()),
    )
    .await;
    publish_order(&publisher, 1001..=2000, 1000, None, |_| {}).await;
    eventually(
        Duration::from_secs(10),
        "1000 more messages received",
        || (received(&rig) >= 1000).then_some(()),
    )
    .await;
    rig.redis.restart();
    rig.wait_seen(Some(2001), Duration::from_secs(60)).await;
    let (distinct, repeats) = check_order(&rig.lists());
    assert_eq!(distinct, (0..=2000).collect::<Vec<_>>());
    eprintln!(
        "spill across a restart: 2001 messages in order, {repeats} repeats\n{}",
        rig.drained_line().unwrap_or_default()
    );
}
