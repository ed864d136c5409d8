//! End-to-end figures against real servers on this machine: publish -> rule -> Redis.
//!
//! Run: `rules-wasm/build.sh && cargo bench -p wasmrule --bench e2e`
//! (`E2E_ONLY=throughput,hostile` runs some parts; `E2E_WASMRULE=/path/to/wasmrule`
//! measures another build of the binary.)
//!
//! Starts a private mosquitto and redis-server on free loopback ports and the release
//! `wasmrule` binary as a separate process, then measures, each against a baseline
//! taken in the same run:
//!
//! 1. throughput: a broker-only run (the same publisher, one MQTT subscriber that only
//!    counts) versus publish -> wasmrule (`store-last-message`) -> Redis, and
//!    wasmrule's CPU time per message from /proc;
//! 2. latency at a fixed rate: publish -> rule -> `PUBLISH` on Redis -> a Redis
//!    subscriber in this process, p50/p99/max;
//! 3. resident memory with 100 rules loaded: copies of one file (compiled code shared)
//!    and 100 distinct files;
//! 4. time from `rename(2)` of a new rule into the directory to its first Redis write;
//! 5. a 10 s Redis outage under a steady QoS 1 stream: wasmrule's RSS during it, and how
//!    long after Redis returns the write rate is back to its level before;
//! 6. a neighbour's throughput while another tenant runs `loop {}` on every one of its
//!    messages, sent at the neighbour's rate: (a) with the deadline only, (b) with the
//!    tenant's CPU share and quarantine off, (c) with both (the defaults) and (c') with
//!    quarantine only, each against the neighbour alone with the same publish stream;
//!    and RSS while a tenant bombs memory;
//! 7. throughput with the embedded broker (`--embedded-broker`): publish -> wasmrule's
//!    own broker -> rule -> Redis, against the same broker-only baseline;
//! 8. rules that read (ABI v2, `reads`): `store-last-message` as v1, as v2 without a
//!    read (`bench-v2-noread`) and with one `HGET` per event (`bench-v2-read`);
//! 9. the EMQX 4 backend pack's message store (`emqx4`): `emqx4-messages` (a hash, its
//!    expiry, the topic index and its expiry per message) beside `store-last-message`;
//! 10. what recording costs (`record`): `store-last-message` with and without
//!     `--record`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::*;

