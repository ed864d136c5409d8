//! ABI v2 on hand-written modules: the host imports, typed replies, the read budget,
//! actions, and what v1 modules may not do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::actions::Publish;

/// A v2 rule: reads `GET k` (request at 2048) and publishes the raw reply (or the
/// error code as 4 bytes) to `out/t` at QoS 1. `imports` replaces its imports.
fn reader(imports: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
          {imports}
          (memory (export "memory") 1)
          (func (export "wasmrule_abi_version_2"))
          (data (i32.const 0) "{{\"name\":\"r\",\"filters\":[\"a/+\"]}}")
          (data (i32.const 2048) "\02\00\00\00\03\00\00\00GET\01\00\00\00k")
          (data (i32.const 8192) "\00\01\00\00\00\01\05\00\00\00out/t")
          (func (export "wasmrule_manifest") (result i64) (i64.const 30))
          (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 4096))
          (func (export "wasmrule_on_event") (param i32 i32) (result i64)
            (local $n i32) (local $len i32)
            (local.set $n (call $read (i32.const 2048) (i32.const 16)))
            (if (i32.lt_s (local.get $n) (i32.const 0))
              (then (i32.store (i32.const 8211) (local.get $n)) (local.set $len (i32.const 4)))
              (else (drop (call $reply (i32.const 8211) (local.get $n)))
                    (local.set $len (local.get $n))))
            (i32.store (i32.const 8207) (local.get $len))
            (i32.store8 (i32.add (i32.const 8211) (local.get $len)) (i32.const 1))
            (i32.store8 (i32.add (i32.const 8212) (local.get $len)) (i32.const 0))
            (i32.store (i32.add (i32.const 8213) (local.get $len)) (i32.const 0))
            (i64.or (i64.shl (i64.const 8192) (i64.const 32))
                    (i64.extend_i32_u (i32.add (i32.const 25) (local.get $len))))))"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{text}"))
}

const IMPORTS: &str = r#"(import "wasmrule" "redis_read" (func $read (param i32 i32) (result i32)))
    (import "wasmrule" "redis_reply" (func $reply (param i32 i32) (result i32)))"#;

/// The reads a [`Fake`] was asked for: arguments and the time it was given.
type Seen = Arc<Mutex<Vec<(Vec<Vec<u8>>, Duration)>>>;

/// Answers every read with `reply` and remembers what it was asked and given.
struct Fake {
    reply: Result<Reply, ReadCode>,
    seen: Seen,
}

impl RedisReads for Fake {
    fn read(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
        _max_reply: usize,
    ) -> Result<Reply, ReadCode> {
        let args = args.iter().map(|a| a.to_vec()).collect();
        self.seen.lock().unwrap().push((args, timeout));
        self.reply.clone()
    }
}

fn engine_with(reads: ReadBudget) -> Engine {
    let limits = Limits {
        reads,
        ..Limits::default()
    };
    Engine::new(limits, 4).unwrap()
}

/// The payload the rule published, after one event.
fn published(rule: &Rule, port: &mut Option<Box<dyn RedisReads>>) -> Vec<u8> {
    let (mut out, mut actions) = (Commands::new(), Vec::new());
    let limits = InvokeLimits::from(rule.engine.limits());
    rule.invoke_actions(b"{}", &mut out, &mut actions, &limits, port)
        .unwrap();
    assert!(out.is_empty());
    match actions.as_slice() {
        [
            MqttAction::Publish(Publish {
                topic,
                payload,
                qos: 1,
                retain: false,
                properties,
            }),
        ] if topic == "out/t" && properties.is_empty() => payload.clone(),
        other => panic!("unexpected actions {other:?}"),
    }
}

fn encoded(r: &Reply) -> Vec<u8> {
    let mut b = Vec::new();
    r.encode(&mut b);
    b
}

#[test]
fn a_v2_rule_reads_through_the_port_and_publishes() {
    let engine = engine_with(ReadBudget::default());
    let rule = engine.compile(&reader(IMPORTS)).unwrap();
    assert_eq!(rule.abi(), 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reply = Reply::Array(vec![Reply::Bulk(b"41".to_vec()), Reply::Nil, Reply::Int(7)]);
    let mut port: Option<Box<dyn RedisReads>> = Some(Box::new(Fake {
        reply: Ok(reply.clone()),
        seen: seen.clone(),
    }));
    assert_eq!(published(&rule, &mut port), encoded(&reply));
    assert!(port.is_some(), "the port is given back");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, vec![b"GET".to_vec(), b"k".to_vec()]);
    // The read may wait at most the invocation's wait budget.
    assert!(
        seen[0].1 <= ReadBudget::default().max_wait,
        "{:?}",
        seen[0].1
    );
}

