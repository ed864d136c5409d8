//! Hostile rules: a tenant (`acme`) drops in rules that loop, bomb memory, the stack or
//! the output, return forbidden commands or reach for other tenants' keys, or do not
//! load at all. Each must be contained with its typed reason while a well-behaved tenant
//! (`good`) keeps being served, and nothing outside `acme:` may change in Redis.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::*;
use wasmrule::Metrics;
use wasmrule::Runtime;

fn esc(b: &[u8]) -> String {
    b.iter().map(|c| format!("\\{c:02x}")).collect()
}

/// A result buffer holding `cmds`, as a WAT data segment at `at`, and its length.
fn result_segment(at: u32, cmds: &[&[&[u8]]]) -> (String, usize) {
    let mut b = vec![0u8];
    b.extend((cmds.len() as u32).to_le_bytes());
    for c in cmds {
        b.extend((c.len() as u32).to_le_bytes());
        for a in *c {
            b.extend((a.len() as u32).to_le_bytes());
            b.extend(*a);
        }
    }
    (format!("(data (i32.const {at}) \"{}\")", esc(&b)), b.len())
}

/// A rule whose `wasmrule_on_event` body is `body` (leaving an i64), with `extra`
/// module fields. Memory starts at 2 pages; events are written at 64 KiB.
fn wat_rule(filters: &[&str], body: &str, extra: &str) -> Vec<u8> {
    let list: Vec<String> = filters.iter().map(|f| format!("\"{f}\"")).collect();
    let manifest = format!(r#"{{"name":"hostile","filters":[{}]}}"#, list.join(","));
    wat_rule_with_manifest(&manifest, body, extra)
}

/// [`wat_rule`] with the manifest JSON given whole.
fn wat_rule_with_manifest(manifest: &str, body: &str, extra: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
          (memory (export "memory") 2)
          (func (export "wasmrule_abi_version_1"))
          (data (i32.const 0) "{m}")
          (func (export "wasmrule_manifest") (result i64) (i64.const {mlen}))
          (func (export "wasmrule_alloc") (param $n i32) (result i32) (local $need i32)
            (local.set $need
              (i32.sub
                (i32.shr_u (i32.add (i32.add (i32.const 65536) (local.get $n)) (i32.const 65535))
                           (i32.const 16))
                (memory.size)))
            (if (i32.gt_s (local.get $need) (i32.const 0))
              (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1))
                (then (return (i32.const 0))))))
            (i32.const 65536))
          (func (export "wasmrule_on_event") (param $p i32) (param $n i32) (result i64) {body})
          {extra})"#,
        m = esc(manifest.as_bytes()),
        mlen = manifest.len(),
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("test WAT: {e}\n{text}"))
}

fn returns(cmds: &[&[&[u8]]]) -> Vec<u8> {
    let (seg, len) = result_segment(4096, cmds);
    wat_rule(
        &["acme/#"],
        &format!("(i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const {len}))"),
        &seg,
    )
}

struct Env {
    redis: Redis,
    mqtt: Mosquitto,
    dir: tempfile::TempDir,
    // `KEYS` commands this test sent itself (see `assert_nothing_forbidden_ran`).
    keys_calls: AtomicU64,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("acme")).unwrap();
        std::fs::create_dir(dir.path().join("good")).unwrap();
        Env {
            redis: Redis::start(),
            mqtt: Mosquitto::start(),
            dir,
            keys_calls: AtomicU64::new(0),
        }
    }

    fn tenant(&self, t: &str) -> std::path::PathBuf {
        self.dir.path().join(t)
    }

    async fn runtime(&self, tenants_toml: &str) -> Runtime {
        let mut cfg = config(&self.redis, &self.mqtt, self.dir.path());
        let file = wasmrule::Config::from_toml(tenants_toml).unwrap();
        cfg.tenants = file.tenants;
        Runtime::start(cfg).await.unwrap()
    }

    fn dead_letters(&self, key: &str) -> Vec<HashMap<String, String>> {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query(&mut self.redis.conn())
            .unwrap();
        entries.into_iter().map(|(_, f)| f).collect()
    }

    fn keys(&self) -> Vec<Vec<u8>> {
        self.keys_calls.fetch_add(1, Ordering::Relaxed);
        redis::cmd("KEYS")
            .arg("*")
            .query(&mut self.redis.conn())
            .unwrap()
    }
}

