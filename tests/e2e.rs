//! End to end: a real mosquitto, a real redis-server, the runtime in-process (or the
//! `wasmrule` binary), and the rules built by `rules-wasm/build.sh`.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use support::*;
use wasmrule::Metrics;
use wasmrule::Runtime;

const SECS2: Duration = Duration::from_secs(2);

/// Taken shared by every test's [`Env`] and alone by
/// `every_language_leaves_the_same_redis_state_as_rust`, which compiles two Python
/// components (about 13 s each). wasmtime compiles on one thread pool per process, so a
/// rule another test loads meanwhile would wait behind them and miss its 2 s deadline.
static COMPILE_POOL: RwLock<()> = RwLock::new(());

struct Env {
    redis: Redis,
    mqtt: Mosquitto,
    dir: tempfile::TempDir,
    // Last, so that they are released after the servers stop.
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _alone: Option<RwLockWriteGuard<'static, ()>>,
}

impl Env {
    fn new() -> Env {
        let shared = COMPILE_POOL.read().unwrap_or_else(PoisonError::into_inner);
        Self::with(Some(shared), None)
    }

    /// An `Env` for a test that no other test here runs beside.
    fn alone() -> Env {
        let alone = COMPILE_POOL.write().unwrap_or_else(PoisonError::into_inner);
        Self::with(None, Some(alone))
    }

    fn with(
        shared: Option<RwLockReadGuard<'static, ()>>,
        alone: Option<RwLockWriteGuard<'static, ()>>,
    ) -> Env {
        Env {
            redis: Redis::start(),
            mqtt: Mosquitto::start(),
            dir: tempfile::tempdir().unwrap(),
            _shared: shared,
            _alone: alone,
        }
    }

    fn rules(&self) -> &Path {
        self.dir.path()
    }

    async fn runtime(&self) -> Runtime {
        Runtime::start(config(&self.redis, &self.mqtt, self.rules()))
            .await
            .expect("runtime starts")
    }
}

