//! Beyond one machine (docs/scaling.md): several `wasmrule` processes in one MQTT share
//! group on a real mosquitto. Real processes, loopback only, each test bounded.
//!
//! Every message carries a sequence number; the `seq-counter` rule records it with
//! `SETBIT seen <n> 1` and `INCR writes`, so `BITCOUNT seen` counts distinct messages
//! that reached Redis and the growth of `writes` beyond it counts repeats.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

/// Receive Maximum of each instance: the most unacknowledged messages the broker has in
/// flight to it, so the most a SIGKILL can make it repeat.
const INFLIGHT: u16 = 100;
/// The share group of the tests.
const GROUP: &str = "scale";

/// `wasmrule run` arguments for instance `client_id` of the share group, with its
/// metrics on `http`.
fn member_args(
    config: &Path,
    mqtt: &Mosquitto,
    redis: &Redis,
    rules: &Path,
    client_id: &str,
    http: u16,
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
        "--share-group",
        GROUP,
        "--http-addr",
        &format!("127.0.0.1:{http}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// (distinct messages, writes) in Redis.
fn counts(redis: &Redis) -> Option<(u64, u64)> {
    let mut c = redis::Client::open(redis.url())
        .ok()?
        .get_connection()
        .ok()?;
    let seen: u64 = redis::cmd("BITCOUNT").arg("seen").query(&mut c).ok()?;
    let writes: Option<u64> = redis::cmd("GET").arg("writes").query(&mut c).ok()?;
    Some((seen, writes.unwrap_or(0)))
}

struct Member {
    process: WasmruleProcess,
    http: u16,
}

impl Member {
    fn received(&self) -> u64 {
        metric(self.http, "wasmrule_messages_received_total").unwrap_or(0)
    }
}

struct Group {
    redis: Redis,
    mqtt: Mosquitto,
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Group {
    /// `n` instances of `seq-counter` in one share group, speaking `protocol`.
    fn start(n: usize, protocol: &str) -> Group {
        let redis = Redis::start();
        let mqtt = Mosquitto::start();
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir(&rules).unwrap();
        std::fs::copy(dist("seq-counter"), rules.join("seq-counter.wasm")).unwrap();
        let config = dir.path().join("wasmrule.toml");
        std::fs::write(
            &config,
            format!(
                "[mqtt]\ninflight = {INFLIGHT}\nprotocol = \"{protocol}\"\n\
                 [runtime]\nshutdown_timeout_secs = 10\n"
            ),
        )
        .unwrap();
        let members = (0..n)
            .map(|i| {
                let http = free_port();
                let args = member_args(
                    &config,
                    &mqtt,
                    &redis,
                    &rules,
                    &format!("wasmrule-scale-{i}"),
                    http,
                );
                let log = dir.path().join(format!("wasmrule-{i}.log"));
                Member {
                    process: WasmruleProcess::start(&args, &log),
                    http,
                }
            })
            .collect();
        Group {
            redis,
            mqtt,
            members,
            _dir: dir,
        }
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("--- instance {i}:\n{}", m.process.log()))
            .collect()
    }

    /// Warms up with message 0 until every member has handled at least one: all are
    /// subscribed, so the stream is shared by all of them.
    async fn wait_all_serving(&self, publisher: &Publisher) {
        publish_until(
            publisher,
            "seq/warmup",
            "0",
            Duration::from_secs(30),
            "every member of the share group handles a message",
            || self.members.iter().all(|m| m.received() > 0).then_some(()),
        )
        .await;
        // The warm-up copies in flight land before the stream is counted.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    /// Waits until messages 0..=n are all in Redis and the writes stop growing;
    /// returns the writes.
    async fn wait_all(&self, n: u64, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((seen, writes)) = counts(&self.redis) {
                if seen == n + 1 {
                    // Let late repeats land before counting them.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return counts(&self.redis).unwrap().1;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "only {seen} of {} messages reached Redis ({writes} writes)\n{}",
                    n + 1,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Publishes `from..=to` at QoS 1 over `topics` topics, pausing 10 ms every `per_10ms`.
async fn stream(publisher: &Publisher, from: u64, to: u64, topics: u64, per_10ms: u64) {
    for i in from..=to {
        publisher
            .publish(&format!("seq/{}", i % topics), i.to_string())
            .await;
        if i % per_10ms == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Three instances in one share group (MQTT 5) share a QoS 1 stream over 1,000 topics;
/// one is SIGKILLed in the middle and started again with its client id. Every message
/// is written, each instance handled a share, and the repeats stay within the killed
/// instance's in-flight window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_a_qos1_stream_and_survive_a_kill() {
    const N: u64 = 60_000;
    const TOPICS: u64 = 1_000;
    let mut group = Group::start(3, "5");
    let publisher = Publisher::connect(&group.mqtt).await;
    group.wait_all_serving(&publisher).await;
    let (_, warm_writes) = counts(&group.redis).unwrap();

    let started = std::time::Instant::now();
    // The kill falls in the middle of a burst (between the pauses every 50
    // messages), while the instance has messages in flight.
    let kill_at = N / 2 + 25;
    stream(&publisher, 1, kill_at, TOPICS, 50).await;
    let before_kill = group.members[1].received();
    group.members[1].process.kill();
    eprintln!("message {kill_at}: SIGKILL instance 1");
    stream(&publisher, kill_at + 1, N / 2 + N / 10, TOPICS, 50).await;
    group.members[1].process.restart();
    eprintln!("message {}: instance 1 started again", N / 2 + N / 10);
    stream(&publisher, N / 2 + N / 10 + 1, N, TOPICS, 50).await;

    let writes = group.wait_all(N, Duration::from_secs(120)).await;
    let repeats = writes - warm_writes - N;
    let shares: Vec<u64> = group.members.iter().map(Member::received).collect();
    eprintln!(
        "{N} messages on {TOPICS} topics in {:.1} s; handled per instance {shares:?} \
         (instance 1 also {before_kill} before its kill); {repeats} repeats \
         (in-flight window {INFLIGHT})",
        started.elapsed().as_secs_f64()
    );
    assert!(
        shares[0] > 0 && shares[2] > 0 && before_kill > 0 && shares[1] > 0,
        "every instance handles a share: {shares:?}, {before_kill} before the kill"
    );
    assert!(
        repeats <= u64::from(INFLIGHT),
        "{repeats} repeats: more than the killed instance's in-flight window {INFLIGHT}\n{}",
        group.logs()
    );
}

/// The same over MQTT 3.1.1, without a kill: the share group works without subscription
/// identifiers, and nothing is repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_group_over_mqtt_311() {
    const N: u64 = 10_000;
    let group = Group::start(2, "3.1.1");
    let publisher = Publisher::connect(&group.mqtt).await;
    group.wait_all_serving(&publisher).await;
    let (_, warm_writes) = counts(&group.redis).unwrap();
    stream(&publisher, 1, N, 100, 50).await;
    let writes = group.wait_all(N, Duration::from_secs(60)).await;
    let shares: Vec<u64> = group.members.iter().map(Member::received).collect();
    eprintln!("MQTT 3.1.1: handled per instance {shares:?}");
    assert!(shares.iter().all(|s| *s > 0), "{shares:?}");
    assert_eq!(writes - warm_writes, N, "no repeats without a fault");
}

// ---- Redis Cluster ----

/// A redis-server child in its own directory, killed on drop.
struct Node {
    port: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Node {
    /// `redis-server` on a free loopback port with `args`, in a fresh directory.
    fn start(args: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = Self::spawn(port, dir.path(), &args);
        Node {
            port,
            child,
            dir,
            args,
        }
    }

    /// Starts again on the same port and directory.
    fn restart(&mut self) {
        self.child = Self::spawn(self.port, self.dir.path(), &self.args);
    }

    fn spawn(port: u16, dir: &Path, args: &[String]) -> std::process::Child {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        wait_listening(port, "redis-server");
        child
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}", self.addr()))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli ARGS` and returns its output; panics if it fails.
fn redis_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(args)
        .output()
        .expect("cannot run redis-cli");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-cli {args:?} failed:\n{text}");
    text
}

/// Three masters, no replicas, all 16,384 slots assigned.
struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    fn start() -> Cluster {
        let nodes: Vec<Node> = (0..3)
            .map(|_| {
                let bus = free_port().to_string();
                Node::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "5000",
                ])
            })
            .collect();
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        args.extend(nodes.iter().map(Node::addr));
        args.extend(["--cluster-yes".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        redis_cli(&args);
        let c = Cluster { nodes };
        c.wait_ok();
        c
    }

    /// Until every node says `cluster_state:ok` and agrees on the slots.
    fn wait_ok(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self.nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.conn())
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            });
            let check = std::process::Command::new("redis-cli")
                .args(["--cluster", "check", &self.nodes[0].addr()])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).contains("[OK] All 16384 slots covered")
                })
                .unwrap_or(false);
            if ok && check {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster did not become ok within 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(Node::addr).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    fn client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::new(
            self.nodes
                .iter()
                .map(|n| format!("redis://{}", n.addr()))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    fn node_id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[i].conn())
            .unwrap()
    }
}

/// One `wasmrule` with `rule` and `redis_url`, QoS 1, metrics on a free port.
fn single_instance(
    mqtt: &Mosquitto,
    redis_url: &str,
    rule: &str,
    extra_config: &str,
    dir: &Path,
) -> (WasmruleProcess, u16) {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::copy(dist(rule), rules.join(format!("{rule}.wasm"))).unwrap();
    let config = dir.join("wasmrule.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\ninflight = {INFLIGHT}\n{extra_config}\n\
             [runtime]\nshutdown_timeout_secs = 10\n"
        ),
    )
    .unwrap();
    let http = free_port();
    let args: Vec<String> = [
        "--config",
        config.to_str().unwrap(),
        "--mqtt-url",
        &mqtt.url(),
        "--redis-url",
        redis_url,
        "--rules-dir",
        rules.to_str().unwrap(),
        "--client-id",
        "wasmrule-scale-redis",
        "--qos",
        "1",
        "--http-addr",
        &format!("127.0.0.1:{http}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (
        WasmruleProcess::start(&args, &dir.join("wasmrule.log")),
        http,
    )
}

/// `(distinct, total)` entries of the `seq-order` lists `order:order/<d>` for
/// `devices` devices, and whether any sequence number appears twice.
fn order_lists(con: &mut impl redis::ConnectionLike, devices: u64) -> (u64, u64) {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for d in 0..devices {
        let items: Vec<u64> = redis::cmd("LRANGE")
            .arg(format!("order:order/{d}"))
            .arg(0)
            .arg(-1)
            .query(con)
            .unwrap();
        total += items.len() as u64;
        seen.extend(items);
    }
    (seen.len() as u64, total)
}

/// A QoS 1 stream over 1,000 device keys into a 3-master Redis Cluster, with slots
/// resharded from one master to another in the middle: every message lands exactly
/// once, and flushes are pipelines of many commands, not one command per round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_takes_a_stream_exactly_once_through_a_reshard() {
    const N: u64 = 200_000;
    const DEVICES: u64 = 1_000;
    let cluster = Cluster::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let (wasmrule, http) = single_instance(&mqtt, &cluster.url(), "seq-order", "", dir.path());
    let publisher = Publisher::connect(&mqtt).await;
    let client = cluster.client();
    warm_up_cluster(&publisher, &client).await;

    let from = cluster.node_id(0);
    let to = cluster.node_id(1);
    let entry = cluster.nodes[0].addr();
    let mut reshard = None;
    let started = std::time::Instant::now();
    for i in 1..=N {
        if i == N / 4 {
            eprintln!("message {i}: resharding 1000 slots from node 0 to node 1");
            let (entry, from, to) = (entry.clone(), from.clone(), to.clone());
            reshard = Some(std::thread::spawn(move || {
                redis_cli(&[
                    "--cluster",
                    "reshard",
                    &entry,
                    "--cluster-from",
                    &from,
                    "--cluster-to",
                    &to,
                    "--cluster-slots",
                    "1000",
                    "--cluster-yes",
                    "--cluster-pipeline",
                    "5",
                ])
            }));
        }
        publisher
            .publish(&format!("order/{}", i % DEVICES), i.to_string())
            .await;
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let reshard_out = reshard.unwrap().join().unwrap();
    assert!(
        reshard_out.contains("Moving slot"),
        "the reshard moved nothing:\n{reshard_out}"
    );
    eventually(
        Duration::from_secs(120),
        "every message in the cluster",
        || (seen(&client)? > N).then_some(()),
    )
    .await;
    let elapsed = started.elapsed();
    // Let late repeats land before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut con = client.get_connection().unwrap();
    let (distinct, total) = order_lists(&mut con, DEVICES);
    // Message 0 (the warm-up, on its own topic) is not in the device lists.
    let pipelines = metric(http, "wasmrule_redis_pipelines_total").unwrap();
    let flushes = metric(http, "wasmrule_redis_flushes_total").unwrap();
    let redirects = metric(http, "wasmrule_redis_redirects_total").unwrap();
    let written = metric(http, "wasmrule_commands_written_total").unwrap();
    let per_pipeline = written as f64 / pipelines as f64;
    eprintln!(
        "{N} messages over {DEVICES} device keys in {:.1} s: {distinct} distinct, {total} \
         entries; {written} commands in {pipelines} pipelines ({per_pipeline:.1} a pipeline) \
         over {flushes} flushes ({:.2} pipelines a flush); {redirects} redirects followed",
        elapsed.as_secs_f64(),
        pipelines as f64 / flushes as f64
    );
    assert!(redirects > 0, "the reshard moved slots the stream wrote to");
    assert_eq!(distinct, N, "every message once\n{}", wasmrule.log());
    assert_eq!(total, N, "no message twice\n{}", wasmrule.log());
    assert!(
        per_pipeline > 2.0,
        "flushes are batched: {written} commands in {pipelines} pipelines"
    );
    drop(wasmrule);
}

// ---- Redis Sentinel ----

/// A sentinel process, killed on drop.
struct Sentinel {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sentinel watching master `m` at `master_port`, on a free port.
fn sentinel(master_port: u16) -> Sentinel {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor m 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds m 1000\n\
             sentinel failover-timeout m 5000\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cannot start redis-server --sentinel");
    wait_listening(port, "sentinel");
    Sentinel {
        child,
        port,
        _dir: dir,
    }
}

/// The master the sentinel on `port` names for `m`.
fn master_port(port: u16) -> Option<u16> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_connection()
        .ok()?;
    let (_, p): (String, u16) = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg("m")
        .query(&mut c)
        .ok()?;
    Some(p)
}

/// (distinct, writes) of `seq-counter` on the server at `port`.
fn counts_at(port: u16) -> Option<(u64, u64)> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_connection()
        .ok()?;
    let seen: u64 = redis::cmd("BITCOUNT").arg("seen").query(&mut c).ok()?;
    let writes: Option<u64> = redis::cmd("GET").arg("writes").query(&mut c).ok()?;
    Some((seen, writes.unwrap_or(0)))
}

/// A master, its replica and three sentinels; the master is SIGKILLed under a QoS 1
/// stream. The writer follows the failover to the new master, and with
/// `redis.wait_replicas = 1` no write it confirmed dies with the old one: every
/// message is in the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_under_a_qos1_stream_loses_nothing() {
    const N: u64 = 20_000;
    let mut master = Node::start(&[]);
    let replica = Node::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let sentinels: Vec<_> = (0..3).map(|_| sentinel(master.port)).collect();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let url = format!("redis+sentinel://{}/m", addrs.join(","));
    let (wasmrule, _http) = single_instance(
        &mqtt,
        &url,
        "seq-counter",
        "[redis]\nwait_replicas = 1\nwait_timeout_ms = 500",
        dir.path(),
    );
    let publisher = Publisher::connect(&mqtt).await;
    publish_until(
        &publisher,
        "seq/warmup",
        "0",
        Duration::from_secs(30),
        "wasmrule writes to the master",
        || (counts_at(master.port)?.0 >= 1).then_some(()),
    )
    .await;
    // Every sentinel knows the replica (and so can fail over to it).
    eventually(
        Duration::from_secs(30),
        "the sentinels see the replica",
        || {
            sentinels
                .iter()
                .all(|s| {
                    redis::Client::open(format!("redis://127.0.0.1:{}", s.port))
                        .and_then(|c| c.get_connection())
                        .and_then(|mut c| {
                            redis::cmd("SENTINEL")
                                .arg("replicas")
                                .arg("m")
                                .query::<Vec<redis::Value>>(&mut c)
                        })
                        .is_ok_and(|r| !r.is_empty())
                })
                .then_some(())
        },
    )
    .await;
    let (_, warm_writes) = counts_at(master.port).unwrap();
    let old = master.port;
    for i in 1..=N {
        if i == N / 2 {
            eprintln!("message {i}: SIGKILL the master (port {old})");
            master.kill();
        }
        publisher
            .publish(&format!("seq/{}", i % 100), i.to_string())
            .await;
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let new = eventually(Duration::from_secs(60), "the sentinels fail over", || {
        master_port(sentinels[0].port).filter(|p| *p != old)
    })
    .await;
    assert_eq!(new, replica.port, "the replica is the new master");
    // The old master comes back (empty) and becomes the new one's replica, so WAIT 1
    // can be satisfied again.
    master.restart();
    let (seen, writes) = eventually(
        Duration::from_secs(120),
        "every message in the new master",
        || counts_at(new).filter(|(seen, _)| *seen > N),
    )
    .await;
    eprintln!(
        "failover from {old} to {new}: {seen} distinct messages in the new master, {} \
         repeats",
        writes as i64 - warm_writes as i64 - N as i64
    );
    assert_eq!(seen, N + 1, "{}", wasmrule.log());
    drop(sentinels);
}

/// In cluster mode a v2 rule's reads are answered from the master that holds the key,
/// after the writes queued before them; and while the whole cluster stops answering,
/// QoS 0 batches go to the spill and are replayed through the per-master pipelines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reads_and_spill() {
    let cluster = Cluster::start();
    let mqtt = Mosquitto::start();
    let client = cluster.client();

    // Reads: bench-v2-read writes a device's temperature only when HGET shows a
    // different one.
    let dir = tempfile::tempdir().unwrap();
    let (reader, http) = single_instance(&mqtt, &cluster.url(), "bench-v2-read", "", dir.path());
    let publisher = Publisher::connect(&mqtt).await;
    let temp = |c: &redis::cluster::ClusterClient| -> Option<String> {
        let mut con = c.get_connection().ok()?;
        redis::cmd("HGET")
            .arg("emqx_messages")
            .arg("dev-1")
            .query(&mut con)
            .ok()?
    };
    let body = |t: u32| format!(r#"{{"clientId":"dev-1","temp":{t}}}"#);
    publish_until(
        &publisher,
        "store-last-message/dev-1",
        &body(20),
        Duration::from_secs(30),
        "the first temperature written",
        || (temp(&client)? == "20").then_some(()),
    )
    .await;
    let written = || metric(http, "wasmrule_commands_written_total").unwrap_or(0);
    let received = || metric(http, "wasmrule_messages_received_total").unwrap_or(0);
    // The counter follows the write's confirmation, a moment after Redis shows it.
    let before = eventually(Duration::from_secs(30), "the first write counted", || {
        let n = written();
        (n >= 1).then_some(n)
    })
    .await;
    let got = received();
    // The same temperature again: the read sees it, nothing is written.
    for _ in 0..10 {
        publisher
            .publish("store-last-message/dev-1", body(20))
            .await;
    }
    eventually(Duration::from_secs(30), "the repeats handled", || {
        (received() >= got + 10).then_some(())
    })
    .await;
    // A new one is written.
    publisher
        .publish("store-last-message/dev-1", body(21))
        .await;
    eventually(
        Duration::from_secs(30),
        "the new temperature written",
        || (temp(&client)? == "21").then_some(()),
    )
    .await;
    eventually(Duration::from_secs(30), "the new write counted", || {
        (written() > before).then_some(())
    })
    .await;
    assert_eq!(
        written(),
        before + 1,
        "only the changed temperature is written: the reads saw the cluster's value\n{}",
        reader.log()
    );
    drop(reader);

    // The spill: every master stops answering (SIGSTOP) under a QoS 0 stream.
    const N: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill");
    let (wasmrule, http) = single_instance(
        &mqtt,
        &cluster.url(),
        "seq-order",
        &format!("[redis.spill]\ndir = {:?}", spill.display().to_string()),
        dir.path(),
    );
    warm_up_cluster(&publisher, &client).await;
    for n in &cluster.nodes {
        signal(n.child.id(), "STOP");
    }
    for i in 1..=N {
        publisher
            .publish_qos(&format!("order/{}", i % 100), i.to_string(), 0)
            .await;
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    eventually(Duration::from_secs(60), "batches in the spill", || {
        (metric(http, "wasmrule_spill_batches_total")? > 0).then_some(())
    })
    .await;
    for n in &cluster.nodes {
        signal(n.child.id(), "CONT");
    }
    eventually(
        Duration::from_secs(120),
        "every message in the cluster",
        || (seen(&client)? > N).then_some(()),
    )
    .await;
    let spilled = metric(http, "wasmrule_spill_batches_total").unwrap();
    let replayed = metric(http, "wasmrule_spill_replayed_batches_total").unwrap();
    eprintln!("spill in cluster mode: {spilled} batches spilled, {replayed} replayed");
    assert!(replayed > 0, "{}", wasmrule.log());
}

// ---- The embedded broker ----

/// A rumqttc subscriber on `port` counting what it receives on `filter`.
async fn counting_subscriber(
    port: u16,
    client_id: &str,
    filter: &str,
) -> (
    rumqttc::AsyncClient,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    let o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 100);
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))) => {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    client
        .subscribe(filter, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    (client, count, task)
}

/// The embedded broker routes `$share/<group>/<filter>` from its own clients: each
/// message to one member of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_shares_among_its_clients() {
    const N: u64 = 200;
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(dist("seq-counter"), rules.join("seq-counter.wasm")).unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "--embedded-broker",
        &format!("127.0.0.1:{port}"),
        "--redis-url",
        &redis.url(),
        "--rules-dir",
        rules.to_str().unwrap(),
        "--http-addr",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let broker = WasmruleProcess::start(&args, &dir.path().join("wasmrule.log"));
    eventually(
        Duration::from_secs(10),
        "the embedded broker listens",
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    )
    .await;
    let (_a, a, ta) = counting_subscriber(port, "share-a", "$share/g/seq/#").await;
    let (_b, b, tb) = counting_subscriber(port, "share-b", "$share/g/seq/#").await;
    let o = rumqttc::MqttOptions::new("share-pub", "127.0.0.1", port);
    let (publisher, mut eventloop) = rumqttc::AsyncClient::new(o, 1000);
    let tp = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let total = || {
        a.load(std::sync::atomic::Ordering::Relaxed) + b.load(std::sync::atomic::Ordering::Relaxed)
    };
    // Until both subscriptions exist: every warm-up message reaches one of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while total() == 0 {
        publisher
            .publish("seq/warmup", rumqttc::QoS::AtLeastOnce, false, "0")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(tokio::time::Instant::now() < deadline, "{}", broker.log());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a0, b0) = (
        a.load(std::sync::atomic::Ordering::Relaxed),
        b.load(std::sync::atomic::Ordering::Relaxed),
    );
    for i in 1..=N {
        publisher
            .publish(
                format!("seq/{i}"),
                rumqttc::QoS::AtLeastOnce,
                false,
                i.to_string(),
            )
            .await
            .unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "every message to one member",
        || (total() >= a0 + b0 + N).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (da, db) = (
        a.load(std::sync::atomic::Ordering::Relaxed) - a0,
        b.load(std::sync::atomic::Ordering::Relaxed) - b0,
    );
    eprintln!("embedded broker share group: {da} and {db} of {N}");
    assert_eq!(da + db, N, "each message to exactly one member");
    assert!(da > 0 && db > 0, "both members got a share: {da}, {db}");
    for t in [ta, tb, tp] {
        t.abort();
    }
}