/// Calls so far per command, from the test's private Redis (`INFO commandstats`):
/// `flushall`, `client|setinfo` (subcommands after a `|`).
fn commandstats(env: &Env) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut env.redis.conn())
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Commands no rule may ever get to Redis (docs/security.md).
const FORBIDDEN: &[&str] = &[
    "flushall", "flushdb", "eval", "evalsha", "config", "keys", "scan", "select", "move", "rename",
    "migrate", "shutdown", "debug", "module", "client", "script", "function",
];

/// Nothing forbidden was ever executed by the test's Redis, whatever the rules returned.
/// Two things the test itself causes are told apart: its own `KEYS *` (counted in
/// `Env::keys`) and `CLIENT SETINFO`, which the Redis client library (redis-rs) sends
/// when the test's own connections connect, to name themselves (wasmrule's skip it); no
/// other `CLIENT` subcommand may appear.
fn assert_nothing_forbidden_ran(env: &Env) {
    let stats = commandstats(env);
    assert!(
        stats.contains_key("hset") || stats.contains_key("rpush"),
        "commandstats not read: {stats:?}"
    );
    for &forbidden in FORBIDDEN {
        for (name, &calls) in &stats {
            let base = name.split('|').next().unwrap_or(name);
            if base != forbidden {
                continue;
            }
            let expected = match name.as_str() {
                "keys" => env.keys_calls.load(Ordering::Relaxed),
                "client|setinfo" => calls,
                _ => 0,
            };
            assert_eq!(
                calls, expected,
                "Redis executed `{name}` {calls} times: {stats:?}"
            );
        }
    }
}

fn write(dir: &Path, name: &str, wasm: &[u8]) {
    // Write next to the target and rename in, as a deployment would.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, wasm).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The neighbour: pushes every event it gets to `good:events`.
fn neighbour(env: &Env) {
    write(
        &env.tenant("good"),
        "echo.wasm",
        &echo_rule("RPUSH", "good/#", "events"),
    );
}

/// Publishes `n` messages for the neighbour interleaved with `n` for the hostile tenant
/// and checks that every neighbour message is written, once.
async fn neighbour_served(env: &Env, publisher: &Publisher, n: usize, hostile_topic: &str) {
    static BATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let batch = BATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let prefix = format!("good/{batch}/");
    for i in 0..n {
        publisher
            .publish(&format!("{prefix}{i}"), i.to_string())
            .await;
        publisher.publish(hostile_topic, i.to_string()).await;
    }
    let count = || {
        env.redis
            .lrange("good:events")
            .iter()
            .filter(|raw| {
                let e: serde_json::Value = serde_json::from_slice(raw).unwrap();
                e["topic"].as_str().unwrap().starts_with(&prefix)
            })
            .count()
    };
    eventually(
        Duration::from_secs(20),
        "every neighbour message written",
        || (count() >= n).then_some(()),
    )
    .await;
    assert_eq!(count(), n, "neighbour messages written twice");
}

async fn wait_loaded(rt: &Runtime, id: &str) {
    eventually(Duration::from_secs(10), &format!("{id} loaded"), || {
        rt.rules.snapshot().get(id).map(|_| ())
    })
    .await;
}

async fn warm_up(env: &Env, publisher: &Publisher) {
    eventually(Duration::from_secs(5), "neighbour serving", || {
        let _ = futures_now(publisher.publish("good/warm", "w"));
        (!env.redis.lrange("good:events").is_empty()).then_some(())
    })
    .await;
}

fn futures_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    futures_util::FutureExt::now_or_never(f)
}

