//! Spill figures on this machine: how fast batches go to disk while Redis is down, and
//! how fast they come back when it returns.
//!
//! Run: `rules-wasm/build.sh rust && cargo bench -p wasmrule --bench spill`
//! (`-- --test` for a quick pass with small numbers; `SPILL_ONLY=log` or `e2e` for one
//! part; `WASMRULE_BIN=path` to pin the binary, see `tests/support`).
//!
//! 1. The log alone, in-process: append encoded batches to a [`SpillLog`] in a
//!    temporary directory, then read them back and decode them through a [`Backlog`], in
//!    pipelines of 1024 commands, deleting replayed segments as it goes. No Redis.
//! 2. End to end: the release `wasmrule` binary with `[redis.spill]`, the `seq-order`
//!    rule, a private mosquitto and redis-server. A burst of QoS 0 messages, published as
//!    fast as the publisher can, is taken by wasmrule with Redis up (the baseline), then
//!    with redis-server killed (into the spill); then redis-server is started again and
//!    the replay is timed until the spill is empty and every message is in Redis.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use wasmrule::Metrics;
use wasmrule::WriteBatch;
use wasmrule::{Backlog, SpillLog};

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(1, |c| c.get())
    );
    let only = std::env::var("SPILL_ONLY").unwrap_or_default();
    if only.is_empty() || only == "log" {
        log_alone(if quick { 2_000 } else { 50_000 });
    }
    if only.is_empty() || only == "e2e" {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(end_to_end(if quick { 5_000 } else { 100_000 }));
    }
}

/// A worker's batch as the `seq-order` rule makes it: 16 messages, 2 commands each.
fn sample_batch(i: u64) -> WriteBatch {
    let mut b = WriteBatch::default();
    for m in 0..16 {
        let n = (i * 16 + m).to_string();
        b.commands
            .push(["RPUSH", &format!("order:order/{}", m % 8), n.as_str()]);
        b.commands.push(["SETBIT", "order:seen", n.as_str(), "1"]);
    }
    b
}

fn log_alone(batches: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = SpillLog::open(dir.path(), 4 << 30, 16 << 20).unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut backlog = Backlog::new(log, 1 << 20, metrics.clone());
    let samples: Vec<WriteBatch> = (0..batches).map(sample_batch).collect();
    let t = Instant::now();
    for b in samples {
        backlog.push(b);
    }
    let append = t.elapsed().as_secs_f64();
    let bytes = Metrics::get(&metrics.spill_bytes) as f64;
    let commands = batches * 32;
    println!(
        "log append: {batches} batches of 32 commands ({:.1} MB): {:.0} batches/s, {:.0} commands/s, {:.0} MB/s",
        bytes / 1e6,
        batches as f64 / append,
        commands as f64 / append,
        bytes / 1e6 / append
    );
    let t = Instant::now();
    let mut read = 0;
    while !backlog.is_empty() {
        let chunk = backlog.chunk(1024);
        read += backlog.batches(&chunk).len() as u64;
        backlog.commit(chunk);
    }
    let replay = t.elapsed().as_secs_f64();
    assert_eq!(read, batches);
    println!(
        "log read back (decode, commit, delete segments): {:.0} batches/s, {:.0} commands/s, {:.0} MB/s",
        batches as f64 / replay,
        commands as f64 / replay,
        bytes / 1e6 / replay
    );
}

fn seen(redis: &Redis) -> Option<u64> {
    let mut c = redis::Client::open(redis.url())
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(200))
        .ok()?;
    redis::cmd("BITCOUNT").arg("order:seen").query(&mut c).ok()
}

fn getbit0(redis: &Redis) -> u64 {
    redis::cmd("GETBIT")
        .arg("order:seen")
        .arg(0)
        .query(&mut redis.conn())
        .unwrap_or(0)
}

