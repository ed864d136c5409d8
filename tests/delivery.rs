//! Fault injection: QoS 1 messages through the `wasmrule` binary while Redis, the
//! broker or wasmrule itself fails. Real processes, loopback only, each test bounded.
//!
//! Every message carries a sequence number; the `seq-counter` rule records it with
//! `SETBIT seen <n> 1` and `INCR writes`, so `BITCOUNT seen` counts distinct messages
//! that reached Redis and `writes - BITCOUNT seen` counts repeats. Each scenario asserts
//! that no message is lost and that repeats stay within the in-flight window per fault.

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

impl Rig {
    fn new() -> Rig {
        let redis = Redis::start_with(true);
        let mqtt = Mosquitto::start_with(true);
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::copy(dist("seq-counter"), rules.join("seq-counter.wasm")).unwrap();
        let config = dir.path().join("wasmrule.toml");
        // A generous rule deadline: on a loaded 2-core machine a preempted worker can
        // overrun the default 10 ms, and the timed-out message would count as lost.
        std::fs::write(
            &config,
            format!(
                "[mqtt]\ninflight = {INFLIGHT}\n[runtime]\nhttp_addr = \"off\"\n\
                 shutdown_timeout_secs = 10\n[limits]\ntimeout_ms = 1000\n"
            ),
        )
        .unwrap();
        let args: Vec<String> = [
            "--config",
            config.to_str().unwrap(),
            "--mqtt-url",
            &mqtt.url(),
            "--redis-url",
            &redis.url(),
            "--rules-dir",
            rules.to_str().unwrap(),
            "--client-id",
            "wasmrule-delivery",
            "--qos",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
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