const QUICK_QUARANTINE: &str = "[tenants.acme]\nquarantine_failures = 1000000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_rules_fail_with_their_reason_and_the_neighbour_is_served() {
    let env = Env::new();
    neighbour(&env);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("loop", wat_rule(&["acme/loop"], "(loop $l (br $l)) (i64.const 0)", ""), "timeout"),
        (
            "membomb",
            wat_rule(
                &["acme/membomb"],
                "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 64)) (i32.const -1)))) unreachable",
                "",
            ),
            "memory",
        ),
        (
            "stackbomb",
            wat_rule(
                &["acme/stackbomb"],
                "(call $r (i32.const 0)) (i64.const 0)",
                "(func $r (param i32) (call $r (i32.add (local.get 0) (i32.const 1))))",
            ),
            "stack",
        ),
        (
            // Claims a million commands.
            "million",
            wat_rule(
                &["acme/million"],
                "(i32.store8 (i32.const 4096) (i32.const 0)) (i32.store (i32.const 4097) (i32.const 1000000))
                 (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const 5))",
                "",
            ),
            "too_many_commands",
        ),
        (
            // A 2 GiB result buffer.
            "outbomb",
            wat_rule(&["acme/outbomb"], "(i64.const 0x00001000_7fffffff)", ""),
            "output_too_large",
        ),
        (
            "forbidden",
            returns(&[&[b"SET", b"ok", b"1"], &[b"FLUSHALL"]]),
            "command_not_allowed",
        ),
        ("eval", returns(&[&[b"EVAL", b"return 1", b"0"]]), "command_not_allowed"),
        ("config", returns(&[&[b"CONFIG", b"SET", b"appendonly", b"no"]]), "command_not_allowed"),
        ("unbounded", returns(&[&[b"XADD", b"s", b"*", b"f", b"v"]]), "unbounded_stream"),
        ("arity", returns(&[&[b"HSET", b"h", b"f"]]), "command_arity"),
        ("oob", wat_rule(&["acme/oob"], "(i64.const 0x0fff0000_00001000)", ""), "abi"),
    ];
    for (name, wasm, _) in &cases {
        // Each hostile rule listens on its own topic, except the `returns` ones, which
        // all listen on acme/#: give those distinct files, they share the topic.
        write(&env.tenant("acme"), &format!("{name}.wasm"), wasm);
    }
    let rt = env.runtime(QUICK_QUARANTINE).await;
    let publisher = Publisher::connect(&env.mqtt).await;
    warm_up(&env, &publisher).await;

    for (name, _, kind) in &cases {
        let topic = format!("acme/{name}");
        let before = rt.metrics.failures("acme", kind);
        // Publish until the rule has failed with its reason: once the looping rule has
        // used acme's CPU share of a worker, acme's events there are shed (not run) for
        // up to a second.
        let mut rounds = 0;
        while rt.metrics.failures("acme", kind) <= before {
            neighbour_served(&env, &publisher, 5, &topic).await;
            rounds += 1;
            assert!(rounds < 1000, "{name} never failed with {kind}");
        }
    }

    // The dead-letter stream names each reason.
    let dl = env.dead_letters("acme:wasmrule:deadletter");
    for (name, _, kind) in &cases {
        assert!(
            dl.iter()
                .any(|e| e["kind"] == *kind && e["rule"].starts_with("acme/")),
            "no dead letter of kind {kind} (from {name})"
        );
    }
    let timeout = dl.iter().find(|e| e["kind"] == "timeout").unwrap();
    assert!(timeout["reason"].contains("deadline"), "{timeout:?}");
    assert_eq!(timeout["tenant"], "acme");

    // Nothing forbidden reached Redis: no forbidden command ever ran, every key is the
    // neighbour's or under acme:, and the `SET ok 1` in front of FLUSHALL was refused
    // with it.
    assert_nothing_forbidden_ran(&env);
    assert!(
        !env.keys().iter().any(|k| k == b"acme:ok"),
        "partial output written"
    );
    for k in env.keys() {
        assert!(
            k.starts_with(b"acme:") || k.starts_with(b"good:"),
            "stray key {:?}",
            String::from_utf8_lossy(&k)
        );
    }
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_other_tenants_are_out_of_reach() {
    let env = Env::new();
    neighbour(&env);
    let long = vec![b'k'; 3000];
    let long_set: [&[u8]; 3] = [b"SET", &long, b"long"];
    let tricks: Vec<&[&[u8]]> = vec![
        &[b"DEL", b"good:events", b"{good}:events"],
        &[b"SET", b"good:events", b"pwned"],
        &[b"SET", b"", b"empty"],
        &[b"SET", b"\x00\xff\xfe", b"binary"],
        &[b"SET", b"x\r\n*1\r\n$8\r\nFLUSHALL\r\n", b"crlf"],
        &[b"SET", b"{acme}", b"hashtag"],
        &long_set,
        &[b"MSET", b"a", b"1", b"good:x", b"2"],
        &[b"PUBLISH", b"good:channel", b"hi"],
        &[b"rename", b"good:events", b"acme:stolen"],
    ];
    // All but the last in one rule (the last is refused, and would take the rest with it).
    write(
        &env.tenant("acme"),
        "tricks.wasm",
        &returns(&tricks[..tricks.len() - 1]),
    );
    let rt = env.runtime(QUICK_QUARANTINE).await;
    wait_loaded(&rt, "acme/tricks").await;
    let publisher = Publisher::connect(&env.mqtt).await;
    warm_up(&env, &publisher).await;
    neighbour_served(&env, &publisher, 50, "acme/tricks").await;
    eventually(SECS5, "tricks written under acme:", || {
        let v: Option<String> = redis::cmd("GET")
            .arg("acme:good:events")
            .query(&mut env.redis.conn())
            .ok()?;
        v.filter(|v| v == "pwned")
    })
    .await;
    let keys = env.keys();
    for k in &keys {
        assert!(
            k.starts_with(b"acme:") || k.starts_with(b"good:"),
            "stray key {:?}",
            String::from_utf8_lossy(k)
        );
    }
    for want in [
        &b"acme:"[..],
        b"acme:\x00\xff\xfe",
        b"acme:{acme}",
        b"acme:x\r\n*1\r\n$8\r\nFLUSHALL\r\n",
    ] {
        assert!(
            keys.iter().any(|k| k == want),
            "missing {:?}",
            String::from_utf8_lossy(want)
        );
    }
    // The neighbour's list is intact: the warm-up message(s) and the 50.
    let good_len = env.redis.lrange("good:events").len();
    assert!(good_len >= 51, "neighbour list damaged: {good_len}");

    // A rule that asks for RENAME is refused whole.
    write(
        &env.tenant("acme"),
        "rename.wasm",
        &returns(&tricks[tricks.len() - 1..]),
    );
    wait_loaded(&rt, "acme/rename").await;
    let before = rt.metrics.failures("acme", "command_not_allowed");
    neighbour_served(&env, &publisher, 10, "acme/rename").await;
    eventually(SECS5, "RENAME refused", || {
        (rt.metrics.failures("acme", "command_not_allowed") > before).then_some(())
    })
    .await;
    assert!(!env.keys().iter().any(|k| k == b"acme:stolen"));
    assert_nothing_forbidden_ran(&env);
    rt.stop().await;
}

