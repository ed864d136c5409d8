//! Canary rules against the real thing (mosquitto, redis-server, the runtime
//! in-process; docs/canary.md): a canary that differs on 10% of events shows a diff
//! rate of 10% in `/metrics`, the status JSON and the console while the live output is
//! unchanged, and keeps bounded samples in its diff stream; a canary that traps fails
//! alone; `wasmrule promote` under load loses nothing.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use wasmrule::{Config, Metrics, Runtime};

/// Generous bounds, for liveness only (2 shared cores).
const WAIT: Duration = Duration::from_secs(60);

/// [`config`] with the HTTP endpoint on a free port.
fn config_with_http(redis: &Redis, mqtt: &Mosquitto, rules: &std::path::Path) -> Config {
    let mut c = config(redis, mqtt, rules);
    c.runtime.http_addr = Some("127.0.0.1:0".parse().unwrap());
    c
}

/// The value of the series `family{...}` whose labels contain `rule="<rule>"` (and
/// `extra`, if given), in the `/metrics` at `port`.
fn series(port: u16, family: &str, rule: &str, extra: &str) -> Option<u64> {
    let text = http_get(port, "/metrics")?;
    let rule = format!("rule=\"{rule}\"");
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(family)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once("} ")?;
        (labels.contains(&rule) && labels.contains(extra))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// The status JSON's entry of rule `id`.
fn rule_status(port: u16, id: &str) -> Option<serde_json::Value> {
    let s: serde_json::Value = serde_json::from_str(&http_get(port, "/api/status")?).ok()?;
    s["rules"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
}

/// The diff rate (percent) the web console at `port` shows for the canary of `rule`,
/// as headless Chromium renders the page.
fn console_diff_rate(port: u16, rule: &str) -> f64 {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            // The page's first poll and render, on Chromium's virtual clock.
            "--virtual-time-budget=2000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("chromium runs (Debian package `chromium`)");
    let dom = String::from_utf8_lossy(&out.stdout);
    let row = dom
        .split(&format!("data-canary=\"{rule}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no canary row for {rule} in the console:\n{dom}"));
    let cell = row
        .split("class=\"n diff-rate\">")
        .nth(1)
        .and_then(|c| c.split('%').next())
        .expect("a diff-rate cell");
    assert!(dom.contains("data-errors=\"0\""), "console errors:\n{dom}");
    cell.parse().expect("a percentage")
}

fn port(rt: &Runtime) -> u16 {
    rt.http_addr.expect("the HTTP endpoint listens").port()
}

/// Waits until the rule `id` serves and its canary is loaded, and a message gets
/// through (the subscription is live).
async fn serving_with_canary(rt: &Runtime, redis: &Redis, publisher: &Publisher, id: &str) {
    eventually(WAIT, "the rule and its canary load", || {
        let set = rt.rules.snapshot();
        (set.get(id).is_some() && set.canary(id).is_some()).then_some(())
    })
    .await;
    publish_until(
        publisher,
        "store-last-message/warm",
        r#"{"temp":1}"#,
        WAIT,
        "a warm-up message is handled",
        || redis.hget("emqx_messages", "warm"),
    )
    .await;
}

/// The issue's acceptance: live `store-last-message`, canary the rounded version, 2,000
/// readings of which every 10th has two decimals (which the canary rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_differing_on_ten_percent_shows_ten_percent_and_writes_nothing() {
    const N: usize = 2_000;
    const DEVICES: usize = 50;
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path();
    install(
        &dist("store-last-message"),
        rules,
        "store-last-message.wasm",
    );
    install(
        &dist("last-message-rounded"),
        rules,
        "store-last-message.canary.wasm",
    );
    let mut c = config_with_http(&redis, &mqtt, rules);
    // A small stream bound, so that 200 differences must be trimmed; every difference
    // may be written.
    c.rules.canary_stream_maxlen = 20;
    c.rules.canary_samples_per_second = 10_000;
    let rt = Runtime::start(c).await.expect("runtime starts");
    let http = port(&rt);
    let id = "store-last-message";
    let publisher = Publisher::connect(&mqtt).await;
    serving_with_canary(&rt, &redis, &publisher, id).await;
    // The canary was loaded as the rule's canary, not as a rule of its own.
    assert_eq!(rt.rules.snapshot().len(), 1);
    let events = || series(http, "wasmrule_canary_events_total", id, "");
    let diffs = || series(http, "wasmrule_canary_diffs_total", id, "");
    let (e0, d0) = (events().unwrap(), diffs().unwrap());
    assert_eq!(d0, 0, "the warm-up readings have one decimal at most");

    let mut expected = HashMap::new();
    for i in 0..N {
        let device = format!("dev-{}", i % DEVICES);
        let temp = if i % 10 == 0 {
            format!("2{}.{}7", i % 10, i % 9)
        } else {
            format!("2{}.{}", i % 7, i % 9)
        };
        publisher
            .publish(
                &format!("store-last-message/{device}"),
                format!(r#"{{"temp":{temp}}}"#),
            )
            .await;
        expected.insert(device, temp);
    }
    eventually(WAIT, "every reading compared", || {
        (events()? >= e0 + N as u64).then_some(())
    })
    .await;
    let compared = events().unwrap() - e0;
    let differed = diffs().unwrap() - d0;
    assert_eq!(compared, N as u64, "each event compared once");
    let rate = differed as f64 / compared as f64;
    assert!(
        (0.09..=0.11).contains(&rate),
        "diff rate {rate} in /metrics"
    );

    // The status JSON (what the console shows) says the same.
    let status = rule_status(http, id).expect("the rule in the status JSON");
    let canary = &status["canary"];
    assert_eq!(canary["version"], "0.2.0");
    assert_eq!(canary["state"], "comparing");
    let percent = canary["diff_rate_percent"].as_f64().unwrap();
    assert!((9.0..=11.0).contains(&percent), "status: {canary}");
    let sample = &canary["samples"][0];
    let (live_line, canary_line) = (
        sample["live"][0].as_str().unwrap(),
        sample["canary"][0].as_str().unwrap(),
    );
    assert!(live_line.starts_with("HSET emqx_messages dev-"), "{sample}");
    assert_ne!(live_line, canary_line);
    // The console, rendered by headless Chromium from that JSON.
    let shown = tokio::task::spawn_blocking(move || console_diff_rate(http, id))
        .await
        .unwrap();
    assert!((9.0..=11.0).contains(&shown), "console shows {shown}%");

    // Live output unchanged: the readings as the devices wrote them, none rounded.
    eventually(WAIT, "the live version's last readings", || {
        let mut all = redis.hgetall("emqx_messages");
        all.remove("warm");
        (all == expected).then_some(())
    })
    .await;

    // The diff stream: samples with both lines, trimmed near its bound.
    let mut conn = redis.conn();
    let key = "wasmrule:canary:store-last-message";
    let len: usize = redis::cmd("XLEN").arg(key).query(&mut conn).unwrap();
    assert!(
        (20..200).contains(&len),
        "{len} entries for 200 differences and a bound of ~20"
    );
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    let fields = &entries[0].1;
    assert_eq!(fields["rule"], id);
    assert_eq!(fields["canary_version"], "0.2.0");
    assert!(
        fields["live"].starts_with("HSET emqx_messages dev-"),
        "{fields:?}"
    );
    assert!(
        fields["canary"].starts_with("HSET emqx_messages dev-"),
        "{fields:?}"
    );
    assert_ne!(fields["live"], fields["canary"]);
    assert!(fields["topic"].starts_with("store-last-message/dev-"));
    rt.stop().await;
}

/// A canary that traps on every event: its failures are its own, the live version
/// writes as before, is not quarantined and has no dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_traps_fails_alone() {
    const N: usize = 100;
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path();
    install(
        &dist("store-last-message"),
        rules,
        "store-last-message.wasm",
    );
    std::fs::write(
        rules.join("store-last-message.canary.wasm"),
        trap_rule("store-last-message", "9", "store-last-message/+"),
    )
    .unwrap();
    let rt = Runtime::start(config_with_http(&redis, &mqtt, rules))
        .await
        .expect("runtime starts");
    let http = port(&rt);
    let id = "store-last-message";
    let publisher = Publisher::connect(&mqtt).await;
    serving_with_canary(&rt, &redis, &publisher, id).await;
    let canary_counted = || {
        let s = rule_status(http, id)?;
        let f = s["canary"]["failures"].as_object()?;
        Some(f.values().filter_map(|v| v.as_u64()).sum::<u64>())
    };
    let before = canary_counted().unwrap();
    for i in 0..N {
        publisher
            .publish(
                &format!("store-last-message/dev-{i}"),
                format!(r#"{{"temp":{i}.5}}"#),
            )
            .await;
    }
    eventually(WAIT, "every canary run counted", || {
        (canary_counted()? >= before + N as u64).then_some(())
    })
    .await;
    let traps = series(
        http,
        "wasmrule_canary_failures_total",
        id,
        r#"reason="trap""#,
    );
    assert!(traps.unwrap() >= 1, "traps counted");
    let status = rule_status(http, id).unwrap();
    // The default quarantine takes the canary out after its first failures; the live
    // version serves on.
    assert_eq!(status["canary"]["state"], "quarantined", "{status}");
    assert_eq!(status["state"], "serving", "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(Metrics::get(&rt.metrics.dead_letters), 0);
    let all = redis.hgetall("emqx_messages");
    for i in 0..N {
        assert_eq!(
            all.get(&format!("dev-{i}")).map(String::as_str),
            Some(format!("{i}.5").as_str())
        );
    }
    rt.stop().await;
}

/// `wasmrule promote` while a QoS 1 stream of distinct topics flows: every message is
/// handled by exactly one version (the canary's writes before the promotion are never
/// made), and messages after it by the promoted version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_under_load_loses_nothing() {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().to_owned();
    std::fs::write(
        rules.join("r.wasm"),
        echo_rule_version("RPUSH", "promo/#", "v1", "1"),
    )
    .unwrap();
    std::fs::write(
        rules.join("r.canary.wasm"),
        echo_rule_version("RPUSH", "promo/#", "v2", "2"),
    )
    .unwrap();
    let rt = Runtime::start(config(&redis, &mqtt, &rules))
        .await
        .expect("runtime starts");
    eventually(WAIT, "r and its canary load", || {
        let set = rt.rules.snapshot();
        (set.get("r")?.version() == "1" && set.canary("r").is_some()).then_some(())
    })
    .await;
    let warm = Publisher::connect(&mqtt).await;
    publish_until(&warm, "promo/warm", "x", WAIT, "a warm-up message", || {
        (!redis.lrange("v1").is_empty()).then_some(())
    })
    .await;
    let warm_ups = redis.lrange("v1").len();
    assert!(redis.lrange("v2").is_empty(), "the canary wrote nothing");

    // About 1,000 msg/s on promo/<i> until told to stop.
    let publisher = Publisher::connect(&mqtt).await;
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicUsize::new(0));
    let stream = tokio::spawn({
        let (stop, published) = (stop.clone(), published.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for _ in 0..10 {
                    publisher.publish(&format!("promo/{i}"), "x").await;
                    i += 1;
                }
                published.store(i, Ordering::Relaxed);
            }
            publisher
        }
    });
    eventually(WAIT, "the stream flows", || {
        (published.load(Ordering::Relaxed) > 500).then_some(())
    })
    .await;
    let rules_arg = rules.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(wasmrule_bin())
            .arg("promote")
            .arg("--rules-dir")
            .arg(&rules_arg)
            .arg("r")
            .output()
            .expect("wasmrule promote runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "promote failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("promoted r: version 2 replaces version 1"),
        "{stdout}"
    );
    assert!(!rules.join("r.canary.wasm").exists());
    eventually(WAIT, "version 2 serves and the canary is gone", || {
        let set = rt.rules.snapshot();
        (set.get("r")?.version() == "2" && set.canary("r").is_none()).then_some(())
    })
    .await;
    let after_swap = published.load(Ordering::Relaxed);
    eventually(WAIT, "more of the stream after the swap", || {
        (published.load(Ordering::Relaxed) > after_swap + 500).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let _publisher = stream.await.unwrap();
    let total = published.load(Ordering::Relaxed);

    let numbers = |key: &str| -> Vec<usize> {
        redis
            .lrange(key)
            .iter()
            .filter_map(|e| {
                let v: serde_json::Value = serde_json::from_slice(e).expect("event JSON");
                v["topic"].as_str()?.rsplit('/').next()?.parse().ok()
            })
            .collect()
    };
    eventually(WAIT, "every message handled", || {
        (numbers("v1").len() + numbers("v2").len() >= total).then_some(())
    })
    .await;
    let mut handled_by = vec![None; total];
    for (version, key) in [(1, "v1"), (2, "v2")] {
        for i in numbers(key) {
            assert!(i < total, "message {i} was never published");
            if let Some(other) = handled_by[i].replace(version) {
                panic!("message {i} handled by version {other} and by version {version}");
            }
        }
    }
    let lost: Vec<usize> = (0..total).filter(|&i| handled_by[i].is_none()).collect();
    assert!(lost.is_empty(), "messages lost: {lost:?}");
    assert!(
        handled_by[after_swap..].iter().all(|v| *v == Some(2)),
        "a message after the swap handled by version 1"
    );
    assert!(!numbers("v1").is_empty() && redis.lrange("v1").len() > warm_ups);
    // The canary had no rule of its own: the promotion did not load a second rule.
    assert_eq!(rt.rules.snapshot().len(), 1);

    // Nothing to promote now.
    let out = std::process::Command::new(wasmrule_bin())
        .args(["promote", "--rules-dir"])
        .arg(&rules)
        .arg("r")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no canary"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt.stop().await;
}

/// An ABI v2 canary's reads are answered from the live version's: the same rule as
/// live and canary (`bench-v2-read`: HGET the stored reading, HSET only a changed one)
/// never differs, though half the readings repeat the stored one, and Redis gets only
/// the live version's reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_canary_sees_the_live_versions_reads() {
    const N: usize = 200;
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path();
    install(&dist("bench-v2-read"), rules, "store-last-message.wasm");
    install(
        &dist("bench-v2-read"),
        rules,
        "store-last-message.canary.wasm",
    );
    let rt = Runtime::start(config_with_http(&redis, &mqtt, rules))
        .await
        .expect("runtime starts");
    let http = port(&rt);
    let id = "store-last-message";
    let publisher = Publisher::connect(&mqtt).await;
    serving_with_canary(&rt, &redis, &publisher, id).await;
    let events = || series(http, "wasmrule_canary_events_total", id, "");
    let e0 = events().unwrap();
    // Each reading twice: the second time the stored one equals it and nothing is
    // written.
    for i in 0..N {
        publisher
            .publish(
                &format!("store-last-message/dev-{}", i / 2 % 10),
                format!(r#"{{"temp":{}}}"#, i / 2),
            )
            .await;
    }
    eventually(WAIT, "every reading compared", || {
        (events()? >= e0 + N as u64).then_some(())
    })
    .await;
    assert_eq!(series(http, "wasmrule_canary_diffs_total", id, ""), Some(0));
    let status = rule_status(http, id).unwrap();
    assert_eq!(
        status["canary"]["failures"],
        serde_json::json!({}),
        "{status}"
    );
    // One read per live invocation, none for the canary.
    assert_eq!(
        Metrics::get(&rt.metrics.redis_reads),
        status["invocations"].as_u64().unwrap()
    );
    rt.stop().await;
}

/// The reloader's side: a canary file that does not load is refused under
/// `<rule>.canary` and the rule serves on; a good one replaces it; a canary whose rule
/// is gone is idle; deleting it unloads it. Never a rule of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_files_load_replace_and_unload_beside_their_rule() {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path();
    install(
        &dist("store-last-message"),
        rules,
        "store-last-message.wasm",
    );
    std::fs::write(rules.join("store-last-message.canary.wasm"), b"not wasm").unwrap();
    let rt = Runtime::start(config_with_http(&redis, &mqtt, rules))
        .await
        .expect("runtime starts");
    let http = port(&rt);
    let id = "store-last-message";
    let reason = eventually(WAIT, "the bad canary refused", || {
        rt.rules.load_error("store-last-message.canary")
    })
    .await;
    assert!(reason.contains("WebAssembly"), "{reason}");
    assert!(rt.rules.snapshot().get(id).is_some());
    assert!(rt.rules.snapshot().canary(id).is_none());
    assert_eq!(rt.rules.load_error(id), None, "the rule itself loaded");

    let tmp = rules.join(".canary.tmp");
    std::fs::copy(dist("last-message-rounded"), &tmp).unwrap();
    std::fs::rename(&tmp, rules.join("store-last-message.canary.wasm")).unwrap();
    eventually(WAIT, "the good canary loads", || {
        rt.rules.snapshot().canary(id).map(|_| ())
    })
    .await;
    assert_eq!(rt.rules.load_error("store-last-message.canary"), None);
    assert_eq!(rt.rules.snapshot().len(), 1);

    std::fs::remove_file(rules.join("store-last-message.wasm")).unwrap();
    let idle = eventually(WAIT, "the canary idle without its rule", || {
        let s: serde_json::Value = serde_json::from_str(&http_get(http, "/api/status")?).ok()?;
        let idle = s["idle_canaries"].as_array()?.first()?.clone();
        s["rules"].as_array()?.is_empty().then_some(idle)
    })
    .await;
    assert_eq!(idle["rule"], id);
    assert_eq!(idle["state"], "idle");

    std::fs::remove_file(rules.join("store-last-message.canary.wasm")).unwrap();
    eventually(WAIT, "the canary unloaded", || {
        rt.rules.snapshot().canary(id).is_none().then_some(())
    })
    .await;
    rt.stop().await;
}