// ---- Benchmark (run by hand: cargo test --test scale scale_bench -- --ignored) ----

/// CPU seconds (user + system) the process `pid` used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th,
    // stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    // SC_CLK_TCK is 100 on Linux.
    ticks as f64 / 100.0
}

/// One run: `instances` members of a share group writing `seq-counter` to
/// `redis_url`; `n` QoS 1 messages as fast as the publisher goes. Returns (msg/s,
/// CPU µs per message over all instances).
async fn bench_run(
    instances: usize,
    redis_url: &str,
    check: &dyn Fn() -> Option<u64>,
    n: u64,
) -> (f64, f64) {
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(dist("seq-order"), rules.join("seq-order.wasm")).unwrap();
    let config = dir.path().join("wasmrule.toml");
    std::fs::write(&config, format!("[mqtt]\ninflight = {INFLIGHT}\n")).unwrap();
    let members: Vec<Member> = (0..instances)
        .map(|i| {
            let http = free_port();
            let mut args: Vec<String> = [
                "--config",
                config.to_str().unwrap(),
                "--mqtt-url",
                &mqtt.url(),
                "--redis-url",
                redis_url,
                "--rules-dir",
                rules.to_str().unwrap(),
                "--client-id",
                &format!("bench-{i}"),
                "--qos",
                "1",
                "--http-addr",
                &format!("127.0.0.1:{http}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if instances > 1 {
                args.extend(["--share-group".to_string(), GROUP.to_string()]);
            }
            Member {
                process: WasmruleProcess::start(&args, &dir.path().join(format!("w{i}.log"))),
                http,
            }
        })
        .collect();
    let publisher = Publisher::connect(&mqtt).await;
    publish_until(
        &publisher,
        "order/warmup",
        "0",
        Duration::from_secs(30),
        "every member serves",
        || members.iter().all(|m| m.received() > 0).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0: f64 = members.iter().map(|m| cpu_seconds(m.process.pid())).sum();
    let started = std::time::Instant::now();
    for i in 1..=n {
        publisher
            .publish(&format!("order/{}", i % 1000), i.to_string())
            .await;
    }
    eventually(Duration::from_secs(300), "the benchmark's messages", || {
        (check()? > n).then_some(())
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let cpu: f64 = members
        .iter()
        .map(|m| cpu_seconds(m.process.pid()))
        .sum::<f64>()
        - cpu0;
    eprintln!("  {instances} instance(s): {n} messages in {secs:.2} s, {cpu:.2} CPU-s in wasmrule");
    (n as f64 / secs, cpu * 1e6 / n as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by hand"]
async fn scale_bench() {
    const N: u64 = 100_000;
    let bits = |url: String| {
        move || -> Option<u64> {
            let mut c = redis::Client::open(url.as_str())
                .ok()?
                .get_connection()
                .ok()?;
            redis::cmd("BITCOUNT").arg("order:seen").query(&mut c).ok()
        }
    };
    let r1 = Redis::start();
    let (one, one_cpu) = bench_run(1, &r1.url(), &bits(r1.url()), N).await;
    let r3 = Redis::start();
    let (three, three_cpu) = bench_run(3, &r3.url(), &bits(r3.url()), N).await;
    let cluster = Cluster::start();
    let client = cluster.client();
    let cluster_bits = || -> Option<u64> {
        let mut c = client.get_connection().ok()?;
        redis::cmd("BITCOUNT").arg("order:seen").query(&mut c).ok()
    };
    let (clu, clu_cpu) = bench_run(1, &cluster.url(), &cluster_bits, N).await;
    eprintln!(
        "binary {}\n{N} QoS 1 messages, seq-order (2 commands a message):\n\
         1 instance, single Redis:  {one:.0} msg/s, {one_cpu:.0} us CPU a message\n\
         3 instances, single Redis: {three:.0} msg/s, {three_cpu:.0} us CPU a message (all three)\n\
         1 instance, 3-master cluster: {clu:.0} msg/s, {clu_cpu:.0} us CPU a message",
        wasmrule_bin().display()
    );
}

/// Sequence numbers `seq-order` has marked seen in the cluster (`BITCOUNT order:seen`).
fn seen(c: &redis::cluster::ClusterClient) -> Option<u64> {
    let mut con = c.get_connection().ok()?;
    redis::cmd("BITCOUNT")
        .arg("order:seen")
        .query(&mut con)
        .ok()
}

/// Publishes until wasmrule's `seq-order` writes reach the cluster.
async fn warm_up_cluster(publisher: &Publisher, client: &redis::cluster::ClusterClient) {
    publish_until(
        publisher,
        "order/warmup",
        "0",
        Duration::from_secs(30),
        "wasmrule writes to the cluster",
        || (seen(client)? >= 1).then_some(()),
    )
    .await;
}

/// Waits (10 s at most) until something listens on 127.0.0.1:`port`.
fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