const SECS5: Duration = Duration::from_secs(5);

/// The acceptance case without quarantine: a tenant whose rule runs `loop {}` on every
/// one of its messages, published interleaved one for one with the neighbour's. Its
/// invocations end at the deadline (`timeout`); once it has used its CPU share of a
/// worker, its events are shed (`cpu_budget`, in its dead-letter stream with the reason)
/// instead of run; and every neighbour message is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_tenant_is_held_to_its_cpu_share() {
    let env = Env::new();
    neighbour(&env);
    write(
        &env.tenant("acme"),
        "loop.wasm",
        &wat_rule(&["acme/#"], "(loop $l (br $l)) (i64.const 0)", ""),
    );
    let rt = env.runtime(QUICK_QUARANTINE).await;
    wait_loaded(&rt, "acme/loop").await;
    let publisher = Publisher::connect(&env.mqtt).await;
    warm_up(&env, &publisher).await;
    neighbour_served(&env, &publisher, 300, "acme/loop").await;
    eventually(SECS5, "acme's events shed", || {
        (rt.metrics.failures("acme", "cpu_budget") > 0).then_some(())
    })
    .await;
    assert!(
        rt.metrics.failures("acme", "timeout") > 0,
        "the rule never ran"
    );
    assert_eq!(
        Metrics::get(&rt.metrics.quarantined_skips),
        0,
        "quarantine is off in this test: the CPU share alone must hold the tenant"
    );
    let dl = env.dead_letters("acme:wasmrule:deadletter");
    let shed = dl
        .iter()
        .find(|e| e["kind"] == "cpu_budget")
        .expect("a shed event in the dead-letter stream");
    assert!(
        shed["reason"].contains("over its 10% share") && shed["reason"].contains("shed"),
        "{shed:?}"
    );
    assert_eq!(shed["rule"], "acme/loop");
    assert!(dl.iter().any(|e| e["kind"] == "timeout"));
    rt.stop().await;
}

