//! Bad rule files against the real thing (mosquitto, redis-server, the runtime
//! in-process): files over `rules.max_file_bytes`, modules that compile for longer than
//! `rules.compile_timeout_ms`, and many replacements while messages flow, some broken
//! and some written in place, where no half-written module may ever serve.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use wasmrule::{Metrics, Runtime};

const SECS5: Duration = Duration::from_secs(5);
/// Warm-up messages are numbered from here, past the stream's.
const WARM_UP: usize = 1_000_000;

/// Writes `bytes` to `dir/.name.tmp` and renames it to `dir/name`: the file appears
/// whole.
fn install_by_rename(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// `module` with a trailing custom section: its prefix without that section is itself
/// a valid module, which a reader that does not wait for the writer could load.
fn with_custom_tail(mut module: Vec<u8>) -> Vec<u8> {
    let name = b"pad";
    let body = vec![0x5a; 300];
    let len = 1 + name.len() + body.len();
    module.push(0); // custom section id
    // LEB128 of the section length (300-odd bytes: two bytes).
    module.extend([(len as u8 & 0x7f) | 0x80, (len >> 7) as u8]);
    module.push(name.len() as u8);
    module.extend(name);
    module.extend(body);
    module
}

/// The events (as the topic's last level, the message number) in the list `key`.
fn message_numbers(conn: &mut redis::Connection, key: &str) -> Vec<usize> {
    let events: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query(conn)
        .unwrap();
    events
        .iter()
        .map(|event| {
            let v: serde_json::Value = serde_json::from_slice(event).expect("event JSON");
            let topic = v["topic"].as_str().expect("topic");
            topic.rsplit('/').next().unwrap().parse().expect("number")
        })
        .collect()
}

/// The issue's acceptance is 1,000 replacements under 5,000 msg/s, 10% broken or written
/// in place. CI runs it scaled to what takes well under a minute on 2 shared cores: 200
/// replacements under about 1,000 msg/s; `WASMRULE_RULE_FILES_REPLACEMENTS=1000
/// WASMRULE_RULE_FILES_RATE=5000` runs the full size (docs/security.md has the figure).
/// 10% broken (garbage, or half a module renamed into place) and 10% written in place
/// in two writes with a pause between them longer than the debounce. Each complete
/// version pushes the events it handles to a list of its own (`v<n>`), so every message
/// must be in exactly one list, and only complete versions' lists may exist. A
/// half-written file must never even be compiled: the load errors are exactly the
/// broken files, and the loads exactly the complete versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacements_under_load_serve_only_complete_versions_exactly_once() {
    let env = |name: &str, default: usize| {
        std::env::var(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
    };
    let replacements = env("WASMRULE_RULE_FILES_REPLACEMENTS", 200);
    let rate = env("WASMRULE_RULE_FILES_RATE", 1_000);
    // Generous bounds for liveness only: a load competes with the stream for 2 cores.
    let load_wait = Duration::from_secs(30);
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path();
    let version =
        |n: usize| echo_rule_version("RPUSH", "files/#", &format!("v{n}"), &n.to_string());
    install_by_rename(rules, "r.wasm", &with_custom_tail(version(0)));
    let rt = Runtime::start(config(&redis, &mqtt, rules))
        .await
        .expect("runtime starts");
    eventually(SECS5, "version 0 serves", || {
        (rt.rules.snapshot().get("r")?.version() == "0").then_some(())
    })
    .await;
    // The subscription is live once a message gets through (numbered past the stream's).
    let warm = Publisher::connect(&mqtt).await;
    for w in 0.. {
        warm.publish(&format!("files/{}", WARM_UP + w), "x").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !redis.lrange("v0").is_empty() {
            break;
        }
        assert!(w < 100, "no warm-up message handled in 5 s");
    }

    // The stream: about `rate` msg/s on files/<i> until the replacements are done.
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
                for _ in 0..rate.div_ceil(100) {
                    publisher.publish(&format!("files/{i}"), "x").await;
                    i += 1;
                }
                published.store(i, Ordering::Relaxed);
            }
            publisher
        }
    });

    let (mut broken, mut complete) = (0, 1);
    let started = std::time::Instant::now();
    for n in 1..=replacements {
        let bytes = with_custom_tail(version(n));
        match n % 10 {
            0 => {
                // Broken: garbage, or half a module that stays half.
                let bad = if n % 20 == 0 {
                    b"not wasm at all".to_vec()
                } else {
                    bytes[..bytes.len() / 2].to_vec()
                };
                let serving = rt.rules.snapshot().get("r").unwrap().version().to_owned();
                install_by_rename(rules, "r.wasm", &bad);
                broken += 1;
                let reason = eventually(load_wait, "broken file refused", || {
                    rt.rules.load_error("r")
                })
                .await;
                assert!(
                    reason.contains("WebAssembly"),
                    "replacement {n} refused for its content: {reason}"
                );
                assert_eq!(rt.rules.snapshot().get("r").unwrap().version(), serving);
                continue;
            }
            5 => {
                // In place, in two writes: first a part that is (every other time) a
                // valid module on its own, then, after longer than the debounce, the
                // rest.
                let cut = if n % 20 == 5 {
                    version(n).len()
                } else {
                    bytes.len() / 2
                };
                let mut f = std::fs::File::create(rules.join("r.wasm")).unwrap();
                f.write_all(&bytes[..cut]).unwrap();
                f.flush().unwrap();
                tokio::time::sleep(Duration::from_millis(150)).await;
                f.write_all(&bytes[cut..]).unwrap();
                drop(f);
            }
            _ => install_by_rename(rules, "r.wasm", &bytes),
        }
        complete += 1;
        let want = n.to_string();
        eventually(load_wait, &format!("version {n} serves"), || {
            (rt.rules.snapshot().get("r")?.version() == want).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let _publisher = stream.await.unwrap();
    let total = published.load(Ordering::Relaxed);
    let took = started.elapsed();

    let lists = |redis: &Redis| -> HashMap<usize, Vec<usize>> {
        let mut conn = redis.conn();
        (0..=replacements)
            .map(|n| (n, message_numbers(&mut conn, &format!("v{n}"))))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    };
    let seen =
        |l: &HashMap<usize, Vec<usize>>| l.values().flatten().filter(|&&i| i < WARM_UP).count();
    eventually(Duration::from_secs(60), "every message handled", || {
        (seen(&lists(&redis)) >= total).then_some(())
    })
    .await;
    // Let anything late arrive before judging duplicates.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let by_version = lists(&redis);
    let mut handled_by = vec![None; total];
    for (n, numbers) in &by_version {
        assert!(
            n % 10 != 0 || *n == 0,
            "broken version {n} served {} messages",
            numbers.len()
        );
        for &i in numbers {
            if i >= WARM_UP {
                continue;
            }
            assert!(i < total, "message {i} was never published");
            if let Some(m) = handled_by[i].replace(*n) {
                panic!("message {i} handled twice: by version {m} and by version {n}");
            }
        }
    }
    let unhandled: Vec<usize> = (0..total).filter(|&i| handled_by[i].is_none()).collect();
    assert!(
        unhandled.is_empty(),
        "messages never handled: {unhandled:?}"
    );
    assert!(by_version.len() > 2, "several versions served");
    // Half-written files were never compiled: no load error beyond the broken files,
    // no load beyond the complete versions.
    assert_eq!(Metrics::get(&rt.metrics.load_errors), broken as u64);
    assert_eq!(Metrics::get(&rt.metrics.rules_loaded), complete as u64);
    eprintln!(
        "{total} messages at {rate} msg/s, {replacements} replacements ({broken} broken) in \
         {:.1} s, {} versions served",
        took.as_secs_f64(),
        by_version.len()
    );
    rt.stop().await;
}

/// A core module that is valid but slow to compile: `functions` functions of `ops`
/// arithmetic steps each (about 9 bytes and half a microsecond of compiling per step).
/// Not a rule: it would be refused for its missing exports once compiled.
fn slow_to_compile(functions: u32, ops: u32) -> Vec<u8> {
    fn leb(mut v: u32, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u32, out);
        out.extend(body);
    }
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    // Types: () -> () and (i32) -> i32.
    section(1, &[2, 0x60, 0, 0, 0x60, 1, 0x7f, 1, 0x7f], &mut m);
    let mut funcs = Vec::new();
    leb(functions + 1, &mut funcs);
    funcs.push(0);
    funcs.extend(std::iter::repeat_n(1, functions as usize));
    section(3, &funcs, &mut m);
    section(5, &[1, 0, 1], &mut m);
    let mut exports = vec![2, 6];
    exports.extend(b"memory\x02\x00");
    exports.push(22);
    exports.extend(b"wasmrule_abi_version_1\x00\x00");
    section(7, &exports, &mut m);
    // x = x + x * k, `ops` times, then return x.
    let step = [0x20, 0, 0x20, 0, 0x41, 0x2a, 0x6c, 0x6a, 0x21, 0];
    let mut body = vec![0];
    for _ in 0..ops {
        body.extend(step);
    }
    body.extend([0x20, 0, 0x0b]);
    let mut code = Vec::new();
    leb(functions + 1, &mut code);
    code.extend([2, 0, 0x0b]);
    for _ in 0..functions {
        leb(body.len() as u32, &mut code);
        code.extend(&body);
    }
    section(10, &code, &mut m);
    m
}

/// A module whose compilation takes longer than `rules.compile_timeout_ms` is refused
/// with that reason while the rule already there keeps serving, and a rule dropped in
/// after it loads. The limit is 250 ms; the module takes seconds (about 6 MB of code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_too_slow_to_compile_is_refused_and_others_serve() {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path();
    let mut c = config(&redis, &mqtt, rules);
    c.rules.compile_timeout = Duration::from_millis(250);
    install_by_rename(rules, "a.wasm", &echo_rule("RPUSH", "a/#", "a"));
    let rt = Runtime::start(c).await.expect("runtime starts");
    let publisher = Publisher::connect(&mqtt).await;
    eventually(SECS5, "rule a serves", || {
        rt.rules.snapshot().get("a").map(|_| ())
    })
    .await;

    let slow = slow_to_compile(24, 30_000);
    assert!(slow.len() > 6_000_000, "{} bytes", slow.len());
    install_by_rename(rules, "slow.wasm", &slow);
    let reason = eventually(SECS5, "slow module refused", || rt.rules.load_error("slow")).await;
    assert!(
        reason.contains("took longer than 250 ms (rules.compile_timeout_ms)"),
        "{reason}"
    );
    assert!(rt.rules.snapshot().get("slow").is_none());

    // Serving and loading go on while its compilation finishes on its own.
    install_by_rename(rules, "b.wasm", &echo_rule("RPUSH", "b/#", "b"));
    for (topic, key) in [("a/1", "a"), ("b/1", "b")] {
        let mut tries = 0;
        while redis.lrange(key).is_empty() {
            publisher.publish(topic, "x").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            tries += 1;
            assert!(
                tries < 100,
                "no message on {topic} handled in 5 s; load errors: {:?}",
                rt.rules.load_errors()
            );
        }
    }
    assert_eq!(Metrics::get(&rt.metrics.load_errors), 1);
    rt.stop().await;
}

/// A file over `rules.max_file_bytes` is refused unread, with the size and the setting
/// in the reason, and keeps the version serving; one within the limit loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_the_size_limit_is_refused_unread() {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path();
    let mut c = config(&redis, &mqtt, rules);
    let small = echo_rule_version("RPUSH", "s/#", "s", "1");
    let big = with_custom_tail(echo_rule_version("RPUSH", "s/#", "s", "2"));
    c.rules.max_file_bytes = small.len() as u64 + 100;
    assert!(big.len() > small.len() + 100);
    install_by_rename(rules, "r.wasm", &small);
    let rt = Runtime::start(c).await.expect("runtime starts");
    eventually(SECS5, "version 1 serves", || {
        (rt.rules.snapshot().get("r")?.version() == "1").then_some(())
    })
    .await;
    install_by_rename(rules, "r.wasm", &big);
    let reason = eventually(SECS5, "big file refused", || rt.rules.load_error("r")).await;
    assert_eq!(
        reason,
        format!(
            "the file is {} bytes, above the limit of {} bytes (rules.max_file_bytes); not read",
            big.len(),
            small.len() + 100
        )
    );
    assert_eq!(rt.rules.snapshot().get("r").unwrap().version(), "1");
    rt.stop().await;
}