#[test]
fn refused_reads_are_codes_the_rule_sees() {
    let engine = engine_with(ReadBudget::default());
    let rule = engine.compile(&reader(IMPORTS)).unwrap();
    let code = |r: Result<Reply, ReadCode>| {
        let mut port: Option<Box<dyn RedisReads>> = Some(Box::new(Fake {
            reply: r,
            seen: Arc::default(),
        }));
        published(&rule, &mut port)
    };
    for c in [
        ReadCode::NotAllowed,
        ReadCode::Unavailable,
        ReadCode::RedisError,
    ] {
        assert_eq!(code(Err(c)), c.code().to_le_bytes(), "{c:?}");
    }
    // No port at all (a caller without Redis): unavailable.
    assert_eq!(
        published(&rule, &mut None),
        ReadCode::Unavailable.code().to_le_bytes()
    );
}

#[test]
fn the_read_budget_bounds_count_bytes_and_waiting() {
    let big = Reply::Bulk(vec![b'x'; 100]);
    let fake = |reply: Reply| -> Option<Box<dyn RedisReads>> {
        Some(Box::new(Fake {
            reply: Ok(reply),
            seen: Arc::default(),
        }))
    };
    let small_bytes = engine_with(ReadBudget {
        max_bytes: 50,
        ..ReadBudget::default()
    });
    let rule = small_bytes.compile(&reader(IMPORTS)).unwrap();
    assert_eq!(
        published(&rule, &mut fake(big.clone())),
        ReadCode::OverBudget.code().to_le_bytes()
    );
    let no_reads = engine_with(ReadBudget {
        max_reads: 0,
        ..ReadBudget::default()
    });
    let rule = no_reads.compile(&reader(IMPORTS)).unwrap();
    assert_eq!(
        published(&rule, &mut fake(big)),
        ReadCode::OverBudget.code().to_le_bytes()
    );
    // A port that takes all the time it is given: the next read gets none.
    struct Slow(Arc<Mutex<Vec<Duration>>>);
    impl RedisReads for Slow {
        fn read(&mut self, _: &[&[u8]], timeout: Duration, _: usize) -> Result<Reply, ReadCode> {
            self.0.lock().unwrap().push(timeout);
            std::thread::sleep(timeout);
            Err(ReadCode::Unavailable)
        }
    }
    let short = engine_with(ReadBudget {
        max_wait: Duration::from_millis(5),
        ..ReadBudget::default()
    });
    let rule = short.compile(&reader(IMPORTS)).unwrap();
    let given = Arc::new(Mutex::new(Vec::new()));
    let mut port: Option<Box<dyn RedisReads>> = Some(Box::new(Slow(given.clone())));
    assert_eq!(
        published(&rule, &mut port),
        ReadCode::Unavailable.code().to_le_bytes()
    );
    assert_eq!(*given.lock().unwrap(), vec![Duration::from_millis(5)]);
}

#[test]
fn imports_are_checked_by_version() {
    let engine = engine_with(ReadBudget::default());
    // v1 may import nothing, not even the v2 functions.
    let err = engine.compile(&v1_with_import()).unwrap_err().to_string();
    assert!(err.contains("rules may import nothing"), "{err}");
    // v2 may import only the two host functions, with their types.
    let unknown = reader(
        r#"(import "wasmrule" "redis_read" (func $read (param i32 i32) (result i32)))
           (import "wasmrule" "redis_scan" (func $reply (param i32 i32) (result i32)))"#,
    );
    let err = engine.compile(&unknown).unwrap_err().to_string();
    assert!(
        err.contains("`wasmrule::redis_scan`, which ABI v2 does not offer"),
        "{err}"
    );
    let wrong_type = reader(
        r#"(import "wasmrule" "redis_read" (func $read (param i32 i32) (result i32)))
           (import "wasmrule" "redis_reply" (func $reply (param i32 i32) (result i64)))"#,
    );
    let err = engine.compile(&wrong_type).unwrap_err().to_string();
    assert!(
        err.contains("must be a function (i32, i32) -> (i32)"),
        "{err}"
    );
}