/// Threads that spin until dropped: other work competing for the cores.
struct CpuBurners {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuBurners {
    fn start(n: usize) -> CpuBurners {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        CpuBurners { stop, threads }
    }
}

impl Drop for CpuBurners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A tenant (with the default 10% CPU share) whose rule does real work (a countdown of
/// 200,000 steps, tens of microseconds, then `INCR count`) on every message of a burst
/// published as fast as the publisher goes, with two threads burning CPU beside it for
/// the whole run: the workers are busy far past the tenant's share and often
/// descheduled, yet no event may time out or be shed, and every message is counted.
/// (Before the deadline and the share charged CPU time under contention only, both did.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_well_behaved_tenant_is_never_shed_or_timed_out_beside_cpu_burners() {
    const N: usize = 5_000;
    let env = Env::new();
    let (seg, len) = result_segment(4096, &[&[b"INCR", b"count"]]);
    let body = format!(
        "(local $i i64) (local.set $i (i64.const 200000))
         (loop $l (local.set $i (i64.sub (local.get $i) (i64.const 1)))
                  (br_if $l (i64.gt_s (local.get $i) (i64.const 0))))
         (i64.or (i64.shl (i64.const 4096) (i64.const 32)) (i64.const {len}))"
    );
    write(
        &env.tenant("good"),
        "busy.wasm",
        &wat_rule(&["good/busy/#"], &body, &seg),
    );
    let rt = env.runtime("").await;
    wait_loaded(&rt, "good/busy").await;
    let publisher = Publisher::connect(&env.mqtt).await;
    let count = || -> usize {
        redis::cmd("GET")
            .arg("good:count")
            .query::<Option<usize>>(&mut env.redis.conn())
            .unwrap()
            .unwrap_or(0)
    };
    // Until the rule's subscription is in place, messages would go nowhere.
    eventually(Duration::from_secs(10), "subscribed", || {
        let _ = futures_now(publisher.publish_qos("good/busy/warm", "w", 0));
        (count() > 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let warm = count();
    let burners = CpuBurners::start(2);
    // QoS 0: a burst of thousands of QoS 1 publishes stalls the test's MQTT client
    // (rumqttc packet-id reuse), which is not what this test is about; mosquitto queues
    // without limit here, so nothing is lost on the way.
    for i in 0..N {
        publisher
            .publish_qos(&format!("good/busy/{}", i % 50), i.to_string(), 0)
            .await;
    }
    eventually(Duration::from_secs(120), "every message counted", || {
        (count() >= warm + N).then_some(())
    })
    .await;
    drop(burners);
    assert_eq!(count(), warm + N, "messages counted twice");
    assert_eq!(rt.metrics.failures("good", "timeout"), 0, "timeouts");
    assert_eq!(rt.metrics.failures("good", "cpu_budget"), 0, "sheds");
    assert_eq!(Metrics::get(&rt.metrics.events_shed), 0);
    assert_eq!(Metrics::get(&rt.metrics.dead_letters), 0);
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_modules_are_refused_at_load() {
    let env = Env::new();
    neighbour(&env);
    let rt = env.runtime("").await;
    let publisher = Publisher::connect(&env.mqtt).await;
    warm_up(&env, &publisher).await;
    let manifest = r#"{"name":"x","filters":["acme/#"]}"#;
    // Each module, and what its load error must say (as in the log).
    let bad: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "start-trap",
            wat_rule(&["acme/#"], "(i64.const 0)", "(func $s unreachable) (start $s)"),
            &["failed while reading its manifest", "unreachable"],
        ),
        (
            "wrong-signature",
            wat::parse_str(format!(
                r#"(module (memory (export "memory") 1) (func (export "wasmrule_abi_version_1"))
                   (data (i32.const 0) "{}")
                   (func (export "wasmrule_manifest") (result i64) (i64.const {}))
                   (func (export "wasmrule_alloc") (param i64) (result i32) (i32.const 0))
                   (func (export "wasmrule_on_event") (param i32 i32) (result i64) (i64.const 0)))"#,
                esc(manifest.as_bytes()),
                manifest.len()
            ))
            .unwrap(),
            &["export `wasmrule_alloc` must be a function (i32) -> (i32)"],
        ),
        (
            "huge-memory",
            wat::parse_str(format!(
                r#"(module (memory (export "memory") 60000) (func (export "wasmrule_abi_version_1"))
                   (data (i32.const 0) "{}")
                   (func (export "wasmrule_manifest") (result i64) (i64.const {}))
                   (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 0))
                   (func (export "wasmrule_on_event") (param i32 i32) (result i64) (i64.const 0)))"#,
                esc(manifest.as_bytes()),
                manifest.len()
            ))
            .unwrap(),
            &[
                "declares a linear memory of 3932160000 bytes (60000 pages) at start",
                "limit of 33554432 bytes (32 MiB, limits.max_memory_mb)",
            ],
        ),
        (
            "huge-table",
            wat_rule(&["acme/#"], "(i64.const 0)", "(table 10000000 funcref)"),
            &["declares a table of 10000000 elements at start, above the limit of 10000 elements"],
        ),
        (
            "topic-acl",
            wat_rule(&["#"], "(i64.const 0)", ""),
            &["filter \"#\" is outside what tenant acme may subscribe to (acme/#)"],
        ),
        (
            "wasi",
            wat::parse_str(
                r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                   (memory (export "memory") 1) (func (export "wasmrule_abi_version_1")))"#,
            )
            .unwrap(),
            &["imports `wasi_snapshot_preview1::fd_write`, but rules may import nothing"],
        ),
    ];
    for (i, (name, wasm, reasons)) in bad.iter().enumerate() {
        write(&env.tenant("acme"), &format!("{name}.wasm"), wasm);
        let id = format!("acme/{name}");
        let error = eventually(SECS5, &format!("{name} refused"), || {
            rt.rules.load_error(&id)
        })
        .await;
        for reason in *reasons {
            assert!(
                error.contains(reason),
                "{name}: load error {error:?} does not say {reason:?}"
            );
        }
        assert_eq!(Metrics::get(&rt.metrics.load_errors), i as u64 + 1);
        assert!(
            rt.rules.snapshot().get(&format!("acme/{name}")).is_none(),
            "{name} loaded"
        );
        neighbour_served(&env, &publisher, 5, "acme/x").await;
    }
    rt.stop().await;
}

