//! Record and replay (docs/replay.md) against real servers: `wasmrule run --record`
//! with the embedded broker and the demo's rules under `wasmrule simulate`, then
//! `wasmrule replay` of the recording: through the same rules (no differences), through
//! a rule changed on purpose (exactly the changed commands, counted), into an empty
//! Redis (the same state, key by key); and `wasmrule record` capturing mosquitto's
//! traffic without rules.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands as _;
use support::*;
use wasmrule::record::format::Record;
use wasmrule::record::reader::{read_all, segments};

const DEMO_RULES: [&str; 4] = [
    "store-last-message",
    "authz-stats",
    "disconnect-reasons",
    "dropped-messages",
];

fn wasmrule(args: &[&str]) -> std::process::Output {
    let out = Command::new(wasmrule_bin())
        .args(args)
        .output()
        .expect("cannot run wasmrule");
    assert!(
        out.status.success(),
        "wasmrule {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn replay_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["replay", "--json"];
    all.extend_from_slice(args);
    let out = wasmrule(&all);
    serde_json::from_slice(&out.stdout).expect("replay --json prints JSON")
}

/// Every key of a Redis but the dead-letter stream (its entry ids are times), with its
/// value in a comparable form.
fn dump(conn: &mut redis::Connection) -> BTreeMap<String, String> {
    let keys: Vec<String> = conn.keys("*").unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        if k.ends_with("wasmrule:deadletter") {
            continue;
        }
        let t: String = redis::cmd("TYPE").arg(&k).query(conn).unwrap();
        let v = match t.as_str() {
            "string" => conn.get::<_, String>(&k).unwrap(),
            "hash" => format!(
                "{:?}",
                conn.hgetall::<_, BTreeMap<String, String>>(&k).unwrap()
            ),
            "list" => format!("{:?}", conn.lrange::<_, Vec<String>>(&k, 0, -1).unwrap()),
            "set" => {
                let mut m: Vec<String> = conn.smembers(&k).unwrap();
                m.sort();
                format!("{m:?}")
            }
            "zset" => format!(
                "{:?}",
                conn.zrange_withscores::<_, Vec<(String, f64)>>(&k, 0, -1)
                    .unwrap()
            ),
            other => panic!("key {k} of type {other} not compared"),
        };
        out.insert(k, format!("{t}: {v}"));
    }
    out
}

/// `wasmrule run --record` of `rules` into `live`, its events from `source` (the flag
/// and its value), logging beside the recording.
fn recording_run(
    source: [String; 2],
    live: &Redis,
    rules: &Path,
    recording: &Path,
    http: u16,
) -> WasmruleProcess {
    let mut args = source.to_vec();
    args.extend([
        "--redis-url".into(),
        live.url(),
        "--rules-dir".into(),
        rules.display().to_string(),
        "--record".into(),
        recording.display().to_string(),
        "--http-addr".into(),
        format!("127.0.0.1:{http}"),
    ]);
    WasmruleProcess::start(&args, &recording.with_extension("log"))
}

fn rules_dir(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (built, name) in files {
        install(&dist(built), dir, name);
    }
    dir.to_owned()
}