/// A v1 module that imports `wasmrule.redis_read`.
fn v1_with_import() -> Vec<u8> {
    wat::parse_str(
        r#"(module
          (import "wasmrule" "redis_read" (func (param i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "wasmrule_abi_version_1"))
          (func (export "wasmrule_manifest") (result i64) (i64.const 0))
          (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 0))
          (func (export "wasmrule_on_event") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap()
}

#[test]
fn v2_actions_decode_and_malformed_ones_leave_nothing() {
    let limits = abi::OutputLimits {
        max_commands: 4,
        max_args: 8,
    };
    let s = |b: &[u8]| [&(b.len() as u32).to_le_bytes()[..], b].concat();
    let publish = [
        &[1u8][..],
        &s(b"t/1"),
        &s(b"\x00pay"),
        &[1, 1],
        &1u32.to_le_bytes(),
        &s(b"k"),
        &s(b"v"),
    ]
    .concat();
    let redis = [&[0u8][..], &2u32.to_le_bytes(), &s(b"DEL"), &s(b"k")].concat();
    let sub = [&[2u8][..], &s(b"c1"), &s(b"a/#"), &[0]].concat();
    let unsub = [&[3u8][..], &s(b"c1"), &s(b"a/#")].concat();
    let buf = [
        &[0u8][..],
        &4u32.to_le_bytes(),
        &redis,
        &publish,
        &sub,
        &unsub,
    ]
    .concat();
    let (mut out, mut actions) = (Commands::new(), Vec::new());
    assert_eq!(
        abi::decode_result_v2(&buf, limits, &mut out, &mut actions).unwrap(),
        4
    );
    assert_eq!(out.get(0).unwrap().to_string(), "DEL k");
    assert_eq!(
        actions.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            r#"MQTT PUBLISH t/1 qos=1 retain=1 prop:k=v payload="\x00pay""#,
            "MQTT SUBSCRIBE c1 a/# qos=0",
            "MQTT UNSUBSCRIBE c1 a/#",
        ]
    );
    let bad_qos = [
        &[0u8][..],
        &1u32.to_le_bytes(),
        &[2],
        &s(b"c1"),
        &s(b"a"),
        &[2],
    ]
    .concat();
    let bad_kind = [&[0u8][..], &1u32.to_le_bytes(), &[9]].concat();
    let truncated = buf[..buf.len() - 1].to_vec();
    let too_many = [&[0u8][..], &5u32.to_le_bytes()].concat();
    for (bad, want) in [
        (bad_qos, "QoS 2"),
        (bad_kind, "kind 9"),
        (truncated, "runs past the end"),
        (too_many, "5 commands"),
    ] {
        let err = abi::decode_result_v2(&bad, limits, &mut out, &mut actions)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{want:?} not in {err:?}");
        assert_eq!((out.len(), actions.len()), (1, 3), "partial output kept");
    }
}

/// A v2 rule in a warm instance: every event reads through the port it is given, gets
/// its own reply (not the last event's), and the port comes back each time.
#[test]
fn a_warm_v2_rule_reads_on_every_event() {
    let engine = engine_with(ReadBudget::default());
    let rule = engine.compile(&reader(IMPORTS)).unwrap();
    for i in 0..5 {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reply = Reply::Bulk(format!("reply {i}").into_bytes());
        let mut port: Option<Box<dyn RedisReads>> = Some(Box::new(Fake {
            reply: Ok(reply.clone()),
            seen: seen.clone(),
        }));
        assert_eq!(published(&rule, &mut port), encoded(&reply), "event {i}");
        assert!(port.is_some(), "the port is given back, event {i}");
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
    // Without a port the read is `unavailable`, also in the warm instance that had one.
    let mut none = None;
    assert_eq!(
        published(&rule, &mut none),
        ReadCode::Unavailable.code().to_le_bytes()
    );
    assert_eq!(rule.reuse_counts(), (6, 0));
}

/// The host writes a Redis reply into a warm instance's memory, where the module's own
/// marks do not see it (`reuse_marks.rs`): the host marks it, and the next event finds
/// the buffer as it was after instantiation. The rule traps if it does not.
#[test]
fn a_reply_the_host_wrote_is_gone_at_the_next_event() {
    let text = format!(
        r#"(module
          {IMPORTS}
          (memory (export "memory") 1)
          (func (export "wasmrule_abi_version_2"))
          (data (i32.const 0) "{{\"name\":\"r\",\"filters\":[\"a/+\"]}}")
          (data (i32.const 2048) "\02\00\00\00\03\00\00\00GET\01\00\00\00k")
          (func (export "wasmrule_manifest") (result i64) (i64.const 30))
          (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 4096))
          (func (export "wasmrule_on_event") (param i32 i32) (result i64) (local $n i32)
            (if (i64.ne (i64.load (i32.const 40000)) (i64.const 0)) (then unreachable))
            (local.set $n (call $read (i32.const 2048) (i32.const 16)))
            (if (i32.le_s (local.get $n) (i32.const 0)) (then unreachable))
            (drop (call $reply (i32.const 40000) (local.get $n)))
            ;; The five zero bytes at 1024: no actions.
            (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 5))))"#
    );
    let wasm = wat::parse_str(&text).unwrap();
    let engine = engine_with(ReadBudget::default());
    let rule = engine.compile(&wasm).unwrap();
    assert!(rule.marks_writes());
    let limits = InvokeLimits::from(rule.engine.limits());
    for i in 0..4 {
        let mut port: Option<Box<dyn RedisReads>> = Some(Box::new(Fake {
            reply: Ok(Reply::Bulk(b"a reply of some bytes".to_vec())),
            seen: Arc::new(Mutex::new(Vec::new())),
        }));
        let (mut out, mut actions) = (Commands::new(), Vec::new());
        rule.invoke_actions(b"{}", &mut out, &mut actions, &limits, &mut port)
            .unwrap_or_else(|e| panic!("event {i}: {e}"));
    }
    assert_eq!(rule.reuse_counts(), (4, 0));
}