/// A valid module that takes a long time to compile: compilation happens off the event
/// path, so the neighbour keeps being served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_to_compile_module_does_not_stall_serving() {
    let env = Env::new();
    neighbour(&env);
    let rt = env.runtime("").await;
    let publisher = Publisher::connect(&env.mqtt).await;
    warm_up(&env, &publisher).await;
    // 150 functions of 3000 instructions each: seconds of compilation.
    let mut funcs = String::new();
    for f in 0..150 {
        funcs.push_str(&format!("(func $f{f} (param i32) (result i32) local.get 0"));
        for i in 0..1500 {
            funcs.push_str(&format!(" i32.const {i} i32.add"));
        }
        funcs.push_str(")\n");
    }
    write(
        &env.tenant("acme"),
        "slow.wasm",
        &wat_rule(&["acme/slow"], "(i64.const 0)", &funcs),
    );
    let started = std::time::Instant::now();
    // While it compiles, the neighbour is served message by message.
    let mut served_during = 0;
    while rt.rules.snapshot().get("acme/slow").is_none() {
        neighbour_served(&env, &publisher, 1, "acme/none").await;
        served_during += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "slow module never loaded"
        );
    }
    eprintln!(
        "slow module loaded after {:?}; {served_during} neighbour messages served meanwhile",
        started.elapsed()
    );
    assert!(served_during >= 1);
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_rule_is_quarantined_and_restored_by_a_fixed_version() {
    let env = Env::new();
    neighbour(&env);
    write(
        &env.tenant("acme"),
        "flaky.wasm",
        &wat_rule(&["acme/flaky"], "unreachable", ""),
    );
    let rt = env
        .runtime("[tenants.acme]\nquarantine_failures = 3\nquarantine_window_secs = 60\nquarantine_backoff_secs = 600\n")
        .await;
    let publisher = Publisher::connect(&env.mqtt).await;
    warm_up(&env, &publisher).await;
    neighbour_served(&env, &publisher, 10, "acme/flaky").await;
    eventually(SECS5, "quarantined", || {
        (Metrics::get(&rt.metrics.quarantined_skips) > 0).then_some(())
    })
    .await;
    assert_eq!(
        rt.metrics.failures("acme", "trap"),
        3,
        "invoked after quarantine"
    );

    // A fixed version replaces it and serves at once.
    write(
        &env.tenant("acme"),
        "flaky.wasm",
        &returns(&[&[b"INCR", b"fixed"]]),
    );
    eventually(SECS5, "fixed version loaded", || {
        (rt.rules.snapshot().get("acme/flaky")?.generation == 2).then_some(())
    })
    .await;
    neighbour_served(&env, &publisher, 5, "acme/flaky").await;
    eventually(SECS5, "fixed version writes", || {
        let v: Option<u64> = redis::cmd("GET")
            .arg("acme:fixed")
            .query(&mut env.redis.conn())
            .ok()?;
        v.filter(|n| *n >= 1)
    })
    .await;
    rt.stop().await;
}