const DEVICES: usize = 100;

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let n: usize = if quick { 2_000 } else { 200_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let payload = |i: usize| {
            format!(
                r#"{{"message":"this is a stored message","clientId":"dev-{d}","duration":"12s","temp":{i},"hum":40.2}}"#,
                d = i % DEVICES
            )
        };
        let payloads: Vec<(String, String)> =
            (0..n).map(|i| (format!("store-last-message/dev-{}", i % DEVICES), payload(i))).collect();

        println!("machine: {} cores; N = {n} messages of {} bytes, QoS 0, {DEVICES} topics",
            std::thread::available_parallelism().map_or(1, |c| c.get()), payloads[0].1.len());

        if enabled("throughput") {
        // 1a. Broker only.
        let base = broker_only(&payloads).await;
        println!("broker only (publisher -> mosquitto -> counting subscriber): {base:.0} msg/s");

        // 1b. Through wasmrule.
        let (rate, cpu_us) = through_wasmrule(&payloads).await;
        println!(
            "publish -> wasmrule (store-last-message) -> Redis: {rate:.0} msg/s, \
             ratio to broker only {:.2}, wasmrule CPU {cpu_us:.2} us/msg",
            rate / base
        );
        }

        // 8. Rules that read (ABI v2): the same rule as v1, as v2 without a read, and
        // as v2 with one read per event, interleaved over three rounds.
        if enabled("reads") {
            let rules = ["store-last-message", "bench-v2-noread", "bench-v2-read"];
            let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); rules.len()];
            for _ in 0..if quick { 1 } else { 3 } {
                for (i, r) in rules.iter().enumerate() {
                    results[i].push(through_wasmrule_with(r, &payloads).await);
                }
            }
            let median = |v: &mut Vec<(f64, f64)>| {
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                v[v.len() / 2]
            };
            let m: Vec<(f64, f64)> = results.iter_mut().map(median).collect();
            for (r, (rate, cpu)) in rules.iter().zip(&m) {
                println!("reads: {r:<20} {rate:>9.0} msg/s  wasmrule CPU {cpu:.2} us/msg");
            }
            println!(
                "reads: v2 without a read / v1: rate {:.2}, CPU {:.2}; one read per event / none: rate {:.2}, CPU {:.2}",
                m[1].0 / m[0].0,
                m[1].1 / m[0].1,
                m[2].0 / m[1].0,
                m[2].1 / m[1].1
            );
        }

        // 10. What recording costs: store-last-message with and without --record,
        // interleaved over three rounds.
        if enabled("record") {
            let mut results: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
            for _ in 0..if quick { 1 } else { 3 } {
                for (i, record) in [false, true].into_iter().enumerate() {
                    results[i]
                        .push(through_wasmrule_recording("store-last-message", &payloads, record).await);
                }
            }
            let median = |v: &mut Vec<(f64, f64)>| {
                v.sort_by(|a, b| a.0.total_cmp(&b.0));
                v[v.len() / 2]
            };
            let m: Vec<(f64, f64)> = results.iter_mut().map(median).collect();
            for (what, (rate, cpu)) in ["without --record", "with --record"].iter().zip(&m) {
                println!("record: {what:<18} {rate:>9.0} msg/s  wasmrule CPU {cpu:.2} us/msg");
            }
            println!(
                "record: with / without: rate {:.2}, CPU {:.2}",
                m[1].0 / m[0].0,
                m[1].1 / m[0].1
            );
        }

        // 9. The EMQX 4 backend's message store beside the seed rule.
        if enabled("emqx4") {
            let rules = ["store-last-message", "emqx4-messages"];
            let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); rules.len()];
            for _ in 0..if quick { 1 } else { 3 } {
                for (i, r) in rules.iter().enumerate() {
                    results[i].push(through_wasmrule_with(r, &payloads).await);
                }
            }
            let m: Vec<(f64, f64)> = results
                .iter_mut()
                .map(|v| {
                    v.sort_by(|a, b| a.0.total_cmp(&b.0));
                    v[v.len() / 2]
                })
                .collect();
            for (r, (rate, cpu)) in rules.iter().zip(&m) {
                println!("emqx4: {r:<20} {rate:>9.0} msg/s  wasmrule CPU {cpu:.2} us/msg");
            }
            println!(
                "emqx4: emqx4-messages / store-last-message: rate {:.2}, CPU {:.2}",
                m[1].0 / m[0].0,
                m[1].1 / m[0].1
            );
        }

        // 7. Through the embedded broker.
        if enabled("embedded") {
        let base = broker_only(&payloads).await;
        let (rate, cpu_us) = through_embedded(&payloads).await;
        println!(
            "publish -> wasmrule embedded broker (store-last-message) -> Redis: {rate:.0} msg/s, \
             ratio to broker only (mosquitto, {base:.0} msg/s) {:.2}, wasmrule CPU {cpu_us:.2} us/msg",
            rate / base
        );
        }

        // 2. Latency.
        if enabled("latency") {
        let secs = if quick { 1 } else { 5 };
        let (p50, p99, max, count) = latency(20_000, secs).await;
        println!(
            "latency at 20000 msg/s for {secs} s ({count} samples): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms"
        );
        }

        // 3. Memory.
        if enabled("rss") {
        let count = if quick { 5 } else { 100 };
        let (rss_empty, rss_copies) = rss_with_rules(count, false).await;
        let (_, rss_distinct) = rss_with_rules(count, true).await;
        println!(
            "RSS: {rss_empty:.1} MB with no rules, {rss_copies:.1} MB with {count} copies of one rule \
             loaded (their compiled code shared), {rss_distinct:.1} MB with {count} distinct rules"
        );
        }

        // 6. Hostile neighbour.
        if enabled("hostile") {
            hostile(if quick { 2_000 } else { 100_000 }).await;
        }

        // 5. Redis outage.
        if enabled("outage") {
            outage(if quick { 2 } else { 10 }).await;
        }

        // 4. Rename to serving.
        if enabled("rename") {
        let times = rename_to_serving(if quick { 2 } else { 5 }).await;
        let ms: Vec<String> = times.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1e3)).collect();
        println!("rename(2) of a new rule to its first Redis write: {} ms", ms.join(", "));
        }
    });
}