/// [`support::publish_until`] within 2 s.
async fn publish_until<T>(
    publisher: &Publisher,
    topic: &str,
    payload: &str,
    what: &str,
    check: impl FnMut() -> Option<T>,
) -> T {
    support::publish_until(publisher, topic, payload, SECS2, what, check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_rule_serves_replaced_rule_switches_garbage_is_ignored() {
    let env = Env::new();
    let rt = env.runtime().await;
    let publisher = Publisher::connect(&env.mqtt).await;

    install(&dist("store-last-message"), env.rules(), "rule.wasm");
    publish_until(
        &publisher,
        "store-last-message/dev-1",
        r#"{"message":"m","clientId":"dev-1","duration":"12s","temp":21.5,"hum":40}"#,
        "HSET emqx_messages dev-1 21.5",
        || {
            env.redis
                .hget("emqx_messages", "dev-1")
                .filter(|v| v == "21.5")
        },
    )
    .await;

    // Same file name, other rule: behaviour switches without a restart.
    install(&dist("topic-counter"), env.rules(), "rule.wasm");
    eventually(SECS2, "new version loaded", || {
        (rt.rules.snapshot().get("rule")?.generation == 2).then_some(())
    })
    .await;
    publish_until(
        &publisher,
        "store-last-message/dev-1",
        r#"{"temp":30}"#,
        "topic-counter counts the topic",
        || {
            env.redis
                .hget("mqtt_topic_count", "store-last-message/dev-1")
        },
    )
    .await;
    assert_eq!(
        env.redis.hget("emqx_messages", "dev-1").as_deref(),
        Some("21.5"),
        "the old version handled a message after the switch"
    );

    // Garbage in another file: logged, counted, and the loaded rule keeps working.
    std::fs::write(env.rules().join("bad.wasm"), "this is not wasm").unwrap();
    eventually(SECS2, "bad.wasm counted as a load error", || {
        (Metrics::get(&rt.metrics.load_errors) >= 1).then_some(())
    })
    .await;
    publish_until(&publisher, "other/topic", "x", "rule still serving", || {
        env.redis.hget("mqtt_topic_count", "other/topic")
    })
    .await;
    assert_eq!(rt.rules.snapshot().len(), 1);

    // Deleting the file unloads the rule.
    std::fs::remove_file(env.rules().join("rule.wasm")).unwrap();
    eventually(SECS2, "rule unloaded", || {
        rt.rules.snapshot().is_empty().then_some(())
    })
    .await;
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_replacement_leaves_the_old_version_serving() {
    let env = Env::new();
    install(&dist("store-last-message"), env.rules(), "slm.wasm");
    let rt = env.runtime().await;
    let publisher = Publisher::connect(&env.mqtt).await;
    publish_until(
        &publisher,
        "store-last-message/a",
        r#"{"temp":1}"#,
        "v1 serving",
        || env.redis.hget("emqx_messages", "a"),
    )
    .await;

    // A half-written copy of a valid module, then a module for another ABI version,
    // then text: each is refused and version 1 keeps serving.
    let good = std::fs::read(dist("topic-counter")).unwrap();
    // Version 3: this runtime loads versions 1 and 2.
    let mut v3 = echo_rule("RPUSH", "#", "x");
    let at = v3
        .windows(22)
        .position(|w| w == b"wasmrule_abi_version_1")
        .expect("marker export in the module");
    v3[at + 21] = b'3';
    let bad: Vec<Vec<u8>> = vec![good[..good.len() / 3].to_vec(), v3, b"(module)".to_vec()];
    for (i, bytes) in bad.iter().enumerate() {
        std::fs::write(env.rules().join("slm.wasm"), bytes).unwrap();
        eventually(SECS2, "load error counted", || {
            (Metrics::get(&rt.metrics.load_errors) > i as u64).then_some(())
        })
        .await;
        let payload = format!(r#"{{"temp":{}}}"#, i + 10);
        let want = (i + 10).to_string();
        publish_until(
            &publisher,
            "store-last-message/a",
            &payload,
            "old version serving",
            || env.redis.hget("emqx_messages", "a").filter(|v| *v == want),
        )
        .await;
    }
    let set = rt.rules.snapshot();
    let r = set.get("slm").expect("rule still loaded");
    assert_eq!(
        (r.generation, r.rule.manifest().name.as_str()),
        (1, "store-last-message")
    );
    rt.stop().await;
}

/// Replaces a rule while messages flow and counts: every message handled exactly once,
/// by one version or the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_handles_every_message_exactly_once() {
    const N: usize = 3000;
    let env = Env::new();
    install(&dist("store-last-message"), env.rules(), "r.wasm");
    let rt = env.runtime().await;
    let publisher = Publisher::connect(&env.mqtt).await;
    // Wait until the subscription is live.
    publish_until(
        &publisher,
        "store-last-message/warmup",
        r#"{"temp":0}"#,
        "warm-up",
        || env.redis.hget("emqx_messages", "warmup"),
    )
    .await;

    for i in 0..N {
        publisher
            .publish(
                &format!("store-last-message/d{i}"),
                format!(r#"{{"temp":{i}}}"#),
            )
            .await;
        if i == N / 3 {
            // The new version subscribes to `#` while the old one's filter is still
            // subscribed: overlapping copies must not be handled twice.
            install(&dist("topic-counter"), env.rules(), "r.wasm");
        }
        if i == 2 * N / 3 {
            // Make sure the swap happens while messages still flow.
            eventually(SECS2, "new version loaded", || {
                (rt.rules.snapshot().get("r")?.generation == 2).then_some(())
            })
            .await;
        }
        // About 3 s of traffic in all.
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let handled = |r: &Redis| {
        let v1: HashMap<String, String> = r.hgetall("emqx_messages");
        let v2: HashMap<String, String> = r.hgetall("mqtt_topic_count");
        (v1, v2)
    };
    let (v1, v2) = eventually(Duration::from_secs(20), "all messages handled", || {
        let (v1, v2) = handled(&env.redis);
        let n = (0..N)
            .filter(|i| {
                v1.contains_key(&format!("d{i}"))
                    || v2.contains_key(&format!("store-last-message/d{i}"))
            })
            .count();
        (n == N).then_some((v1, v2))
    })
    .await;
    // Let anything late arrive before judging duplicates.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (v1b, v2b) = handled(&env.redis);
    assert_eq!(
        (v1.len(), v2.len()),
        (v1b.len(), v2b.len()),
        "late writes appeared"
    );

    let mut by_v1 = 0;
    let mut by_v2 = 0;
    for i in 0..N {
        let a = v1b.get(&format!("d{i}"));
        let b = v2b.get(&format!("store-last-message/d{i}"));
        match (a, b) {
            (Some(t), None) => {
                assert_eq!(*t, i.to_string());
                by_v1 += 1;
            }
            (None, Some(c)) => {
                assert_eq!(c, "1", "message {i} handled {c} times by the new version");
                by_v2 += 1;
            }
            other => panic!("message {i} handled by both versions or none: {other:?}"),
        }
    }
    assert!(
        by_v1 > 0 && by_v2 > 0,
        "both versions served ({by_v1}, {by_v2})"
    );
    eprintln!(
        "handled by v1: {by_v1}, by v2: {by_v2}, overlap duplicates dropped: {}",
        Metrics::get(&rt.metrics.duplicates_dropped)
    );
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_for_one_topic_are_applied_in_publish_order() {
    let env = Env::new();
    std::fs::write(
        env.rules().join("echo.wasm"),
        echo_rule("RPUSH", "order/+", "events"),
    )
    .unwrap();
    let rt = env.runtime().await;
    let publisher = Publisher::connect(&env.mqtt).await;
    publish_until(&publisher, "order/warmup", "w", "echo serving", || {
        (!env.redis.lrange("events").is_empty()).then_some(())
    })
    .await;
    redis::cmd("DEL")
        .arg("events")
        .exec(&mut env.redis.conn())
        .unwrap();

    const N: usize = 500;
    for i in 0..N {
        // Three interleaved topics.
        publisher
            .publish(&format!("order/t{}", i % 3), i.to_string())
            .await;
    }
    let events = eventually(Duration::from_secs(10), "all events pushed", || {
        let l = env.redis.lrange("events");
        (l.len() >= N).then_some(l)
    })
    .await;
    assert_eq!(events.len(), N);
    let mut last: HashMap<String, i64> = HashMap::new();
    for raw in &events {
        let e: serde_json::Value = serde_json::from_slice(raw).unwrap();
        let topic = e["topic"].as_str().unwrap().to_owned();
        let seq: i64 = e["payload"].as_str().unwrap().parse().unwrap();
        let prev = last.insert(topic.clone(), seq).unwrap_or(-1);
        assert!(seq > prev, "{topic}: {seq} written after {prev}");
        assert_eq!(e["event"], "message.publish");
        assert_eq!(e["qos"], 1);
    }
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_payloads_and_mqtt311_reach_rules() {
    let env = Env::new();
    std::fs::write(
        env.rules().join("echo.wasm"),
        echo_rule("RPUSH", "bin/#", "events"),
    )
    .unwrap();
    let mut cfg = config(&env.redis, &env.mqtt, env.rules());
    cfg.mqtt.protocol = wasmrule::MqttProtocol::V311;
    let rt = Runtime::start(cfg).await.unwrap();
    let publisher = Publisher::connect(&env.mqtt).await;
    let deadline = tokio::time::Instant::now() + SECS2;
    let events = loop {
        publisher.publish("bin/x", vec![0xff, 0x00, 0x80]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let l = env.redis.lrange("events");
        if !l.is_empty() {
            break l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "binary message handled within 2 s"
        );
    };
    let e: serde_json::Value = serde_json::from_slice(&events[0]).unwrap();
    assert_eq!(e["payload"], "/wCA");
    assert_eq!(e["payload_encoding"], "base64");
    assert_eq!(e["topic"], "bin/x");
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_errors_are_counted_and_do_not_stop_the_flow() {
    let env = Env::new();
    install(&dist("store-last-message"), env.rules(), "slm.wasm");
    // emqx_messages is a string: every HSET gets WRONGTYPE.
    redis::cmd("SET")
        .arg("emqx_messages")
        .arg("x")
        .exec(&mut env.redis.conn())
        .unwrap();
    let rt = env.runtime().await;
    let publisher = Publisher::connect(&env.mqtt).await;
    publish_until(
        &publisher,
        "store-last-message/a",
        r#"{"temp":1}"#,
        "WRONGTYPE counted",
        || (Metrics::get(&rt.metrics.command_errors) >= 1).then_some(()),
    )
    .await;
    redis::cmd("DEL")
        .arg("emqx_messages")
        .exec(&mut env.redis.conn())
        .unwrap();
    publish_until(
        &publisher,
        "store-last-message/a",
        r#"{"temp":2}"#,
        "flow continues",
        || env.redis.hget("emqx_messages", "a"),
    )
    .await;
    // A payload the rule rejects is counted as a failed invocation, not written.
    let before = Metrics::get(&rt.metrics.invocation_errors);
    publisher.publish("store-last-message/b", "not json").await;
    eventually(SECS2, "rule error counted", || {
        (Metrics::get(&rt.metrics.invocation_errors) > before).then_some(())
    })
    .await;
    assert_eq!(env.redis.hget("emqx_messages", "b"), None);
    rt.stop().await;
}

// ---- The binary, as a user runs it. ----

fn wasmrule() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmrule"))
}

#[test]
fn check_prints_the_manifest_and_rejects_text() {
    let out = wasmrule()
        .arg("check")
        .arg(dist("store-last-message"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("filters: store-last-message/+"), "{stdout}");
    assert!(stdout.contains("abi:     1"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "just some text\n").unwrap();
    let out = wasmrule().arg("check").arg(&text).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("notes.wasm") && stderr.contains("not a WebAssembly module"),
        "{stderr}"
    );
}

#[test]
fn eval_prints_commands_in_redis_cli_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("e.json");
    std::fs::write(
        &event,
        r#"{"topic":"store-last-message/dev-1","payload":"{\"message\":\"this is a stored message\",\"clientId\":\"emqx_c\",\"duration\":\"102s\",\"temp\":44.37,\"hum\":32.52}"}"#,
    )
    .unwrap();
    let out = wasmrule()
        .args(["eval"])
        .arg(dist("store-last-message"))
        .arg("--event")
        .arg(&event)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HSET emqx_messages dev-1 44.37\n"
    );

    // From stdin, with quoting.
    let mut child = wasmrule()
        .args(["eval"])
        .arg(dist("topic-counter"))
        .args(["--event", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"topic":"a b/\"c\""}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HINCRBY mqtt_topic_count \"a b/\\\"c\\\"\" 1\n"
    );
}

/// The C and JavaScript listings of the demo's rules in docs/emqx-migration.md are the
/// code of the files that `rules-wasm/build.sh` builds and the conformance suite checks,
/// and each of the four rules is shown in both.
#[test]
fn emqx_migration_listings_are_the_built_rules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(root.join("docs/emqx-migration.md")).unwrap();
    for (lang, dir, ext) in [("c", "c", "c"), ("js", "javascript", "js")] {
        let fence = format!("```{lang}\n");
        let mut shown = Vec::new();
        for block in doc.split(fence.as_str()).skip(1) {
            let code = &block[..block.find("```").unwrap()];
            let found = [
                "store-last-message",
                "authz-stats",
                "disconnect-reasons",
                "dropped-messages",
            ]
            .into_iter()
            .find(|rule| {
                let file = root.join(format!("rules-wasm/{dir}/{rule}.{ext}"));
                std::fs::read_to_string(&file).is_ok_and(|text| text.contains(code))
            });
            let rule =
                found.unwrap_or_else(|| panic!("a ```{lang} block is in no rule file:\n{code}"));
            shown.push(rule);
        }
        shown.sort_unstable();
        assert_eq!(
            shown,
            [
                "authz-stats",
                "disconnect-reasons",
                "dropped-messages",
                "store-last-message"
            ],
            "{lang}"
        );
        for rule in &shown {
            assert!(
                dist(&format!("{rule}-{lang}")).exists(),
                "{rule}-{lang}.wasm not built"
            );
        }
    }
}

/// `eval` of an event rule: the event file of docs/events.md "Offline events" reaches the
/// rule without a false note about topics; a message on no filter of the rule gets one.
#[test]
fn eval_of_an_event_rule_knows_events() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/events.md"))
            .unwrap();
    let section = doc
        .split("## Offline events")
        .nth(1)
        .expect("docs/events.md has an Offline events section");
    let marker = "```json\n{\"event\": \"client.disconnected\"";
    let start = section
        .find(marker)
        .expect("the section shows an event file for client.disconnected")
        + 8;
    let len = section[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let event = dir.path().join("e.json");
    std::fs::write(&event, &section[start..start + len]).unwrap();
    let eval = |event: &Path| {
        wasmrule()
            .arg("eval")
            .arg(dist("disconnect-reasons"))
            .arg("--event")
            .arg(event)
            .output()
            .unwrap()
    };
    let out = eval(&event);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("note:"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HINCRBY disconnected_reason keepalive_timeout 1\n"
    );
    // A message, not the event: a running wasmrule would not call the rule.
    std::fs::write(&event, r#"{"topic":"a/b","payload":"{}"}"#).unwrap();
    let stderr = String::from_utf8_lossy(&eval(&event).stderr).into_owned();
    assert!(
        stderr.contains("note: topic \"a/b\" matches none of the rule's filters"),
        "{stderr}"
    );
}

/// The WAT rule in docs/abi.md, assembled with wabt's `wat2wasm`, passes `check` and
/// runs.
#[test]
fn docs_wat_example_assembles_and_checks() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/abi.md"))
        .unwrap();
    let start = doc
        .find("```wat\n")
        .expect("docs/abi.md has a ```wat block")
        + 7;
    let len = doc[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("rule.wat");
    let wasm = dir.path().join("rule.wasm");
    std::fs::write(&wat, &doc[start..start + len]).unwrap();
    let status = Command::new("wat2wasm")
        .arg(&wat)
        .arg("-o")
        .arg(&wasm)
        .status()
        .expect(
            "wat2wasm (wabt) must be installed: ./test.sh installs it (tests/install-tools.sh)",
        );
    assert!(status.success(), "wat2wasm failed on the docs example");
    check_and_eval_docs_example(&wasm, dir.path());
}

/// `eval` of a v2 rule as a tenant: the fixture holds Redis as it is (keys with the
/// tenant's prefix), the read goes through the tenant's read policy, and a publish
/// outside the tenant's topics refuses the whole output, as served.
#[test]
fn eval_of_a_v2_rule_reads_the_fixture_as_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (event, redis, config) = (
        dir.path().join("e.json"),
        dir.path().join("redis.json"),
        dir.path().join("wasmrule.toml"),
    );
    std::fs::write(&event, r#"{"topic":"readings/d1","payload":"25"}"#).unwrap();
    std::fs::write(&redis, r#"{"acme:last:d1": "20", "last:d1": "24"}"#).unwrap();
    let eval = |topics: &str| {
        std::fs::write(&config, format!("[tenants.acme]\ntopics = {topics}\n")).unwrap();
        wasmrule()
            .arg("eval")
            .arg(dist("threshold-alert-zig"))
            .args(["--tenant", "acme", "--show-reads", "--event"])
            .arg(&event)
            .arg("--redis")
            .arg(&redis)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let ok = eval(r#"["readings/#", "alerts/#"]"#);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr),
    );
    assert!(ok.status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"read: GET acme:last:d1 -> "20""#),
        "{stderr}"
    );
    assert_eq!(
        stdout,
        "SET acme:last:d1 25\n\
         MQTT PUBLISH alerts/d1 qos=1 retain=0 payload={\"device\":\"d1\",\"previous\":20,\"current\":25}\n"
    );
    // The same rule may not publish on alerts/: nothing of its output would be taken.
    let refused = eval(r#"["readings/#"]"#);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        refused.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    assert!(
        stderr.contains("refused by the action policy of tenant acme (action_topic)"),
        "{stderr}"
    );
}

/// The v2 WAT rule in docs/abi.md ("A complete v2 rule in WebAssembly text"),
/// assembled with `wat2wasm`, passes `check` as ABI v2, reads `motd` from a fixture and
/// publishes it; without the key it returns nothing.
#[test]
fn docs_v2_wat_example_reads_and_publishes() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/abi.md"))
        .unwrap();
    let v2 = &doc[doc
        .find("## A complete v2 rule in WebAssembly text")
        .expect("docs/abi.md has the v2 WAT example")..];
    let start = v2
        .find("```wat\n")
        .expect("the v2 section has a ```wat block")
        + 7;
    let len = v2[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (wat, wasm) = (dir.path().join("motd.wat"), dir.path().join("motd.wasm"));
    std::fs::write(&wat, &v2[start..start + len]).unwrap();
    let status = Command::new("wat2wasm")
        .arg(&wat)
        .arg("-o")
        .arg(&wasm)
        .status()
        .expect("wat2wasm (wabt) must be installed: ./test.sh installs it");
    assert!(status.success(), "wat2wasm failed on the v2 docs example");
    let out = wasmrule().arg("check").arg(&wasm).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("abi:     2"), "{stdout}");
    let event = dir.path().join("e.json");
    std::fs::write(&event, r#"{"topic":"hello/dev-1","payload":"hi"}"#).unwrap();
    let eval = |redis: &str| {
        let fixture = dir.path().join("redis.json");
        std::fs::write(&fixture, redis).unwrap();
        let out = wasmrule()
            .arg("eval")
            .arg(&wasm)
            .arg("--event")
            .arg(&event)
            .arg("--redis")
            .arg(&fixture)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        eval(r#"{"motd": "Doors close at 22:00"}"#),
        "MQTT PUBLISH motd qos=0 retain=0 payload=Doors close at 22:00\n"
    );
    assert_eq!(eval("{}"), "");
}

/// The docs' example rules (WAT and C) pass `check` and answer a reading on
/// `sensors/dev-1/temp` with `INCR messages_seen`.
fn check_and_eval_docs_example(wasm: &Path, dir: &Path) {
    let out = wasmrule().arg("check").arg(wasm).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let event = dir.join("e.json");
    std::fs::write(&event, r#"{"topic":"sensors/dev-1/temp","payload":"21.5"}"#).unwrap();
    let out = wasmrule()
        .arg("eval")
        .arg(wasm)
        .arg("--event")
        .arg(&event)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "INCR messages_seen\n");
}

/// The C rule without the SDK in docs/abi.md ("C without the SDK") builds with the clang
/// line in its comment (no C library: its own `memcpy` and `memset`), imports nothing,
/// passes `check` and runs.
#[test]
fn docs_c_example_builds_and_runs() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/abi.md"))
        .unwrap();
    let start = doc.find("```c\n").expect("docs/abi.md has a ```c block") + 5;
    let len = doc[start..].find("```").unwrap();
    let source = &doc[start..start + len];
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("count-messages.c");
    let wasm = dir.path().join("count-messages.wasm");
    std::fs::write(&c, source).unwrap();
    // The build line, as the comment gives it: the flags between `clang` and `-o`.
    let line = source
        .lines()
        .skip_while(|l| !l.contains("clang "))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let flags: Vec<&str> = line
        .split_whitespace()
        .skip_while(|w| *w != "clang")
        .skip(1)
        .take_while(|w| *w != "-o")
        // The comment's line continuation and the `*` that opens its next line.
        .filter(|w| *w != "\\" && *w != "*")
        .collect();
    assert!(flags.contains(&"-nostdlib"), "build line: {line}");
    let out = Command::new("clang")
        .args(&flags)
        .arg("-o")
        .arg(&wasm)
        .arg(&c)
        .output()
        .expect("clang must be installed: ./test.sh installs it (tests/install-tools.sh)");
    assert!(
        out.status.success(),
        "clang failed on the docs example: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_and_eval_docs_example(&wasm, dir.path());
}

/// The README's test command is the whole set-up: it is what CI runs, it starts by
/// installing what is missing, and that step does nothing (and says nothing) on a
/// machine that has everything, which this one has, since the tests are running; a
/// missing piece is named with its install command.
#[test]
fn the_readme_test_command_installs_what_is_missing_and_is_what_ci_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let tests = readme
        .split("\n## Tests\n")
        .nth(1)
        .expect("README has ## Tests");
    let start = tests.find("```sh\n").expect("a sh block") + 6;
    let command = tests[start..].lines().next().unwrap().trim();
    assert_eq!(command, "./test.sh");
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let last = ci.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert_eq!(
        last.trim(),
        command,
        ".ci/run must end with the README's command"
    );
    let test_sh = std::fs::read_to_string(root.join("test.sh")).unwrap();
    let steps: Vec<&str> = test_sh
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("set ") && !l.starts_with("cd "))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(steps.first(), Some(&"tests/install-tools.sh"), "{test_sh}");

    let check = |python: &str| {
        Command::new(root.join("tests/install-tools.sh"))
            .env("WASMRULE_INSTALL", "0")
            .env("PYTHON", python)
            .output()
            .unwrap()
    };
    let out = check("python3");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "install-tools.sh finds something missing on a machine that runs the tests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check("/nonexistent/python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("apt-get install")
            && stderr.contains("python3-pip")
            && stderr.contains("pip install ziglang==0.17.1 componentize-py==0.25.1"),
        "{stderr}"
    );
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoint_reports_connections() {
    let mut env = Env::new();
    install(&dist("topic-counter"), env.rules(), "tc.wasm");
    let mut cfg = config(&env.redis, &env.mqtt, env.rules());
    cfg.runtime.http_addr = Some("127.0.0.1:0".parse().unwrap());
    let rt = Runtime::start(cfg).await.unwrap();
    let addr = rt.http_addr.expect("endpoint bound");
    // Ready before anything is written: both connections are made at start.
    let body = eventually(SECS2, "ready", || {
        let (status, body) = http_get(addr, "/readyz");
        (status == "HTTP/1.1 200 OK").then_some(body)
    })
    .await;
    assert!(body.contains(r#""rules":1"#), "{body}");
    assert_eq!(http_get(addr, "/healthz").0, "HTTP/1.1 200 OK");
    let (_, metrics) = http_get(addr, "/metrics");
    assert!(
        metrics.contains("wasmrule_commands_written_total"),
        "{metrics}"
    );

    // Redis gone: not ready, still alive; noticed while idle too.
    env.redis.kill();
    eventually(SECS2, "readyz reports Redis down", || {
        let (status, body) = http_get(addr, "/readyz");
        (status == "HTTP/1.1 503 Service Unavailable" && body.contains(r#""redis":"disconnected""#))
            .then_some(())
    })
    .await;
    assert_eq!(http_get(addr, "/healthz").0, "HTTP/1.1 200 OK");
    env.redis.restart();
    eventually(Duration::from_secs(10), "ready again", || {
        (http_get(addr, "/readyz").0 == "HTTP/1.1 200 OK").then_some(())
    })
    .await;
    rt.stop().await;
}

/// Every metric the docs name (`wasmrule_..._total`, the gauges and the histograms, in
/// README.md and docs/*.md) is on `/metrics` of a running wasmrule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_docs_name_is_on_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push(path);
        }
    }
    // `wasmrule_` names that are not metrics: the ABI's exports, the Rust SDK crate and
    // the Python SDK module of ABI v2 (`wasmrule_v2.py`).
    let not_metrics = [
        "wasmrule_abi_version_",
        "wasmrule_alloc",
        "wasmrule_manifest",
        "wasmrule_on_event",
        "wasmrule_guest",
        "wasmrule_v2",
    ];
    let mut named = std::collections::BTreeSet::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (at, _) in text.match_indices("wasmrule_") {
            if text[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !not_metrics.iter().any(|n| name.starts_with(n)) {
                named.insert(name);
            }
        }
    }
    assert!(
        named.contains("wasmrule_quarantined_skips_total") && named.len() > 10,
        "the docs' metric names were not found: {named:?}"
    );
    // A rule that works and one that fails, each run once: the per-rule and
    // per-tenant series exist once a rule is loaded, a failure reason's once it happened.
    let env = Env::new();
    install(&dist("topic-counter"), env.rules(), "tc.wasm");
    std::fs::write(
        env.rules().join("trap.wasm"),
        trap_rule("trap", "1.0.0", "fail/#"),
    )
    .unwrap();
    // A canary that fails too: its series (docs/canary.md) exist once it is loaded, its
    // failure reason's once it failed.
    std::fs::write(
        env.rules().join("trap.canary.wasm"),
        trap_rule("trap", "1.0.1", "fail/#"),
    )
    .unwrap();
    let mut cfg = config(&env.redis, &env.mqtt, env.rules());
    cfg.runtime.http_addr = Some("127.0.0.1:0".parse().unwrap());
    let rt = Runtime::start(cfg).await.unwrap();
    let addr = rt.http_addr.expect("endpoint bound");
    let publisher = Publisher::connect(&env.mqtt).await;
    let metrics = eventually(Duration::from_secs(10), "a failure counted", || {
        let _ = futures_util::FutureExt::now_or_never(publisher.publish("fail/x", "1"));
        let (status, metrics) = http_get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        (metrics.contains("wasmrule_rule_failed_total{")
            && metrics.contains("wasmrule_canary_failures_total{"))
        .then_some(metrics)
    })
    .await;
    // A family's name (`# TYPE`: a histogram's, a counter's without `_total`) or a
    // series' (`wasmrule_..._total`, `..._bucket`).
    let exported: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(t) => t.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .collect();
    // Only the embedded broker drops messages (tests/observability.rs sees it in the
    // demo).
    let elsewhere = ["wasmrule_broker_dropped_total"];
    let missing: Vec<&String> = named
        .iter()
        .filter(|n| !exported.contains(n.as_str()) && !elsewhere.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not on /metrics: {missing:?}\n{metrics}"
    );
    rt.stop().await;
}

/// Every language's build of the seed rules, core modules and components, fed the same
/// messages, leaves the same Redis state as the Rust build. Each language runs as its own
/// tenant, so each writes under its own prefix (`c:emqx_messages`, ...) and the hashes
/// can be compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_leaves_the_same_redis_state_as_rust() {
    const LANGS: [(&str, &str); 8] = [
        ("rust", ""),
        ("c", "-c"),
        ("as", "-as"),
        ("zig", "-zig"),
        ("wat", "-wat"),
        ("py", "-py"),
        ("js", "-js"),
        ("component", "-component"),
    ];
    let env = Env::alone();
    let mut tenants = String::new();
    for (tenant, suffix) in LANGS {
        let dir = env.rules().join(tenant);
        std::fs::create_dir(&dir).unwrap();
        for rule in ["store-last-message", "topic-counter"] {
            install(
                &dist(&format!("{rule}{suffix}")),
                &dir,
                &format!("{rule}.wasm"),
            );
        }
        // Unmetered: under a tenant's CPU share (10% by default) a busy worker sheds
        // the over-share tenant's events to its dead letters, and the Python rules are
        // always the over-share ones; this test is about equal state, not fairness
        // (tests/hostile.rs is).
        tenants.push_str(&format!(
            "[tenants.{tenant}]\ntopics = [\"#\"]\ncpu_share_percent = 100\n"
        ));
    }
    // A Python component's event takes about 2 ms of CPU (a fresh instance of an 18 MB
    // component), but its first events after loading fault the component's pages in
    // on the worker's own CPU clock, and with the default 10 ms this test once missed a
    // Python message on a busy machine. Equal state across languages is what it is
    // about, so every tenant gets 1 s (the deadline is tested in tests/hostile.rs and
    // the engine).
    let parsed =
        wasmrule::Config::from_toml(&format!("[limits]\ntimeout_ms = 1000\n{tenants}")).unwrap();
    let mut cfg = config(&env.redis, &env.mqtt, env.rules());
    cfg.limits = parsed.limits;
    cfg.tenants = parsed.tenants;
    // Compiles every module afresh (the tests keep no cache): the two Python components
    // take about 15 s each on 2 cores, the others well under a second.
    let rt = Runtime::start(cfg).await.unwrap();
    assert_eq!(rt.rules.snapshot().len(), 2 * LANGS.len());
    let publisher = Publisher::connect(&env.mqtt).await;
    publish_until(
        &publisher,
        "store-last-message/warmup",
        r#"{"temp":0}"#,
        "all serving",
        || {
            LANGS
                .iter()
                .all(|(t, _)| {
                    env.redis
                        .hget(&format!("{t}:emqx_messages"), "warmup")
                        .is_some()
                })
                .then_some(())
        },
    )
    .await;
    let messages = [
        (
            "store-last-message/emqx_c",
            r#"{"message":"this is a stored message","clientId":"emqx_c","duration":"102s","temp":44.37,"hum":32.52}"#,
        ),
        ("store-last-message/dev-1", r#"{"temp":21.50}"#),
        (
            "store-last-message/dev-2",
            r#"{"temp":"warm \"and\" \u00e9"}"#,
        ),
        ("store-last-message/dev-3", r#"{"hum":1,"temp":-3e2}"#),
        ("store-last-message/dev-4", "not json"),
        ("store-last-message/dev-5", "[21.5]"),
        ("store-last-message/dev-6", r#"{"temp":null}"#),
        ("sensors/hall/temp", "22.1"),
        ("a b/\"c\"/\u{e9}", "x"),
        ("store-last-message/dev-1", r#"{"temp":22}"#),
    ];
    for (topic, payload) in messages {
        publisher.publish(topic, payload).await;
    }
    publisher
        .publish("store-last-message/done", r#"{"temp":1}"#)
        .await;
    eventually(
        Duration::from_secs(10),
        "every language handled the batch",
        || {
            LANGS
                .iter()
                .all(|(t, _)| {
                    env.redis
                        .hget(&format!("{t}:emqx_messages"), "done")
                        .is_some()
                })
                .then_some(())
        },
    )
    .await;
    // Messages on different topics run concurrently (order is kept per topic), so
    // `done` can be written while a slower rule (Python) is still on the rest of the
    // batch. `done` was published last, so it was received last: once every message
    // received is acknowledged, which happens after all its writes, the batch is in.
    eventually(Duration::from_secs(20), "the whole batch written", || {
        let m = &rt.metrics;
        let handled = Metrics::get(&m.messages_received) + Metrics::get(&m.duplicates_dropped);
        (Metrics::get(&m.messages_acked) == handled).then_some(())
    })
    .await;
    let rust_messages = env.redis.hgetall("rust:emqx_messages");
    let rust_counts = env.redis.hgetall("rust:mqtt_topic_count");
    assert_eq!(rust_messages.get("dev-1").map(String::as_str), Some("22"));
    assert_eq!(rust_messages.get("dev-3").map(String::as_str), Some("-3e2"));
    assert!(!rust_messages.contains_key("dev-4") && !rust_messages.contains_key("dev-5"));
    for (t, _) in &LANGS[1..] {
        assert_eq!(
            env.redis.hgetall(&format!("{t}:emqx_messages")),
            rust_messages,
            "{t}: emqx_messages"
        );
        assert_eq!(
            env.redis.hgetall(&format!("{t}:mqtt_topic_count")),
            rust_counts,
            "{t}: mqtt_topic_count"
        );
    }
    // The bad payloads were refused the same way by every language.
    for (t, _) in &LANGS {
        assert_eq!(rt.metrics.failures(t, "rule_error"), 3, "{t}: rule errors");
    }
    rt.stop().await;
}

/// `wasmrule new` gives a project that builds and passes its own cases, and a changed
/// expectation fails with a diff.
fn scaffold_round_trip(lang: &str) {
    scaffold_round_trip_abi(lang, "1");
}

fn scaffold_round_trip_abi(lang: &str, abi: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = wasmrule()
        .args(["new", "demo-rule", "--lang", lang, "--abi", abi])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let project = dir.path().join("demo-rule");
    let build = Command::new("./build.sh")
        .current_dir(&project)
        // Rust: reuse compiled dependencies across runs; one directory per ABI, since
        // both projects build demo_rule.wasm and their tests run at once.
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_MANIFEST_DIR")).join(match abi {
                "1" => "../target/scaffold".to_owned(),
                n => format!("../target/scaffold-v{n}"),
            }),
        )
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{lang}: ./build.sh failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let test = || {
        wasmrule()
            .args(["test", "demo-rule.wasm", "cases.json"])
            .current_dir(&project)
            .output()
            .unwrap()
    };
    let ok = test();
    assert!(
        ok.status.success(),
        "{lang}: {}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let cases = project.join("cases.json");
    let text = std::fs::read_to_string(&cases).unwrap();
    std::fs::write(
        &cases,
        text.replacen("demo-rule/dev-1 1", "demo-rule/dev-1 2", 1),
    )
    .unwrap();
    let bad = test();
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "{lang}: a wrong expectation passed");
    assert!(
        stdout.contains("- HINCRBY demo-rule demo-rule/dev-1 2")
            && stdout.contains("+ HINCRBY demo-rule demo-rule/dev-1 1"),
        "{lang}: no diff in\n{stdout}"
    );
}

#[test]
fn new_c_rule_builds_and_passes_its_cases() {
    scaffold_round_trip("c");
}

#[test]
fn new_assemblyscript_rule_builds_and_passes_its_cases() {
    scaffold_round_trip("assemblyscript");
}

#[test]
fn new_rust_rule_builds_and_passes_its_cases() {
    scaffold_round_trip("rust");
}

/// `wasmrule new --abi 2`: a Rust rule that reads Redis and publishes, whose cases give
/// the Redis state and expect the reads and actions.
#[test]
fn new_rust_v2_rule_builds_and_passes_its_cases() {
    scaffold_round_trip_abi("rust", "2");
}

#[test]
fn new_c_v2_rule_builds_and_passes_its_cases() {
    scaffold_round_trip_abi("c", "2");
}

#[test]
fn new_assemblyscript_v2_rule_builds_and_passes_its_cases() {
    scaffold_round_trip_abi("assemblyscript", "2");
}

/// A restart loads rules from the compiled-code cache (the entry's file mapped) and
/// they serve; a tampered entry is refused and the rule compiled again. For a core
/// module and for a component (loaded through another path of wasmtime's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loads_rules_from_the_cache() {
    restart_from_the_cache("store-last-message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_loads_components_from_the_cache() {
    restart_from_the_cache("store-last-message-component").await;
}

async fn restart_from_the_cache(rule: &str) {
    let env = Env::new();
    install(&dist(rule), env.rules(), "slm.wasm");
    let cache = tempfile::tempdir().unwrap();
    let start = || {
        let mut cfg = config(&env.redis, &env.mqtt, env.rules());
        cfg.rules.cache_dir = Some(cache.path().join("wasmrule"));
        Runtime::start(cfg)
    };
    let from_cache = |rt: &Runtime| rt.rules.snapshot().get("slm").unwrap().rule.from_cache();
    let publisher = Publisher::connect(&env.mqtt).await;
    let serves = |device: &'static str| {
        let (publisher, redis) = (&publisher, &env.redis);
        async move {
            publish_until(
                publisher,
                &format!("store-last-message/{device}"),
                r#"{"temp":5}"#,
                &format!("{device} stored"),
                || redis.hget("emqx_messages", device),
            )
            .await
        }
    };
    let rt = start().await.unwrap();
    assert!(!from_cache(&rt), "first load compiles");
    serves("first").await;
    rt.stop().await;
    let rt = start().await.unwrap();
    assert!(from_cache(&rt), "restart loads from the cache");
    serves("cached").await;
    rt.stop().await;
    for entry in std::fs::read_dir(cache.path().join("wasmrule")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "bin") {
            let mut data = std::fs::read(&p).unwrap();
            let n = data.len();
            data[n / 2] ^= 0xff;
            std::fs::write(&p, data).unwrap();
        }
    }
    let rt = start().await.unwrap();
    assert!(!from_cache(&rt), "a tampered entry must not be loaded");
    serves("recompiled").await;
    rt.stop().await;
}

/// Every language's `threshold-alert` (rule ABI v2; the Python, JavaScript and Rust
/// component builds of the world `wasmrule:rule@2.0.0`), served side by side, each as
/// its own tenant: the reads see the writes of the readings before them on the same
/// topic (`last:<device>`, namespaced per tenant), and each build publishes the same
/// alerts, which a real subscriber (`mosquitto_sub`) receives from the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_s_threshold_alert_reads_writes_and_alerts_alike() {
    const LANGS: [(&str, &str); 8] = [
        ("rust", ""),
        ("c", "-c"),
        ("as", "-as"),
        ("zig", "-zig"),
        ("wat", "-wat"),
        ("py", "-py"),
        ("js", "-js"),
        ("component", "-component"),
    ];
    // Alone: it compiles a Python component (see COMPILE_POOL).
    let env = Env::alone();
    let mut tenants = String::new();
    for (tenant, suffix) in LANGS {
        let dir = env.rules().join(tenant);
        std::fs::create_dir(&dir).unwrap();
        let module = dist(&format!("threshold-alert{suffix}"));
        install(&module, &dir, "threshold-alert.wasm");
        // Unmetered: under a tenant's CPU share (10% by default) a busy worker sheds
        // the over-share tenant's events to its dead letters, and the Python rules are
        // always the over-share ones; this test is about equal state, not fairness
        // (tests/hostile.rs is).
        tenants.push_str(&format!(
            "[tenants.{tenant}]\ntopics = [\"#\"]\ncpu_share_percent = 100\n"
        ));
    }
    let parsed =
        wasmrule::Config::from_toml(&format!("[limits]\ntimeout_ms = 1000\n{tenants}")).unwrap();
    let mut cfg = config(&env.redis, &env.mqtt, env.rules());
    cfg.limits = parsed.limits;
    cfg.tenants = parsed.tenants;

    // The subscriber, before anything can alert: one line per message, `topic payload`.
    let port = env.mqtt.url().rsplit(':').next().unwrap().to_owned();
    let mut sub = support::ChildGuard(
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "alerts/#",
                "-q",
                "1",
                "-v",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (mosquitto-clients) must be installed"),
    );
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, stdout) = (lines.clone(), sub.0.stdout.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(l);
            }
        })
    };

    let rt = Runtime::start(cfg).await.unwrap();
    assert_eq!(
        rt.rules.snapshot().len(),
        LANGS.len(),
        "rules loaded; failed: {:?}",
        rt.rules.load_errors()
    );
    let publisher = Publisher::connect(&env.mqtt).await;
    let last = |t: &str, device: &str| {
        redis::cmd("GET")
            .arg(format!("{t}:last:{device}"))
            .query::<Option<String>>(&mut env.redis.conn())
            .unwrap()
    };
    // Also makes sure the subscriber is subscribed: the warm-up alerts once it is.
    publish_until(&publisher, "readings/warm", "1", "all serving", || {
        LANGS
            .iter()
            .all(|(t, _)| last(t, "warm").is_some())
            .then_some(())
    })
    .await;
    // Alternating readings alert every time, until one alert of each language has come
    // through the subscriber.
    let mut subscribed = false;
    for i in 0..300 {
        let reading = if i % 2 == 0 { "100" } else { "1" };
        publisher.publish("readings/warm", reading).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if lines.lock().unwrap().len() >= LANGS.len() {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "no alert reached the subscriber");
    // Back to back on one topic: each read must see the write of the reading before.
    let d1 = [
        "20",
        "21",
        "25",
        "25",
        "20",
        "22.000001",
        "22.000001",
        "-5",
        "-5.4",
    ];
    let d2 = ["hot", "0", "0.5", "0.5"];
    for (device, readings) in [("d1", &d1[..]), ("d2", &d2[..])] {
        for r in readings {
            publisher.publish(&format!("readings/{device}"), *r).await;
        }
    }
    let alerts = [
        r#"alerts/d1 {"device":"d1","previous":21,"current":25}"#,
        r#"alerts/d1 {"device":"d1","previous":25,"current":20}"#,
        r#"alerts/d1 {"device":"d1","previous":20,"current":22.000001}"#,
        r#"alerts/d1 {"device":"d1","previous":22.000001,"current":-5}"#,
        r#"alerts/d2 {"device":"d2","previous":0,"current":0.5}"#,
    ];
    let ours = || -> Vec<String> {
        let got = lines.lock().unwrap();
        got.iter()
            .filter(|l| !l.starts_with("alerts/warm "))
            .cloned()
            .collect()
    };
    // A minute: CI's machine is several times slower than a developer's, and each event
    // of the Python and JavaScript rules runs in a fresh component instance. On a
    // timeout, the panic says what did come, each tenant's failed invocations and what
    // it stored, so a slow machine's failure can be read from CI's log.
    eventually_explained(
        Duration::from_secs(60),
        "every alert from every language",
        || (ours().len() >= alerts.len() * LANGS.len()).then_some(()),
        || {
            let failures: Vec<String> = LANGS
                .iter()
                .flat_map(|(t, _)| {
                    let metrics = &rt.metrics;
                    wasmrule::FAILURE_KINDS
                        .iter()
                        .map(move |k| (t, k, metrics.failures(t, k)))
                })
                .filter(|(_, _, n)| *n > 0)
                .map(|(t, k, n)| format!("{t}/{k}={n}"))
                .collect();
            let stored: Vec<String> = LANGS
                .iter()
                .map(|(t, _)| format!("{t}: d1={:?} d2={:?}", last(t, "d1"), last(t, "d2")))
                .collect();
            let got = ours();
            format!(
                "{} of {} came: {got:#?}\nfailures: {failures:?}\nstored: {stored:#?}",
                got.len(),
                alerts.len() * LANGS.len()
            )
        },
    )
    .await;
    // The last readings' writes, acknowledged after the alerts were published.
    eventually(Duration::from_secs(20), "the last readings stored", || {
        LANGS
            .iter()
            .all(|(t, _)| {
                last(t, "d1").as_deref() == Some("-5.4") && last(t, "d2").as_deref() == Some("0.5")
            })
            .then_some(())
    })
    .await;
    let got = lines.lock().unwrap().clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for l in got.iter().filter(|l| !l.starts_with("alerts/warm ")) {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let want: HashMap<&str, usize> = alerts.iter().map(|a| (*a, LANGS.len())).collect();
    assert_eq!(counts, want, "alerts received");
    // `hot` is no reading: each language refused it the same way.
    for (t, _) in &LANGS {
        assert_eq!(rt.metrics.failures(t, "rule_error"), 1, "{t}: rule errors");
    }
    rt.stop().await;
    drop(sub);
    let _ = reader.join();
}