/// Defence in depth: the Redis user wasmrule connects as has an ACL matching the
/// tenant's policy (docs/security.md). wasmrule works under it, and the same user
/// cannot do what the policy forbids even if wasmrule's own checks were bypassed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_acl_matching_the_policy() {
    let env = Env::new();
    let acl = "ACL SETUSER wasmrule on >s3cret resetkeys ~acme:* resetchannels &acme:* \
               -@all +ping +hset +hincrby +xadd +publish";
    let words: Vec<&str> = acl.split_whitespace().collect();
    redis::cmd(words[0])
        .arg(&words[1..])
        .exec(&mut env.redis.conn())
        .unwrap();
    write(
        &env.tenant("acme"),
        "count.wasm",
        &returns(&[&[b"HINCRBY", b"counts", b"n", b"1"]]),
    );
    let mut cfg = config(&env.redis, &env.mqtt, env.dir.path());
    cfg.redis.url = format!("redis://wasmrule:s3cret@127.0.0.1:{}", env.redis.port);
    let rt = Runtime::start(cfg).await.unwrap();
    let publisher = Publisher::connect(&env.mqtt).await;
    eventually(SECS5, "rule writes as the restricted user", || {
        let _ = futures_now(publisher.publish("acme/x", "x"));
        let v: Option<u64> = redis::cmd("HGET")
            .arg("acme:counts")
            .arg("n")
            .query(&mut env.redis.conn())
            .ok()?;
        v
    })
    .await;
    let mut restricted = redis::Client::open(format!(
        "redis://wasmrule:s3cret@127.0.0.1:{}",
        env.redis.port
    ))
    .unwrap()
    .get_connection()
    .unwrap();
    for (cmd, args) in [
        ("FLUSHALL", vec![]),
        ("HSET", vec!["good:x", "f", "v"]),
        ("CONFIG", vec!["GET", "*"]),
        ("KEYS", vec!["*"]),
    ] {
        let err = redis::cmd(cmd).arg(args).exec(&mut restricted).unwrap_err();
        assert!(
            err.to_string().to_uppercase().contains("NOPERM"),
            "{cmd}: {err}"
        );
    }
    rt.stop().await;
}

/// A wrong Redis password: wasmrule keeps retrying, and its log names the user and the
/// server, and Redis' refusal, but never the password (given in the URL and on the
/// command line).
#[test]
fn a_wrong_redis_password_is_never_logged() {
    let env = Env::new();
    redis::cmd("ACL")
        .arg(&["SETUSER", "wasmrule", "on", ">right-pw", "~*", "+@all"][..])
        .exec(&mut env.redis.conn())
        .unwrap();
    let log = env.dir.path().join("wasmrule.log");
    let url = format!("redis://wasmrule:wrong-pw-x7@127.0.0.1:{}", env.redis.port);
    let args: Vec<String> = [
        "--mqtt-url",
        &env.mqtt.url(),
        "--redis-url",
        &url,
        "--rules-dir",
        &env.dir.path().display().to_string(),
        "--http-addr",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut wasmrule = WasmruleProcess::start(&args, &log);
    let mut waited = 0;
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("cannot connect to Redis")) {
            break l.to_owned();
        }
        waited += 1;
        assert!(waited < 500, "no connection error logged in 10 s: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    wasmrule.kill();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        line.contains(&format!(
            "redis://wasmrule:***@127.0.0.1:{}",
            env.redis.port
        )),
        "{line}"
    );
    assert!(line.contains("authentication failed"), "{line}");
    assert!(!text.contains("wrong-pw-x7"), "password in the log: {text}");
}