/// wasmrule with the spill on; killed when the handle drops (also when the bench panics).
fn start_wasmrule(
    dir: &std::path::Path,
    redis: &Redis,
    mqtt: &Mosquitto,
    http: u16,
) -> WasmruleProcess {
    let rules = dir.join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(dist("seq-order"), rules.join("seq-order.wasm")).unwrap();
    let config = dir.join("wasmrule.toml");
    // A generous rule deadline: publisher, broker, Redis and wasmrule share the cores, and
    // an invocation preempted past the default 10 ms would drop a message from the count.
    std::fs::write(
        &config,
        format!(
            "[runtime]\nhttp_addr = \"127.0.0.1:{http}\"\n[limits]\ntimeout_ms = 1000\n\
             [redis.spill]\ndir = \"{}\"\nmax_bytes = 1073741824\n",
            dir.join("spill").display()
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
        "bench-spill",
        "--qos",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    WasmruleProcess::start(&args, &dir.join("wasmrule.log"))
}

async fn end_to_end(n: u64) {
    let mut redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let wasmrule = start_wasmrule(dir.path(), &redis, &mqtt, http);
    let publisher = Publisher::connect(&mqtt).await;
    eventually(Duration::from_secs(10), "seq-order serving", || {
        let _ = futures_util::FutureExt::now_or_never(publisher.publish("order/w", "0"));
        seen(&redis).filter(|n| *n > 0)
    })
    .await;
    let received = || metric(http, "wasmrule_messages_received_total").unwrap_or(0);
    let spilled = || metric(http, "wasmrule_spill_batches_total").unwrap_or(0);

    // Baseline, Redis up: the same burst straight to Redis (other sequence numbers),
    // until all of it is written.
    let before = seen(&redis).unwrap_or(0);
    let t = Instant::now();
    for i in 0..n {
        publisher
            .publish_qos(&format!("order/{}", i % 8), (10 * n + i).to_string(), 0)
            .await;
    }
    eventually(Duration::from_secs(120), "burst written", || {
        seen(&redis).filter(|s| *s >= before + n)
    })
    .await;
    let direct = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(spilled(), 0, "nothing spilled while Redis is up");

    redis.kill();
    // The first write after the kill fails and starts the spill.
    publisher.publish_qos("order/0", "1", 0).await;
    eventually(Duration::from_secs(10), "spilling", || {
        (spilled() > 0).then_some(())
    })
    .await;
    let base = received();
    let t = Instant::now();
    for i in 2..=n + 1 {
        publisher
            .publish_qos(&format!("order/{}", i % 8), i.to_string(), 0)
            .await;
    }
    eventually(
        Duration::from_secs(120),
        "burst taken into the spill",
        || (received() >= base + n).then_some(()),
    )
    .await;
    let taken = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "QoS 0 burst of {n} messages, Redis up: wasmrule took {direct:.0} msg/s; Redis down: \
         {taken:.0} msg/s into the spill ({:.2} of the first; {} batches, {:.1} MB on disk)",
        taken / direct,
        spilled(),
        metric(http, "wasmrule_spill_disk_bytes").unwrap_or(0) as f64 / 1e6,
    );

    redis.restart();
    let t = Instant::now();
    eventually(Duration::from_secs(120), "spill replayed", || {
        (metric(http, "wasmrule_spill_disk_bytes") == Some(0)).then_some(())
    })
    .await;
    let replay = t.elapsed().as_secs_f64();
    // Redis restarted empty (no persistence): what it holds now came from the replay,
    // sequence numbers 1..=n+1 (bit 0, the warm-up's, may have been spilled too).
    let got = seen(&redis).unwrap_or(0) - getbit0(&redis);
    let log = wasmrule.log();
    let drained = log
        .lines()
        .rfind(|l| l.contains("spill drained"))
        .unwrap_or("no drain line");
    println!(
        "Redis back: spill empty {replay:.2} s after redis-server was started (reconnect \
         backoff included), {got} of {} spilled messages in Redis\n  wasmrule: {drained}",
        n + 1
    );
}
