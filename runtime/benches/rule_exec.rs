//! Events per second per core for `store-last-message`, in-process: event JSON -> rule
//! -> validated commands, as a wasm module and as the same Rust code compiled natively.
//!
//! Run: `rules-wasm/build.sh && cargo bench -p wasmrule --bench rule_exec`
//!
//! Every variant runs on one thread for the same time, three rounds interleaved so
//! drift on a shared machine hits all of them alike; the median round counts. The
//! native baseline runs the rule crate's own function through the SDK's native ABI path
//! (`wasmrule_guest::abi::handle_json`) and the host's decoder, so both sides do the
//! same work: parse the event, parse the payload, build and encode the command, decode
//! and check it.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use wasmrule::Commands;
use wasmrule::engine::abi::{OutputLimits, decode_result};
use wasmrule::engine::{Engine, Limits, thread_cpu_time};
use wasmrule::{EventEncoder, Message};

const ROUND: Duration = Duration::from_millis(1500);

fn main() {
    // `cargo test --benches` runs bench targets too; a smoke run is enough there.
    let quick = std::env::args().any(|a| a == "--test");
    let round = if quick {
        Duration::from_millis(50)
    } else {
        ROUND
    };

    let wasm_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules-wasm/dist/store-last-message.wasm");
    let bytes = std::fs::read(&wasm_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run rules-wasm/build.sh first",
            wasm_path.display()
        )
    });
    let engine = Engine::new(Limits::default(), 4).expect("engine");
    let rule = engine.compile(&bytes).expect("rule compiles");
    // The same rule in a fresh instance per event (no warm instance reset in place).
    let fresh_engine = Engine::new(Limits::default(), 4)
        .expect("engine")
        .fresh_instances();
    let fresh_rule = fresh_engine.compile(&bytes).expect("rule compiles");
    // The same rule with fuel metering instead of the epoch deadline.
    let fuel_engine = Engine::with_fuel(Limits::default(), 4, 10_000_000).expect("engine");
    let fuel_rule = fuel_engine.compile(&bytes).expect("rule compiles");

    // The demo's device payload, as the runtime would encode it.
    let mut m = Message::new(
        "store-last-message/emqx_c",
        &br#"{"message":"this is a stored message","clientId":"emqx_c","duration":"102s","temp":44.37,"hum":32.52}"#[..],
        1,
        false,
    );
    m.clientid = None;
    let mut event = Vec::new();
    EventEncoder::new("wasmrule@bench").publish_event(&m, &mut event);
    let limits = OutputLimits {
        max_commands: 1000,
        max_args: 1024,
    };

    // Both paths must agree before we time them.
    let mut a = Commands::new();
    rule.invoke(&event, &mut a).unwrap();
    let mut b = Commands::new();
    decode_result(
        &wasmrule_guest::abi::handle_json(&event, store_last_message::store_last_message),
        limits,
        &mut b,
    )
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        a.get(0).unwrap().to_string(),
        "HSET emqx_messages emqx_c 44.37"
    );

    let mut out = Commands::new();
    let native = || {
        let buf = wasmrule_guest::abi::handle_json(
            black_box(&event),
            store_last_message::store_last_message,
        );
        out.clear();
        decode_result(&buf, limits, &mut out).unwrap();
    };
    let mut out2 = Commands::new();
    let wasm = || {
        out2.clear();
        rule.invoke(black_box(&event), &mut out2).unwrap();
    };
    let mut out5 = Commands::new();
    let wasm_fresh = || {
        out5.clear();
        fresh_rule.invoke(black_box(&event), &mut out5).unwrap();
    };
    let mut out3 = Commands::new();
    let wasm_fuel = || {
        out3.clear();
        fuel_rule.invoke(black_box(&event), &mut out3).unwrap();
    };
    // The same rule's parsing as an ABI v2 module that reads nothing.
    let v2_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules-wasm/dist/bench-v2-noread.wasm");
    let v2_rule = engine
        .compile(&std::fs::read(&v2_path).expect("rules-wasm/dist/bench-v2-noread.wasm"))
        .expect("v2 rule compiles");
    assert_eq!(v2_rule.abi(), 2);
    let v2_limits = wasmrule::engine::InvokeLimits::from(engine.limits());
    let (mut out4, mut actions) = (Commands::new(), Vec::new());
    let mut no_port = None;
    let wasm_v2 = || {
        out4.clear();
        v2_rule
            .invoke_actions(
                black_box(&event),
                &mut out4,
                &mut actions,
                &v2_limits,
                &mut no_port,
            )
            .unwrap();
    };
    // The same rule written in C with the C SDK (guest-sdk/c), warm: the SDK's JSON
    // reader against serde_json's (no native twin; compare with the Rust rule's wasm).
    let c_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules-wasm/dist/store-last-message-c.wasm");
    let c_rule = engine
        .compile(&std::fs::read(&c_path).expect("rules-wasm/dist/store-last-message-c.wasm"))
        .expect("C rule compiles");
    let mut out6 = Commands::new();
    c_rule.invoke(&event, &mut out6).unwrap();
    assert_eq!(out6, a, "the C rule writes what the Rust rule writes");
    let wasm_c = || {
        out6.clear();
        c_rule.invoke(black_box(&event), &mut out6).unwrap();
    };
    let mut enc_out = Vec::new();
    let encoder = EventEncoder::new("wasmrule@bench");
    let encode = || encoder.publish_event(black_box(&m), &mut enc_out);

    type Variant<'a> = (&'static str, Box<dyn FnMut() + 'a>);
    let mut variants: Vec<Variant> = vec![
        ("native (same rule crate)", Box::new(native)),
        ("wasm (warm instance, reset)", Box::new(wasm)),
        ("wasm (fresh instance per event)", Box::new(wasm_fresh)),
        ("event JSON encoding only", Box::new(encode)),
        ("wasm, fuel instead of epoch", Box::new(wasm_fuel)),
        ("wasm ABI v2, no read", Box::new(wasm_v2)),
        ("wasm, the rule in C (C SDK), warm", Box::new(wasm_c)),
    ];
    // `cargo bench --bench rule_exec -- wasm` runs only variants whose name contains
    // "wasm" (for profiling one of them).
    if let Some(only) = std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        variants.retain(|(name, _)| name.contains(&only));
    }
    let mut rates = vec![Vec::new(); variants.len()];
    for _ in 0..3 {
        for (i, (_, f)) in variants.iter_mut().enumerate() {
            rates[i].push(measure(round, f));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let medians: Vec<f64> = rates.iter_mut().map(median).collect();
    println!("store-last-message, one thread, median of 3 rounds of {round:?}");
    println!("{:<36} {:>14} {:>12}", "variant", "events/s", "us/event");
    for ((name, _), r) in variants.iter().zip(&medians) {
        println!("{name:<36} {r:>14.0} {:>12.3}", 1e6 / r);
    }
    if medians.len() == 7 {
        println!("ratio wasm/native: {:.3}", medians[1] / medians[0]);
        println!("ratio wasm fresh/native: {:.3}", medians[2] / medians[0]);
        println!("ratio fuel/epoch: {:.3}", medians[4] / medians[1]);
        println!("ratio v2 (no read)/v1: {:.3}", medians[5] / medians[1]);
    }
    println!(
        "warm instances: store-last-message reused {} times, dropped {}",
        rule.reuse_counts().0,
        rule.reuse_counts().1
    );
    spin_until_stopped(&engine, if quick { 3 } else { 50 });
}

/// How long a rule that spins (`loop {}`) runs before the CPU deadline stops it: thread
/// CPU time and wall time per invocation, against the deadline plus one tick.
fn spin_until_stopped(engine: &Engine, n: usize) {
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "wasmrule_abi_version_1"))
           (data (i32.const 0) "{\"name\":\"spin\",\"filters\":[\"a/#\"]}")
           (func (export "wasmrule_manifest") (result i64) (i64.const 33))
           (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 4096))
           (func (export "wasmrule_on_event") (param i32 i32) (result i64)
             (loop $l (br $l)) (i64.const 0)))"#,
    )
    .expect("spin rule");
    let rule = engine.compile(&wasm).expect("spin rule loads");
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    let mut out = Commands::new();
    for _ in 0..n {
        let (c0, w0) = (thread_cpu_time(), Instant::now());
        let r = rule.invoke(b"{}", &mut out);
        assert!(r.is_err(), "a spinning rule must be stopped");
        cpu.push(thread_cpu_time() - c0);
        wall.push(w0.elapsed());
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let ((c0, c1, c2), (w0, w1, w2)) = (stats(&mut cpu), stats(&mut wall));
    println!(
        "loop {{}} with a {:?} CPU deadline, {n} invocations: CPU min/median/max \
         {c0:.2?} / {c1:.2?} / {c2:.2?}, wall {w0:.2?} / {w1:.2?} / {w2:.2?}",
        engine.limits().timeout
    );
}

/// Calls `f` repeatedly for `d`; returns calls per second.
fn measure(d: Duration, f: &mut dyn FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < d {
        for _ in 0..256 {
            f();
        }
        n += 256;
    }
    n as f64 / start.elapsed().as_secs_f64()
}