/// The wasmrule binary to measure: `E2E_WASMRULE` if set (a copy of another build, to
/// compare two versions with the same bench), else the one cargo built with this bench.
fn wasmrule_bin() -> std::path::PathBuf {
    std::env::var_os("E2E_WASMRULE")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_wasmrule").into())
}

/// The command that runs [`wasmrule_bin`], under E2E_WRAP if that is set
/// (E2E_WRAP="perf record -g -o /tmp/w.data" profiles the wasmrule process).
fn wasmrule_command() -> Command {
    let wrap = std::env::var("E2E_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(w) => {
            let mut c = Command::new(w);
            c.args(words).arg(wasmrule_bin());
            c
        }
        None => Command::new(wasmrule_bin()),
    }
}

fn start_wasmrule(redis: &Redis, mqtt: &Mosquitto, dir: &Path, log: &Path) -> Child {
    start_wasmrule_env(redis, mqtt, dir, log, &[])
}

/// [`start_wasmrule`] with environment variables for the child (`WASMRULE_RECORD`).
fn start_wasmrule_env(
    redis: &Redis,
    mqtt: &Mosquitto,
    dir: &Path,
    log: &Path,
    env: &[(&str, &Path)],
) -> Child {
    wasmrule_command()
        .args([
            "run",
            "--config",
            &bench_config(log),
            "--mqtt-url",
            &mqtt.url(),
            "--redis-url",
            &redis.url(),
            "--rules-dir",
        ])
        .arg(dir)
        .args(["--qos", "0"])
        .env("WASMRULE_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("wasmrule binary")
}

/// A config beside `log` with the default limits: the rule deadline is CPU time, so a
/// worker descheduled on the two saturated cores no longer fails a well-behaved event
/// (the hostile part sets its own limits).
fn bench_config(log: &Path) -> String {
    let path = log.with_extension("toml");
    std::fs::write(&path, "# defaults\n").unwrap();
    path.to_string_lossy().into_owned()
}

/// Which parts to run: all, or those named in E2E_ONLY (throughput,latency,rss,rename).
fn enabled(part: &str) -> bool {
    std::env::var("E2E_ONLY").map_or(true, |v| v.split(',').any(|p| p == part))
}

/// utime + stime of a process, in microseconds.
fn cpu_micros(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks * 1e6 / 100.0 // USER_HZ is 100 on Linux
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

/// The wasmrule process itself, also when E2E_WRAP runs it under another program.
fn wasmrule_pid(child: &Child) -> u32 {
    if std::env::var("E2E_WRAP").is_err() {
        return child.id();
    }
    // Not always a child of the wrapper: `perf record` runs its workload in a child of
    // a child. Look through the descendants, level by level.
    let children = |pid: &str| -> Vec<String> {
        let out = Command::new("pgrep").args(["-P", pid]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    for _ in 0..100 {
        let mut level = vec![child.id().to_string()];
        while !level.is_empty() {
            for pid in &level {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.starts_with("wasmrule") {
                    return pid.parse().unwrap();
                }
            }
            level = level.iter().flat_map(|p| children(p)).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("wrapped wasmrule process not found");
}

/// Stops wasmrule with SIGINT (so a wrapping profiler can finish) and waits.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

async fn publisher(mqtt: &Mosquitto) -> (rumqttc::AsyncClient, tokio::task::JoinHandle<()>) {
    publisher_at(mqtt.port).await
}

async fn publisher_at(port: u16) -> (rumqttc::AsyncClient, tokio::task::JoinHandle<()>) {
    let mut o = rumqttc::MqttOptions::new(format!("bench-pub-{}", free_port()), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10_000);
    let task = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    (client, task)
}

async fn publish_all(client: &rumqttc::AsyncClient, payloads: &[(String, String)]) {
    for (t, p) in payloads {
        client
            .publish(
                t.as_str(),
                rumqttc::QoS::AtMostOnce,
                false,
                p.as_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
}

async fn broker_only(payloads: &[(String, String)]) -> f64 {
    let mqtt = Mosquitto::start();
    let mut o = rumqttc::MqttOptions::new("bench-sub", "127.0.0.1", mqtt.port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (sub, mut el) = rumqttc::AsyncClient::new(o, 100);
    sub.subscribe("store-last-message/+", rumqttc::QoS::AtMostOnce)
        .await
        .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let sub_task = tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = ev {
                r.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (client, pub_task) = publisher(&mqtt).await;
    let start = Instant::now();
    publish_all(&client, payloads).await;
    let n = payloads.len() as u64;
    while received.load(Ordering::Relaxed) < n && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let got = received.load(Ordering::Relaxed);
    if got < n {
        println!("  (broker only: {got} of {n} arrived)");
    }
    let rate = got as f64 / start.elapsed().as_secs_f64();
    sub_task.abort();
    pub_task.abort();
    rate
}

async fn through_wasmrule(payloads: &[(String, String)]) -> (f64, f64) {
    through_wasmrule_with("store-last-message", payloads).await
}

/// As [`through_wasmrule`], with rule `rule` from rules-wasm/dist (one that writes
/// `HSET emqx_messages ...` per message).
async fn through_wasmrule_with(rule: &str, payloads: &[(String, String)]) -> (f64, f64) {
    through_wasmrule_recording(rule, payloads, false).await
}

/// [`through_wasmrule_with`], recording (`--record`) into a directory beside the rules
/// when `record`.
async fn through_wasmrule_recording(
    rule: &str,
    payloads: &[(String, String)],
    record: bool,
) -> (f64, f64) {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(dist(rule), rules.join("slm.wasm")).unwrap();
    let log = dir.path().join("wasmrule.log");
    let recording = dir.path().join("recording");
    let env: &[(&str, &Path)] = if record {
        &[("WASMRULE_RECORD", &recording)]
    } else {
        &[]
    };
    let mut child = start_wasmrule_env(&redis, &mqtt, &rules, &log, env);
    let (client, pub_task) = publisher(&mqtt).await;
    measure_through(&redis, &mut child, client, pub_task, &log, payloads).await
}

async fn through_embedded(payloads: &[(String, String)]) -> (f64, f64) {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(dist("store-last-message"), dir.path().join("slm.wasm")).unwrap();
    let log = dir.path().join("wasmrule.log");
    let port = free_port();
    let mut child = wasmrule_command()
        .args(["run", "--embedded-broker", &format!("127.0.0.1:{port}")])
        .args(["--config", &bench_config(&log)])
        .args([
            "--redis-url",
            &redis.url(),
            "--http-addr",
            "off",
            "--rules-dir",
        ])
        .arg(dir.path())
        .env("WASMRULE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("wasmrule binary");
    eventually(Duration::from_secs(10), "embedded broker listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await;
    let (client, pub_task) = publisher_at(port).await;
    measure_through(&redis, &mut child, client, pub_task, &log, payloads).await
}

/// Publishes `payloads` through a running wasmrule and waits until every device's
/// last reading is in Redis: (messages per second, wasmrule CPU us per message).
async fn measure_through(
    redis: &Redis,
    child: &mut Child,
    client: rumqttc::AsyncClient,
    pub_task: tokio::task::JoinHandle<()>,
    log: &Path,
    payloads: &[(String, String)],
) -> (f64, f64) {
    let pid = wasmrule_pid(child);
    // Warm up until the rule serves. Behind mosquitto the rule keys readings by the
    // topic's last level (`warm`); with the embedded broker by the publisher's client
    // id, so count HSET calls instead of looking for a field.
    let mut conn = redis.conn();
    eventually(
        Duration::from_secs(10),
        "store-last-message serving",
        || {
            let _ = client.try_publish(
                "store-last-message/warm",
                rumqttc::QoS::AtMostOnce,
                false,
                r#"{"temp":1}"#,
            );
            (hset_calls(&mut conn) > 0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = hset_calls(&mut conn);
    // Done when Redis has executed one HSET per message.
    let n = payloads.len();
    let cpu0 = cpu_micros(pid);
    let start = Instant::now();
    publish_all(&client, payloads).await;
    while hset_calls(&mut conn) < base + n as u64 {
        if start.elapsed() > Duration::from_secs(120) {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            println!(
                "  (wasmrule run did not complete: {} of {n} writes; log ends:\n{})",
                hset_calls(&mut conn) - base,
                tail.join("\n")
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_micros(pid) - cpu0;
    pub_task.abort();
    stop(child);
    let _ = child.wait();
    (n as f64 / elapsed, cpu / n as f64)
}

/// HSET commands Redis has executed (`INFO commandstats`).
fn hset_calls(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_hset:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn latency(rate: u64, secs: u64) -> (f64, f64, f64, usize) {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lat.wasm"),
        echo_rule("PUBLISH", "lat/#", "lat"),
    )
    .unwrap();
    let log = dir.path().join("wasmrule.log");
    let mut child = start_wasmrule(&redis, &mqtt, dir.path(), &log);

    let origin = Instant::now();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("lat").await.unwrap();
    let samples = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let s = samples.clone();
    let reader = tokio::spawn(async move {
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let now = origin.elapsed().as_nanos() as f64;
            let event: serde_json::Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
            let sent: f64 = event["payload"].as_str().unwrap().parse().unwrap();
            if sent > 0.0 {
                s.lock().unwrap().push((now - sent) / 1e6);
            }
        }
    });
    let (client, pub_task) = publisher(&mqtt).await;
    eventually(Duration::from_secs(10), "echo rule serving", || {
        let _ = client.try_publish("lat/warm", rumqttc::QoS::AtMostOnce, false, "0");
        (!samples.lock().unwrap().is_empty()
            || std::fs::read_to_string(&log)
                .unwrap()
                .contains("subscribing"))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    samples.lock().unwrap().clear();

    // `rate` messages per second in 1 ms ticks.
    let per_tick = (rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tick.tick().await;
        for _ in 0..per_tick {
            let sent = origin.elapsed().as_nanos().to_string();
            client
                .publish("lat/x", rumqttc::QoS::AtMostOnce, false, sent)
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
    pub_task.abort();
    let _ = child.kill();
    let _ = child.wait();
    let mut v = samples.lock().unwrap().clone();
    v.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (pct(0.5), pct(0.99), *v.last().unwrap(), v.len())
}

/// RSS with no rules and with `count` rules, each `store-last-message`: the same file
/// `count` times, or (`distinct`) each with a custom section of its own, so that no two
/// have the same bytes and each is compiled and held on its own.
async fn rss_with_rules(count: usize, distinct: bool) -> (f64, f64) {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("wasmrule.log");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let mut child = start_wasmrule(&redis, &mqtt, &rules, &log);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let empty = rss_mb(child.id());
    let src = std::fs::read(dist("store-last-message")).unwrap();
    for i in 0..count {
        let mut bytes = src.clone();
        if distinct {
            // A custom section (id 0): size, name length, name, contents.
            let name = format!("bench-copy-{i:03}");
            bytes.push(0);
            bytes.push((1 + name.len()) as u8);
            bytes.push(name.len() as u8);
            bytes.extend_from_slice(name.as_bytes());
        }
        std::fs::write(rules.join(format!("rule-{i}.wasm")), &bytes).unwrap();
    }
    eventually(Duration::from_secs(120), "all rules loaded", || {
        let text = std::fs::read_to_string(&log).unwrap();
        (text.matches("loaded rule").count() >= count).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let full = rss_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    (empty, full)
}

async fn rename_to_serving(rounds: usize) -> Vec<Duration> {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let log = dir.path().join("wasmrule.log");
    let mut child = start_wasmrule(&redis, &mqtt, &rules, &log);
    let (client, pub_task) = publisher(&mqtt).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let src = std::fs::read(dist("topic-counter")).unwrap();
    let mut out = Vec::new();
    for r in 0..rounds {
        let staged = rules.join(format!(".staged-{r}.wasm"));
        std::fs::write(&staged, &src).unwrap();
        let topic = format!("rename/{r}");
        let start = Instant::now();
        std::fs::rename(&staged, rules.join("counter.wasm")).unwrap();
        // Publish every millisecond until the rule has written.
        loop {
            let _ = client.try_publish(topic.as_str(), rumqttc::QoS::AtMostOnce, false, "x");
            if redis.hget("mqtt_topic_count", &topic).is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "rule never served"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.push(start.elapsed());
        // Remove it and wait until unloaded, so the next round starts from nothing.
        std::fs::remove_file(rules.join("counter.wasm")).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    pub_task.abort();
    let _ = child.kill();
    let _ = child.wait();
    out
}

/// Sum of `writes` in Redis, or `None` while Redis is down.
fn writes(url: &str) -> Option<u64> {
    let mut c = redis::Client::open(url)
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(200))
        .ok()?;
    let v: Option<u64> = redis::cmd("GET").arg("writes").query(&mut c).ok()?;
    Some(v.unwrap_or(0))
}

async fn outage(down_secs: u64) {
    const RATE: u64 = 5000;
    let mut redis = Redis::start_with(true);
    let mqtt = Mosquitto::start_with(false);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(dist("seq-counter"), rules.join("seq.wasm")).unwrap();
    let log = dir.path().join("wasmrule.log");
    let mut child = Command::new(wasmrule_bin())
        .args([
            "run",
            "--mqtt-url",
            &mqtt.url(),
            "--redis-url",
            &redis.url(),
            "--rules-dir",
        ])
        .arg(&rules)
        .args([
            "--qos",
            "1",
            "--client-id",
            "bench-outage",
            "--http-addr",
            "off",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let publisher = Publisher::connect_with(&mqtt, "bench-outage-pub", false).await;
    eventually(Duration::from_secs(10), "seq-counter serving", || {
        let _ = futures_util::FutureExt::now_or_never(publisher.publish("seq/0", "0"));
        writes(&redis.url()).filter(|w| *w > 0)
    })
    .await;

    // A steady QoS 1 stream at RATE msg/s from its own task.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let stream = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut i = 1u64;
        while !s.load(Ordering::Relaxed) {
            tick.tick().await;
            for _ in 0..RATE / 100 {
                publisher.publish(&format!("seq/{i}"), i.to_string()).await;
                i += 1;
            }
        }
    });

    let sample = Duration::from_millis(500);
    let mut last = writes(&redis.url()).unwrap();
    let mut rates = Vec::new();
    let mut rss = Vec::new();
    let start = Instant::now();
    let mut phase = 0; // 0 before, 1 down, 2 after
    let mut recovered_after: Option<Duration> = None;
    let mut restarted_at = None;
    let mut before_rate = 0.0;
    loop {
        tokio::time::sleep(sample).await;
        let t = start.elapsed();
        rss.push((phase, rss_mb(child.id())));
        if phase == 0 && t >= Duration::from_secs(5) {
            let n = rates.len();
            before_rate = rates[n.saturating_sub(6)..].iter().sum::<f64>()
                / rates[n.saturating_sub(6)..].len() as f64;
            redis.kill();
            phase = 1;
            continue;
        }
        if phase == 1 && t >= Duration::from_secs(5 + down_secs) {
            redis.restart();
            restarted_at = Some(Instant::now());
            last = writes(&redis.url()).unwrap_or(last);
            phase = 2;
            continue;
        }
        if phase == 1 {
            continue;
        }
        let Some(w) = writes(&redis.url()) else {
            continue;
        };
        let rate = w.saturating_sub(last) as f64 / sample.as_secs_f64();
        last = w;
        rates.push(rate);
        if phase == 2 && recovered_after.is_none() && rate >= 0.9 * before_rate {
            recovered_after = restarted_at.map(|r| r.elapsed());
        }
        if phase == 2 && (recovered_after.is_some() || t > Duration::from_secs(5 + down_secs + 15))
        {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = stream.await;
    let max = |p: i32| {
        rss.iter()
            .filter(|(ph, _)| *ph == p)
            .map(|(_, r)| *r)
            .fold(0.0, f64::max)
    };
    println!(
        "Redis down {down_secs} s under {RATE} msg/s QoS 1: write rate before {before_rate:.0}/s; \
         wasmrule RSS max {:.1} MB before, {:.1} MB during; rate back to >= 90% {} after Redis returned",
        max(0),
        max(1),
        match recovered_after {
            Some(d) => format!("{:.1} s", d.as_secs_f64()),
            None => "NOT within 15 s".to_owned(),
        }
    );
    stop_child(&mut child);
}

fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A rule in tenant `acme` running `body` on every message under `acme/`.
fn hostile_rule(body: &str) -> Vec<u8> {
    let manifest = r#"{"name":"hostile","filters":["acme/#"]}"#;
    let esc: String = manifest.bytes().map(|c| format!("\\{c:02x}")).collect();
    wat::parse_str(format!(
        r#"(module (memory (export "memory") 1) (func (export "wasmrule_abi_version_1"))
           (data (i32.const 0) "{esc}")
           (func (export "wasmrule_manifest") (result i64) (i64.const {}))
           (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 1024))
           (func (export "wasmrule_on_event") (param i32 i32) (result i64) {body}))"#,
        manifest.len()
    ))
    .unwrap()
}

/// What one neighbour run measured.
struct NeighbourRun {
    /// Neighbour messages per second, publish of the first to write of the last.
    rate: f64,
    /// Peak RSS of the wasmrule process, MB.
    rss: f64,
    /// The hostile tenant's invocations that hit the deadline, and its events shed.
    timeouts: u64,
    shed: u64,
}

/// Neighbour messages per second with an optional hostile rule and tenant config.
/// The publisher sends `n` messages to the neighbour (`store-last-message/dev-N`) and,
/// after every `hostile_every`-th of them, one to tenant `acme` (`acme/dev-N`, over the
/// same 100 topics), whether or not a rule subscribes to them.
///
/// With `rate`, the neighbour's messages are published at that many per second (and
/// acme's at the same rate), in 1 ms ticks; without, as fast as the publisher can.
async fn neighbour_rate(
    n: usize,
    hostile_every: usize,
    hostile: Option<&[u8]>,
    tenants: &str,
    rate: Option<u64>,
) -> NeighbourRun {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(rules.join("acme")).unwrap();
    std::fs::copy(dist("store-last-message"), rules.join("slm.wasm")).unwrap();
    if let Some(w) = hostile {
        std::fs::write(rules.join("acme").join("hostile.wasm"), w).unwrap();
    }
    let http_port = free_port();
    let cfg = dir.path().join("wasmrule.toml");
    std::fs::write(
        &cfg,
        format!("[runtime]\nhttp_addr = \"127.0.0.1:{http_port}\"\n{tenants}"),
    )
    .unwrap();
    let log = dir.path().join("wasmrule.log");
    let mut child = Command::new(wasmrule_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .args([
            "--mqtt-url",
            &mqtt.url(),
            "--redis-url",
            &redis.url(),
            "--rules-dir",
        ])
        .arg(&rules)
        .args(["--qos", "0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (client, pub_task) = publisher(&mqtt).await;
    eventually(Duration::from_secs(10), "serving", || {
        let _ = client.try_publish(
            "store-last-message/warm",
            rumqttc::QoS::AtMostOnce,
            false,
            r#"{"temp":1}"#,
        );
        redis.hget("emqx_messages", "warm")
    })
    .await;
    let start = Instant::now();
    let rss_max = Arc::new(std::sync::Mutex::new(0f64));
    let r = rss_max.clone();
    let sampler = tokio::spawn(async move {
        loop {
            let v = rss_mb(pid);
            {
                let mut m = r.lock().unwrap();
                *m = m.max(v);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let per_tick = rate.map(|r| (r / 1000).max(1) as usize);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n {
        if per_tick.is_some_and(|k| i % k == 0) {
            tick.tick().await;
        }
        let payload = format!(r#"{{"temp":{i}}}"#);
        client
            .publish(
                format!("store-last-message/dev-{}", i % DEVICES),
                rumqttc::QoS::AtMostOnce,
                false,
                payload,
            )
            .await
            .unwrap();
        if i % hostile_every == 0 {
            client
                .publish(
                    format!("acme/dev-{}", i % DEVICES),
                    rumqttc::QoS::AtMostOnce,
                    false,
                    "x",
                )
                .await
                .unwrap();
        }
    }
    let last: Vec<String> = (0..DEVICES)
        .map(|d| (n - DEVICES + d).to_string())
        .collect();
    let mut conn = redis.conn();
    loop {
        let vals: Vec<Option<String>> = redis::cmd("HMGET")
            .arg("emqx_messages")
            .arg((0..DEVICES).map(|d| format!("dev-{d}")).collect::<Vec<_>>())
            .query(&mut conn)
            .unwrap();
        if vals.iter().zip(&last).all(|(v, l)| v.as_deref() == Some(l)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "neighbour run did not complete"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    sampler.abort();
    pub_task.abort();
    let metrics = http_get(http_port, "/metrics");
    let count = |kind: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("wasmrule_invocation_failures_total{tenant=\"acme\"")
                    && l.contains(&format!("kind=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let (timeouts, shed) = (count("timeout"), count("cpu_budget"));
    stop_child(&mut child);
    let rss = *rss_max.lock().unwrap();
    NeighbourRun {
        rate,
        rss,
        timeouts,
        shed,
    }
}

/// The body of `GET path` from wasmrule's health endpoint.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

async fn hostile(n: usize) {
    let looping = hostile_rule("(loop $l (br $l)) (i64.const 0)");
    // A well-behaved acme rule: returns no commands (a zeroed result buffer).
    let benign = hostile_rule("(i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const 5))");
    let bomb = hostile_rule(
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
    );
    let no_quarantine = "quarantine_failures = 4000000000\n";
    let no_share = "cpu_share_percent = 100\n";
    let deadline_only = format!("[tenants.acme]\n{no_quarantine}{no_share}");
    let share_only = format!("[tenants.acme]\n{no_quarantine}");
    let quarantine_only = format!("[tenants.acme]\n{no_share}");
    let line = |what: &str, msgs: usize, r: &NeighbourRun, alone: &NeighbourRun| {
        println!(
            "  {what:<52} {msgs:>7} msgs {:>8.0} msg/s  {:>5.3} of alone  (acme: {} timeouts, {} shed)",
            r.rate,
            r.rate / alone.rate,
            r.timeouts,
            r.shed
        );
    };
    // Every run publishes the same stream: one acme message per neighbour message.
    // Deadline only costs 10 ms of a worker per acme message: a hundredth of the
    // messages is enough to measure it.
    let few = (n / 100).max(DEVICES);
    for rate in [None, Some(FAIR_RATE)] {
        let alone = neighbour_rate(n, 1, None, "", rate).await;
        let benign_run = neighbour_rate(n, 1, Some(&benign), "", rate).await;
        let a = neighbour_rate(few, 1, Some(&looping), &deadline_only, rate).await;
        let b = neighbour_rate(n, 1, Some(&looping), &share_only, rate).await;
        let c = neighbour_rate(n, 1, Some(&looping), "", rate).await;
        let c2 = neighbour_rate(n, 1, Some(&looping), &quarantine_only, rate).await;
        match rate {
            None => println!(
                "neighbour at full speed, tenant acme sending one message per neighbour \
                 message (100 topics each):"
            ),
            Some(r) => println!(
                "neighbour at {r} msg/s, tenant acme sending one message per neighbour \
                 message (100 topics each):"
            ),
        }
        line(
            "alone (acme's messages published, no acme rule)",
            n,
            &alone,
            &alone,
        );
        line(
            "acme well-behaved (a rule returning nothing)",
            n,
            &benign_run,
            &alone,
        );
        line(
            "(a) loop {}: deadline only (no CPU share or quarantine)",
            few,
            &a,
            &alone,
        );
        line(
            "(b) loop {}: CPU share (default 10%), no quarantine",
            n,
            &b,
            &alone,
        );
        line(
            "(c) loop {}: CPU share and quarantine (the defaults)",
            n,
            &c,
            &alone,
        );
        line(
            "(c') loop {}: quarantine only (no CPU share)",
            n,
            &c2,
            &alone,
        );
        if rate.is_none() {
            let bomb = neighbour_rate(n, 10, Some(&bomb), &deadline_only, None).await;
            println!(
                "RSS max: {:.1} MB alone, {:.1} MB while a tenant grows memory to the cap on \
                 every tenth message (no CPU share, no quarantine)",
                alone.rss, bomb.rss
            );
        }
    }
}

/// Offered rate of the fixed-rate neighbour runs: below what this machine does at full
/// speed with both tenants' traffic, so that a shortfall is the hostile tenant's doing.
const FAIR_RATE: u64 = 10_000;