/// The recorded output of `store-last-message` with temperatures rounded to one
/// decimal, as `last-message-rounded` stores them: the number of recorded HSETs
/// whose value that changes.
fn hsets_rounding_changes(recording: &Path) -> u64 {
    let mut changed = 0;
    read_all(&segments(&[recording.to_owned()]).unwrap(), |r| {
        if let Record::Event(e) = r {
            for inv in e
                .invocations
                .iter()
                .filter(|i| i.rule == "store-last-message")
            {
                for c in inv.output.commands.iter() {
                    let args: Vec<&[u8]> = c.args().collect();
                    let temp = String::from_utf8_lossy(args[3]).into_owned();
                    let decimals = temp.split_once('.').map_or(0, |(_, d)| d.len());
                    let rounded = match temp.parse::<f64>() {
                        Ok(t) if decimals > 1 => format!("{t:.1}"),
                        _ => temp.clone(),
                    };
                    changed += u64::from(rounded != temp);
                }
            }
        }
        Ok(())
    })
    .unwrap();
    changed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_demo_replays_without_differences_shows_a_changed_rule_and_rebuilds_redis() {
    let live = Redis::start();
    let tmp = tempfile::tempdir().unwrap();
    let names = DEMO_RULES.map(|r| format!("{r}.wasm"));
    let demo: Vec<(&str, &str)> = DEMO_RULES
        .iter()
        .copied()
        .zip(names.iter().map(String::as_str))
        .collect();
    let rules = rules_dir(&tmp.path().join("rules"), &demo);
    let recording = tmp.path().join("recording");
    let (broker, http) = (free_port(), free_port());
    let mut run = recording_run(
        ["--embedded-broker".into(), format!("127.0.0.1:{broker}")],
        &live,
        &rules,
        &recording,
        http,
    );
    eventually(WAIT, "wasmrule serving", || {
        metric(http, "wasmrule_rules").filter(|&n| n == 4)
    })
    .await;
    let mqtt = format!("mqtt://127.0.0.1:{broker}");
    // The demo's devices, misbehaving (client events for the other three rules)...
    let mut devices = Command::new(wasmrule_bin())
        .args([
            "simulate",
            "--mqtt-url",
            &mqtt,
            // Few enough that their errors stay under the quarantine threshold (20 a
            // minute) however long the readings take on a slow machine.
            "--devices",
            "2",
            "--interval",
            "200",
        ])
        .args(["--abnormal", "0.3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // ... and 50,000 readings.
    wasmrule(&[
        "simulate",
        "--mqtt-url",
        &mqtt,
        "--count",
        "50000",
        "--rate",
        "0",
        "--qos",
        "1",
        "--devices",
        "10",
    ]);
    signal(devices.id(), "INT");
    devices.wait().unwrap();
    // Everything received is handled and recorded once the counters stand still.
    let mut last = (0, 0);
    let mut still = Instant::now();
    eventually(
        Duration::from_secs(120),
        "the recording to catch up",
        || {
            let now = (
                metric(http, "wasmrule_messages_received").unwrap_or(0),
                metric(http, "wasmrule_record_events_total").unwrap_or(0),
            );
            if now != last {
                (last, still) = (now, Instant::now());
            }
            (now.1 >= 50_000 && still.elapsed() > Duration::from_secs(1)).then_some(())
        },
    )
    .await;
    assert!(
        run.terminate(Duration::from_secs(30)).success(),
        "{}",
        run.log()
    );
    assert!(!run.log().contains("recording:"), "{}", run.log());

    // The same rules: nothing differs, and every recorded invocation was compared.
    let rec = recording.display().to_string();
    let dir = rules.display().to_string();
    let same = replay_json(&[&rec, "--rules", &dir, "--dry-run"]);
    assert_eq!(same["differs"], false, "{same:#}");
    assert!(same["events"].as_u64().unwrap() >= 50_000, "{same:#}");
    assert_eq!(same["lost_when_recorded"], 0);
    assert_eq!(same["damage"].as_array().unwrap().len(), 0);
    for r in DEMO_RULES {
        let rule = &same["rules"][r];
        assert!(
            rule["compared"].as_u64().unwrap() > 0,
            "{r} never compared: {same:#}"
        );
        assert_eq!(rule["compared"], rule["invocations"], "{r}: {same:#}");
    }
    // Every reading was compared: the live run never quarantined the rule (had it, the
    // events it skipped would be `not_run_when_recorded`, not compared).
    let slm = &same["rules"]["store-last-message"];
    assert!(slm["compared"].as_u64().unwrap() >= 50_000, "{same:#}");
    assert_eq!(slm["not_run_when_recorded"], 0, "{same:#}");

    // store-last-message changed on purpose: exactly its HSETs whose rounded value
    // differs, and nothing else.
    let changed = rules_dir(
        &tmp.path().join("changed"),
        &[
            ("last-message-rounded", "store-last-message.wasm"),
            ("authz-stats", "authz-stats.wasm"),
            ("disconnect-reasons", "disconnect-reasons.wasm"),
            ("dropped-messages", "dropped-messages.wasm"),
        ],
    );
    let expected = hsets_rounding_changes(&recording);
    assert!(expected > 40_000, "{expected}");
    let diff = replay_json(&[&rec, "--rules", &changed.display().to_string(), "--dry-run"]);
    let slm = &diff["rules"]["store-last-message"];
    assert_eq!(
        slm["changes"],
        serde_json::json!({ "HSET": expected }),
        "{diff:#}"
    );
    assert_eq!(slm["differing"].as_u64(), Some(expected));
    assert_eq!(slm["version"], "0.2.0");
    let example = &slm["examples"][0]["changes"][0];
    assert_eq!(example["command"], "HSET");
    assert_ne!(example["recorded"], example["replayed"]);
    for r in &DEMO_RULES[1..] {
        assert_eq!(diff["rules"][r]["differing"], 0, "{r}: {diff:#}");
    }
    // The text report says the same, with --exit-code failing on it.
    let text = Command::new(wasmrule_bin())
        .args([
            "replay",
            &rec,
            "--rules",
            &changed.display().to_string(),
            "--dry-run",
        ])
        .arg("--exit-code")
        .output()
        .unwrap();
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("HSET: {expected} changed")),
        "{text}"
    );

    // A time window outside the recording replays nothing.
    let none = replay_json(&[
        &rec,
        "--rules",
        &dir,
        "--dry-run",
        "--to",
        "1970-01-02T00:00:00Z",
    ]);
    assert_eq!(none["events"], 0);
    assert_eq!(none["skipped"], same["events"]);

    // Into an empty Redis: the state the live run left, key by key.
    let rebuilt = Redis::start();
    let wrote = replay_json(&[&rec, "--rules", &dir, "--redis-url", &rebuilt.url()]);
    assert_eq!(wrote["refused"], 0, "{wrote:#}");
    assert!(wrote["written"].as_u64().unwrap() >= 50_000);
    let (a, b) = (dump(&mut live.conn()), dump(&mut rebuilt.conn()));
    assert!(a.contains_key("emqx_messages"), "{a:?}");
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasmrule_record_captures_a_broker_for_a_later_replay() {
    let mqtt = Mosquitto::start();
    let redis = Redis::start();
    let tmp = tempfile::tempdir().unwrap();
    let recording = tmp.path().join("captured");
    let mut record = Command::new(wasmrule_bin())
        .args(["record", "--mqtt-url", &mqtt.url(), "--out"])
        .arg(&recording)
        .args(["--topic", "store-last-message/+", "--count", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Published until the recorder, once subscribed, has taken 200 and exits.
    let publisher = Publisher::connect(&mqtt).await;
    let mut sent = 0u64;
    let deadline = Instant::now() + WAIT;
    while record.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "wasmrule record did not take 200 messages"
        );
        let payload = format!(r#"{{"temp":{sent}.5}}"#);
        publisher
            .publish(&format!("store-last-message/d{}", sent % 4), payload)
            .await;
        publisher.publish("elsewhere/x", "not recorded").await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = record.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("recorded 200 events"), "{stderr}");

    let rules = rules_dir(
        &tmp.path().join("rules"),
        &[("store-last-message", "store-last-message.wasm")],
    );
    let rec = recording.display().to_string();
    let dir = rules.display().to_string();
    let dry = replay_json(&[&rec, "--rules", &dir, "--dry-run"]);
    assert_eq!(dry["events"], 200, "{dry:#}");
    let slm = &dry["rules"]["store-last-message"];
    // Captured without rules: run, nothing to compare with.
    assert_eq!(
        (slm["invocations"].as_u64(), slm["compared"].as_u64()),
        (Some(200), Some(0))
    );
    let wrote = replay_json(&[&rec, "--rules", &dir, "--redis-url", &redis.url()]);
    assert_eq!(wrote["written"], 200, "{wrote:#}");
    // The last reading of each device, as a served store-last-message leaves it: the
    // recording holds the first 200 readings the recorder saw, in order.
    let mut temps: Vec<(String, f64)> = Vec::new();
    read_all(&segments(std::slice::from_ref(&recording)).unwrap(), |r| {
        if let Record::Event(e) = r {
            let v: serde_json::Value = serde_json::from_slice(&e.event).unwrap();
            let payload: serde_json::Value =
                serde_json::from_str(v["payload"].as_str().unwrap()).unwrap();
            temps.push((e.topic.clone(), payload["temp"].as_f64().unwrap()));
        }
        Ok(())
    })
    .unwrap();
    let mut last = std::collections::HashMap::new();
    for (topic, t) in &temps {
        last.insert(topic.rsplit('/').next().unwrap().to_owned(), format!("{t}"));
    }
    let stored = redis.hgetall("emqx_messages");
    assert_eq!(stored.len(), last.len());
    for (dev, t) in &last {
        let got: f64 = stored[dev].parse().unwrap();
        assert_eq!(format!("{got}"), *t, "{dev}");
    }
    let _: () = redis.conn().del("emqx_messages").unwrap();
}

const WAIT: Duration = Duration::from_secs(60);

/// An ABI v2 rule that reads Redis and publishes: a dry run answers its reads from the
/// recording (none missing) and compares its MQTT actions; a replay into an empty Redis
/// reads that Redis instead, and leaves the live run's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_rule_replays_from_its_recorded_reads() {
    let mqtt = Mosquitto::start();
    let live = Redis::start();
    let tmp = tempfile::tempdir().unwrap();
    let rules = rules_dir(
        &tmp.path().join("rules"),
        &[("threshold-alert", "threshold-alert.wasm")],
    );
    let recording = tmp.path().join("rec");
    let http = free_port();
    let mut run = recording_run(
        ["--mqtt-url".into(), mqtt.url()],
        &live,
        &rules,
        &recording,
        http,
    );
    let publisher = Publisher::connect(&mqtt).await;
    // Until wasmrule has subscribed: the first reading of d0 lands.
    publish_until(
        &publisher,
        "readings/d0",
        "10",
        WAIT,
        "wasmrule subscribed",
        || live.conn().get::<_, Option<String>>("last:d0").unwrap(),
    )
    .await;
    let before = metric(http, "wasmrule_record_events_total").unwrap();
    for i in 0..200 {
        for d in 0..5 {
            let value = if (i + d) % 2 == 0 { "10" } else { "20" };
            publisher
                .publish_qos(&format!("readings/d{d}"), value, 1)
                .await;
        }
    }
    eventually(WAIT, "1,000 readings recorded", || {
        metric(http, "wasmrule_record_events_total").filter(|&n| n >= before + 1000)
    })
    .await;
    assert!(
        run.terminate(Duration::from_secs(30)).success(),
        "{}",
        run.log()
    );

    let rec = recording.display().to_string();
    let dir = rules.display().to_string();
    let dry = replay_json(&[&rec, "--rules", &dir, "--dry-run"]);
    let rule = &dry["rules"]["threshold-alert"];
    assert_eq!(dry["differs"], false, "{dry:#}");
    assert_eq!(rule["reads_missed"], 0, "{dry:#}");
    assert_eq!(rule["compared"], rule["invocations"]);
    // Every reading after a device's first moves by more than 10%: an alert each.
    assert!(dry["actions_not_taken"].as_u64().unwrap() >= 995, "{dry:#}");

    let rebuilt = Redis::start();
    let wrote = replay_json(&[&rec, "--rules", &dir, "--redis-url", &rebuilt.url()]);
    assert_eq!(wrote["differs"], false, "{wrote:#}");
    assert_eq!(dump(&mut live.conn()), dump(&mut rebuilt.conn()));
}