/// `wasmrule eval` and `wasmrule test` run a rule as `wasmrule run` serves it: what the
/// command policy refuses is refused offline too, with its reason; with `--tenant` and
/// `--config` the tenant's allow-list, key prefix and topics apply.
#[test]
fn offline_tools_apply_the_serving_policy() {
    let dir = tempfile::tempdir().unwrap();
    let long_key = vec![b'k'; 5000];
    let refused: Vec<(&str, Vec<&[u8]>, &str)> = vec![
        (
            "flushall",
            vec![b"FLUSHALL"],
            "`FLUSHALL` is not allowed for tenant default",
        ),
        ("keys", vec![b"KEYS", b"*"], "`KEYS` is not allowed"),
        (
            "config",
            vec![b"CONFIG", b"SET", b"x", b"y"],
            "`CONFIG` is not allowed",
        ),
        ("hset-arity", vec![b"HSET", b"h", b"f"], "(command_arity)"),
        (
            "xadd",
            vec![b"XADD", b"s", b"*", b"f", b"v"],
            "(unbounded_stream)",
        ),
        (
            "long-key",
            vec![b"SET", &long_key, b"v"],
            "key of 5000 bytes",
        ),
    ];
    let event = dir.path().join("event.json");
    std::fs::write(&event, r#"{"topic":"acme/x","payload":"1"}"#).unwrap();
    for (name, cmd, reason) in &refused {
        let wasm = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&wasm, returns(&[cmd])).unwrap();
        let out = std::process::Command::new(wasmrule_bin())
            .arg("eval")
            .arg(&wasm)
            .arg("--event")
            .arg(&event)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: eval exited 0");
        assert!(out.stdout.is_empty(), "{name}: printed commands");
        assert!(
            stderr.contains("refused by the command policy of tenant default")
                && stderr.contains(reason),
            "{name}: {stderr}"
        );
        // A case expecting the refusal passes; one expecting commands fails with it.
        let cases = dir.path().join(format!("{name}.json"));
        std::fs::write(
            &cases,
            format!(
                r#"{{"cases":[{{"name":"refused","event":{{"topic":"acme/x"}},"error":{reason:?}}},
                   {{"name":"written","event":{{"topic":"acme/x"}},"commands":[]}}]}}"#
            ),
        )
        .unwrap();
        let out = std::process::Command::new(wasmrule_bin())
            .arg("test")
            .arg(&wasm)
            .arg(&cases)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{name}: {stdout}");
        assert!(stdout.contains("ok    refused"), "{name}: {stdout}");
        assert!(
            stdout.contains("FAIL  written") && stdout.contains("refused by the command policy"),
            "{name}: {stdout}"
        );
    }

    // A tenant from a config file: its prefix on keys, its allow-list, its topics.
    let config = dir.path().join("wasmrule.toml");
    std::fs::write(
        &config,
        "[tenants.acme]\nkey_prefix = \"t1:\"\ncommands = [\"SET\"]\n",
    )
    .unwrap();
    let set = dir.path().join("set.wasm");
    std::fs::write(&set, returns(&[&[b"SET", b"k", b"v"]])).unwrap();
    let hset = dir.path().join("hset.wasm");
    std::fs::write(&hset, returns(&[&[b"HSET", b"h", b"f", b"v"]])).unwrap();
    let eval = |wasm: &Path, tenant: &str| {
        std::process::Command::new(wasmrule_bin())
            .arg("eval")
            .arg(wasm)
            .arg("--event")
            .arg(&event)
            .args(["--tenant", tenant, "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = eval(&set, "acme");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SET t1:k v\n");
    let out = eval(&hset, "acme");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`HSET` is not allowed for tenant acme"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Tenant `other` may subscribe to other/# only: the rule's acme/# would not load.
    let out = eval(&set, "other");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("would refuse to load")
            && stderr.contains("outside what tenant other may subscribe to"),
        "{stderr}"
    );
}

/// The author's version (the manifest's `version`) and the load counter are both shown,
/// under their own names: in dead-letter entries and on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_and_metrics_name_the_version_and_the_generation() {
    let env = Env::new();
    let mut cfg = config(&env.redis, &env.mqtt, env.dir.path());
    cfg.runtime.http_addr = Some("127.0.0.1:0".parse().unwrap());
    let rt = Runtime::start(cfg).await.unwrap();
    let port = rt.http_addr.expect("endpoint bound").port();
    let failing = |version: &str| {
        let manifest = format!(r#"{{"name":"v","version":"{version}","filters":["acme/#"]}}"#);
        wat_rule_with_manifest(&manifest, "unreachable", "")
    };
    write(&env.tenant("acme"), "v.wasm", &failing("7.7.7"));
    wait_loaded(&rt, "acme/v").await;
    write(&env.tenant("acme"), "v.wasm", &failing("7.7.8"));
    eventually(SECS5, "replacement loaded", || {
        (rt.rules.snapshot().get("acme/v")?.generation == 2).then_some(())
    })
    .await;
    let publisher = Publisher::connect(&env.mqtt).await;
    let dl = eventually(SECS5, "a dead letter", || {
        let _ = futures_now(publisher.publish("acme/x", "1"));
        let dl = env.dead_letters("acme:wasmrule:deadletter");
        (!dl.is_empty()).then_some(dl)
    })
    .await;
    assert_eq!(dl[0]["version"], "7.7.8", "{dl:?}");
    assert_eq!(dl[0]["generation"], "2", "{dl:?}");
    assert_eq!(dl[0]["kind"], "trap", "{dl:?}");
    let metrics = http_get(port, "/metrics").expect("/metrics answers");
    assert!(
        metrics.contains(
            r#"wasmrule_rule_info{tenant="acme",rule="acme/v",version="7.7.8",generation="2"} 1"#
        ),
        "{metrics}"
    );
    rt.stop().await;
}
