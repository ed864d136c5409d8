//! Engine behaviour on hand-written modules: ABI checks at load, and every way an
//! invocation can fail.

use super::*;

/// A rule in WAT whose pieces can be swapped: `manifest` JSON, the body of
/// `wasmrule_on_event` (which must leave an i64 on the stack), extra module fields.
struct Wat<'a> {
    manifest: &'a str,
    on_event: &'a str,
    extra: &'a str,
    version_export: &'a str,
}

impl Default for Wat<'_> {
    fn default() -> Self {
        Wat {
            manifest: r#"{"name":"t","filters":["a/+"]}"#,
            // Returns the result buffer at 1024 (one command: INCR n), 21 bytes.
            on_event: "(i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 22))",
            extra: "",
            version_export: "wasmrule_abi_version_1",
        }
    }
}

impl Wat<'_> {
    fn build(&self) -> Vec<u8> {
        let m = self.manifest.replace('\\', "\\\\").replace('"', "\\\"");
        let text = format!(
            r#"(module
              (memory (export "memory") 1)
              (func (export "{version}"))
              (data (i32.const 0) "{m}")
              (data (i32.const 1024) "\00\01\00\00\00\02\00\00\00\04\00\00\00INCR\01\00\00\00n")
              (func (export "wasmrule_manifest") (result i64)
                (i64.const {mlen}))
              (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 4096))
              (func (export "wasmrule_on_event") (param i32 i32) (result i64) {body})
              {extra})"#,
            version = self.version_export,
            mlen = self.manifest.len(),
            body = self.on_event,
            extra = self.extra,
        );
        wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{text}"))
    }
}

fn engine() -> Engine {
    Engine::new(Limits::default(), 8).unwrap()
}

fn run(rule: &Rule) -> Result<Vec<String>, RuleError> {
    let mut out = Commands::new();
    rule.invoke(br#"{"topic":"a/b"}"#, &mut out)?;
    Ok(out.iter().map(|c| c.to_string()).collect())
}

#[test]
fn minimal_rule_loads_and_runs() {
    let rule = engine().compile(&Wat::default().build()).unwrap();
    assert_eq!(rule.manifest().name, "t");
    assert_eq!(rule.manifest().filters, vec!["a/+"]);
    assert_eq!(run(&rule).unwrap(), vec!["INCR n"]);
}

#[test]
fn event_bytes_reach_guest_memory() {
    // Echo the event back as the argument of one command: build the header at 2048
    // then point the result at it; the event sits right after it at 4096.
    let on_event = r#"
        (i32.store8 (i32.const 4075) (i32.const 0))
        (i32.store (i32.const 4076) (i32.const 1))
        (i32.store (i32.const 4080) (i32.const 2))
        (i32.store (i32.const 4084) (i32.const 1))
        (i32.store8 (i32.const 4088) (i32.const 69))
        (i32.store (i32.const 4089) (i32.const 0))
        (i32.store (i32.const 4089) (local.get 1))
        (i64.or (i64.shl (i64.const 4075) (i64.const 32))
                (i64.extend_i32_u (i32.add (local.get 1) (i32.const 18))))"#;
    // The header is 18 bytes (4075..4093); alloc puts the event right after it.
    let wasm = wat::parse_str(format!(
        r##"(module
          (memory (export "memory") 1)
          (func (export "wasmrule_abi_version_1"))
          (data (i32.const 0) "{{\"name\":\"echo\",\"filters\":[\"#\"]}}")
          (func (export "wasmrule_manifest") (result i64) (i64.const 31))
          (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 4093))
          (func (export "wasmrule_on_event") (param i32 i32) (result i64) {on_event}))"##
    ))
    .unwrap();
    let rule = engine().compile(&wasm).unwrap();
    let mut out = Commands::new();
    rule.invoke(b"hello", &mut out).unwrap();
    let args: Vec<&[u8]> = out.get(0).unwrap().args().collect();
    assert_eq!(args, vec![&b"E"[..], b"hello"]);
}

fn load_err(wasm: &[u8]) -> String {
    engine().compile(wasm).unwrap_err().to_string()
}

#[test]
fn load_rejects_non_rules_with_reasons() {
    assert!(load_err(b"hello, I am text").contains("not a WebAssembly module"));
    assert!(load_err(b"(module)").contains("WebAssembly text"));
    assert!(load_err(b"\0asm").contains("header"));
    let good = Wat::default().build();
    assert!(load_err(&good[..good.len() / 2]).contains("invalid WebAssembly"));
    // An empty component is valid WebAssembly but not a rule.
    let empty_component = load_err(&[0, b'a', b's', b'm', 0x0d, 0, 1, 0]);
    assert!(
        empty_component.contains("not a wasmrule rule component"),
        "{empty_component}"
    );
    let plain = wat::parse_str("(module (memory (export \"memory\") 1))").unwrap();
    assert!(load_err(&plain).contains("not a wasmrule rule"));
}

#[test]
fn load_names_both_abi_versions() {
    let v3 = Wat {
        version_export: "wasmrule_abi_version_3",
        ..Wat::default()
    }
    .build();
    let err = load_err(&v3);
    assert!(
        err.contains("ABI version 3") && err.contains("supports versions 1 to 2"),
        "{err}"
    );
}

#[test]
fn load_rejects_imports_and_bad_exports() {
    // Imports must come first in WAT, so this module is written out.
    let text = r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "wasmrule_abi_version_1")))"#;
    assert!(load_err(&wat::parse_str(text).unwrap()).contains("wasi_snapshot_preview1::fd_write"));

    let missing = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "wasmrule_abi_version_1"))
           (func (export "wasmrule_manifest") (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    assert!(load_err(&missing).contains("missing export `wasmrule_alloc`"));

    let wrong_sig = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "wasmrule_abi_version_1"))
           (func (export "wasmrule_manifest") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let err = load_err(&wrong_sig);
    assert!(
        err.contains("`wasmrule_manifest` must be a function () -> (i64)"),
        "{err}"
    );

    let no_memory = wat::parse_str(r#"(module (func (export "wasmrule_abi_version_1")))"#).unwrap();
    assert!(load_err(&no_memory).contains("missing export `memory`"));

    // The engine allows multi-memory for components; a core rule still has one.
    let two = wat::parse_str(
        r#"(module (memory (export "memory") 1) (memory 1) (func (export "wasmrule_abi_version_1")))"#,
    )
    .unwrap();
    let err = load_err(&two);
    assert!(err.contains("defines 2 memories; a rule has one"), "{err}");
}

#[test]
fn load_checks_the_manifest() {
    let bad_filter = Wat {
        manifest: r#"{"name":"t","filters":["a/#/b"]}"#,
        ..Wat::default()
    };
    assert!(load_err(&bad_filter.build()).contains("filter \"a/#/b\" is invalid"));
    let oob = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "wasmrule_abi_version_1"))
           (func (export "wasmrule_manifest") (result i64) (i64.const 0x0000fff0_00000100))
           (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 0))
           (func (export "wasmrule_on_event") (param i32 i32) (result i64) (i64.const 0)))"#,
    )
    .unwrap();
    let err = load_err(&oob);
    assert!(
        err.contains("manifest at 65520..+256 is outside linear memory"),
        "{err}"
    );
    // A manifest (pointer, length) running past the end of memory is that, whatever
    // its length; a manifest inside memory but over the ABI's 64 KiB is that.
    let manifest = |pages: u32, packed: u64| {
        wat::parse_str(format!(
            r#"(module (memory (export "memory") {pages}) (func (export "wasmrule_abi_version_1"))
               (func (export "wasmrule_manifest") (result i64) (i64.const {packed}))
               (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 0))
               (func (export "wasmrule_on_event") (param i32 i32) (result i64) (i64.const 0)))"#
        ))
        .unwrap()
    };
    let err = load_err(&manifest(1, 100_000));
    assert!(
        err.contains("the manifest at 0..+100000 is outside linear memory (65536 bytes)")
            && !err.contains("output too large"),
        "{err}"
    );
    let err = load_err(&manifest(2, 100_000));
    assert!(
        err.contains("the manifest is 100000 bytes, above the ABI's limit of 65536 bytes"),
        "{err}"
    );
}

#[test]
fn memory_or_table_over_the_limits_is_not_called_invalid() {
    let big = wat::parse_str(
        r#"(module (memory (export "memory") 600) (func (export "wasmrule_abi_version_1")))"#,
    )
    .unwrap();
    let err = load_err(&big);
    assert!(
        err.contains("declares a linear memory of 39321600 bytes (600 pages)")
            && err.contains("limit of 33554432 bytes (32 MiB, limits.max_memory_mb)")
            && !err.contains("invalid"),
        "{err}"
    );
    let table = Wat {
        extra: "(table 20000 funcref)",
        ..Wat::default()
    };
    let err = load_err(&table.build());
    assert!(
        err.contains("declares a table of 20000 elements at start, above the limit of 10000")
            && !err.contains("invalid"),
        "{err}"
    );
}

#[test]
fn start_function_trap_fails_the_load() {
    let wasm = Wat {
        extra: "(func $s unreachable) (start $s)",
        ..Wat::default()
    }
    .build();
    let err = load_err(&wasm);
    assert!(
        err.contains("failed while reading its manifest") && err.contains("unreachable"),
        "{err}"
    );
}

fn rule_with(on_event: &str, extra: &str) -> Rule {
    engine()
        .compile(
            &Wat {
                on_event,
                extra,
                ..Wat::default()
            }
            .build(),
        )
        .unwrap()
}

#[test]
fn out_of_bounds_result_is_an_abi_error() {
    let rule = rule_with("(i64.const 0x0000ffff_00000010)", "");
    let err = run(&rule).unwrap_err();
    assert!(
        matches!(err, RuleError::Abi(ref m) if m.contains("result buffer at 65535..+16")),
        "{err}"
    );
}

#[test]
fn alloc_out_of_bounds_is_an_abi_error() {
    let wasm = wat::parse_str(
        r##"(module (memory (export "memory") 1) (func (export "wasmrule_abi_version_1"))
           (data (i32.const 0) "{\"name\":\"t\",\"filters\":[\"#\"]}")
           (func (export "wasmrule_manifest") (result i64) (i64.const 28))
           (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 65530))
           (func (export "wasmrule_on_event") (param i32 i32) (result i64) (i64.const 0)))"##,
    )
    .unwrap();
    let rule = engine().compile(&wasm).unwrap();
    let err = run(&rule).unwrap_err();
    assert!(
        matches!(err, RuleError::Abi(ref m) if m.contains("wasmrule_alloc buffer")),
        "{err}"
    );
}

#[test]
fn endless_loop_times_out() {
    let rule = rule_with("(loop $l (br $l)) (i64.const 0)", "");
    assert_eq!(
        run(&rule).unwrap_err(),
        RuleError::Timeout(Limits::default().timeout)
    );
}

#[test]
fn an_endless_loop_is_charged_cpu_time_not_just_wall_time() {
    let rule = rule_with("(loop $l (br $l)) (i64.const 0)", "");
    let before = thread_cpu_time();
    assert!(matches!(run(&rule), Err(RuleError::Timeout(_))));
    // It ran on this thread until it had used its deadline of CPU (the first tick is
    // charged whole, so at the earliest one tick before it).
    assert!(thread_cpu_time() - before >= Limits::default().timeout - TICK);
}

/// A rule that counts down from `n` and then returns INCR n: CPU work in proportion to
/// `n`, with no allocation.
fn busy_rule(engine: &Engine, n: u64) -> Rule {
    let body = format!(
        "(local $i i64) (local.set $i (i64.const {n}))
         (loop $l (local.set $i (i64.sub (local.get $i) (i64.const 1)))
                  (br_if $l (i64.gt_s (local.get $i) (i64.const 0))))
         (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 22))"
    );
    let wasm = Wat {
        on_event: &body,
        ..Wat::default()
    }
    .build();
    engine.compile(&wasm).unwrap()
}

/// Thread CPU time of one invocation of `rule`.
fn cpu_of(rule: &Rule) -> Duration {
    let t = thread_cpu_time();
    run(rule).unwrap();
    thread_cpu_time() - t
}

#[test]
fn time_descheduled_by_other_threads_is_not_charged_to_the_rule() {
    // A rule that needs about a quarter of its 10 ms deadline in CPU, run on five
    // times as many threads as there are cores, so that each invocation takes longer
    // than the deadline in wall time: none may time out. (With a wall-clock deadline
    // most of them did.) The cost per iteration is the highest of three calibrations:
    // on a busy VM one calibration can come out at half the cost of a later run, and
    // at 40% of the deadline that once made a correct invocation use all of it.
    let calibrate = Engine::new(
        Limits {
            timeout: Duration::from_secs(5),
            ..Limits::default()
        },
        2,
    )
    .unwrap();
    let probe = busy_rule(&calibrate, 5_000_000);
    let per_iter = (0..3)
        .map(|_| cpu_of(&probe).as_nanos().max(1) as f64 / 5_000_000.0)
        .fold(0.0, f64::max);
    let deadline = Limits::default().timeout;
    let n = (deadline.as_nanos() as f64 * 0.25 / per_iter) as u64;
    let threads = 5 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let engine = Engine::new(Limits::default(), threads as u32).unwrap();
    let rule = Arc::new(busy_rule(&engine, n));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let rule = rule.clone();
            std::thread::Builder::new()
                .stack_size(GUEST_THREAD_STACK)
                .spawn(move || (0..5).map(|_| run(&rule)).collect::<Vec<_>>())
                .unwrap()
        })
        .collect();
    for h in handles {
        for r in h.join().unwrap() {
            assert_eq!(r.unwrap(), vec!["INCR n"]);
        }
    }
}

#[test]
fn memory_bomb_hits_the_limit() {
    let rule = rule_with(
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (i64.const 0)",
        "",
    );
    let err = run(&rule).unwrap_err();
    assert!(
        matches!(err, RuleError::Memory { limit, .. } if limit == Limits::default().max_memory),
        "{err}"
    );
}

#[test]
fn deep_recursion_exhausts_the_wasm_stack() {
    let rule = rule_with(
        "(call $r (i32.const 0)) (i64.const 0)",
        "(func $r (param i32) (call $r (i32.add (local.get 0) (i32.const 1))))",
    );
    assert!(matches!(run(&rule).unwrap_err(), RuleError::Stack(_)));
}

#[test]
fn traps_and_rule_errors_are_typed() {
    let rule = rule_with("unreachable", "");
    assert!(matches!(run(&rule).unwrap_err(), RuleError::Trap(ref m) if m.contains("unreachable")));

    // "\01oops" at 2048: the rule reports an error.
    let rule = rule_with(
        "(i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const 5))",
        r#"(data (i32.const 2048) "\01oops")"#,
    );
    assert_eq!(run(&rule).unwrap_err(), RuleError::Rule("oops".into()));
}

#[test]
fn huge_output_is_refused_before_reading() {
    let rule = rule_with("(i64.const 0x00000000_7fffffff)", "");
    let err = run(&rule).unwrap_err();
    assert!(matches!(err, RuleError::OutputTooLarge { .. }));
    assert!(
        err.to_string()
            .contains("2147483647 bytes, limit is 1048576 (limits.max_output_bytes)"),
        "{err}"
    );
}

#[test]
fn each_event_gets_a_fresh_instance() {
    // A global counter: if instances were reused, the second call would see 1.
    let rule = rule_with(
        "(global.set $n (i32.add (global.get $n) (i32.const 1)))
         (if (i32.ne (global.get $n) (i32.const 1)) (then unreachable))
         (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 22))",
        "(global $n (mut i32) (i32.const 0))",
    );
    for _ in 0..3 {
        assert_eq!(run(&rule).unwrap(), vec!["INCR n"]);
    }
}

#[test]
fn concurrent_invocations_share_one_rule() {
    let rule = Arc::new(rule_with(
        "(i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 22))",
        "",
    ));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let rule = rule.clone();
            std::thread::spawn(move || (0..50).all(|_| run(&rule).is_ok()))
        })
        .collect();
    for t in threads {
        assert!(t.join().unwrap());
    }
}

/// Isolation between events, proven by a rule that checks for the previous event's
/// traces before leaving its own: in linear memory (an initial page, and pages it grew,
/// one of them past the pooled slot's resident part), in a table (an element set, and
/// the table grown) and in a mutable global. Seeing any trace makes it divide by zero,
/// so if instances, memories or tables were reused without a reset, the second event
/// would fail with that trap.
#[test]
fn no_event_sees_memory_table_or_globals_of_the_one_before() {
    // One initial page; the rule grows 40 pages (2.5 MiB), so the marker in page 40 lies
    // past the 1 MiB kept resident in a pooled slot (`KEEP_RESIDENT`).
    let check_then_mark = r#"
        ;; Memory: the original size, and no marker in the initial page.
        (if (i32.ne (memory.size) (i32.const 1)) (then (call $leak)))
        (if (i32.load (i32.const 60000)) (then (call $leak)))
        ;; Grow; the grown pages must be zero where the last event wrote.
        (if (i32.eq (memory.grow (i32.const 40)) (i32.const -1)) (then unreachable))
        (if (i32.load (i32.const 65636)) (then (call $leak)))
        (if (i32.load (i32.const 2621540)) (then (call $leak)))
        ;; Table: original size, element 0 still null.
        (if (i32.ne (table.size $t) (i32.const 2)) (then (call $leak)))
        (if (i32.eqz (ref.is_null (table.get $t (i32.const 0)))) (then (call $leak)))
        ;; Global: original value.
        (if (i32.ne (global.get $g) (i32.const 7)) (then (call $leak)))

        ;; Leave traces everywhere.
        (i32.store (i32.const 60000) (i32.const 0xdeadbeef))
        (i32.store (i32.const 65636) (i32.const 0xdeadbeef))
        (i32.store (i32.const 2621540) (i32.const 0xdeadbeef))
        (table.set $t (i32.const 0) (ref.func $leak))
        (drop (table.grow $t (ref.func $leak) (i32.const 3)))
        (global.set $g (i32.const 8))"#;
    let fields = "(table $t 2 100 funcref)
         (global $g (mut i32) (i32.const 7))
         (func $leak (drop (i32.div_u (i32.const 1) (i32.const 0))))
         (elem declare func $leak)";
    let rule = rule_with(
        &format!(
            "{check_then_mark} (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 22))"
        ),
        fields,
    );
    // The first event sees a pristine instance; every later one must too.
    for i in 0..5 {
        assert_eq!(
            run(&rule),
            Ok(vec!["INCR n".to_owned()]),
            "event {i} saw the previous event's state"
        );
    }
    // Also after an event that trapped having left its traces.
    let failing = rule_with(&format!("{check_then_mark} unreachable"), fields);
    for i in 0..3 {
        let err = run(&failing).unwrap_err();
        assert!(
            matches!(err, RuleError::Trap(ref m) if m.contains("unreachable")),
            "event {i} saw the previous (trapped) event's state: {err}"
        );
    }
}

#[test]
fn wasm_stack_cap_above_a_quarter_of_the_thread_stack_is_refused() {
    let too_big = Limits {
        max_wasm_stack: MAX_WASM_STACK + 1,
        ..Limits::default()
    };
    let err = Engine::new(too_big, 2).err().expect("refused").to_string();
    assert!(err.contains("a quarter of the native stack"), "{err}");
    assert!(
        Engine::new(
            Limits {
                max_wasm_stack: MAX_WASM_STACK,
                ..Limits::default()
            },
            2
        )
        .is_ok()
    );
}

/// A start function that recurses until the wasm stack cap, loaded from a thread with a
/// small native stack (like a tokio blocking thread, 2 MiB, here 256 KiB) under the
/// largest cap allowed: it must fail the load with `stack`, not overflow the caller's
/// stack (which would kill the test process), because manifest reads run on a thread
/// of their own with `GUEST_THREAD_STACK`.
#[test]
fn deep_recursion_at_load_never_depends_on_the_callers_stack() {
    let engine = Engine::new(
        Limits {
            max_wasm_stack: MAX_WASM_STACK,
            ..Limits::default()
        },
        2,
    )
    .unwrap();
    let wasm = Wat {
        extra: "(func $r (param i32) (call $r (i32.add (local.get 0) (i32.const 1))))
                (func $s (call $r (i32.const 0)))
                (start $s)",
        ..Wat::default()
    }
    .build();
    let err = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || engine.compile(&wasm).unwrap_err())
        .unwrap()
        .join()
        .unwrap();
    assert!(
        matches!(err, LoadError::Start(RuleError::Stack(n)) if n == MAX_WASM_STACK),
        "{err}"
    );
}

#[test]
fn rules_with_the_same_bytes_share_their_code_while_one_is_alive() {
    let engine = engine();
    let bytes = Wat::default().build();
    let other = Wat {
        manifest: r#"{"name":"other","filters":["a/+"]}"#,
        ..Wat::default()
    }
    .build();
    let a = engine.compile(&bytes).unwrap();
    assert!(!a.from_cache(), "the first load compiles");
    let b = engine.compile(&bytes).unwrap();
    let c = engine.compile(&other).unwrap();
    assert!(a.shares_code_with(&b));
    assert!(b.from_cache(), "the second load takes the first one's code");
    assert!(!a.shares_code_with(&c));
    // Each has its own instances: both run, and a warm instance of one is not the
    // other's.
    for _ in 0..3 {
        assert_eq!(run(&a).unwrap(), ["INCR n"]);
        assert_eq!(run(&b).unwrap(), ["INCR n"]);
    }
    if engine.reuses_instances() {
        assert_eq!(a.reuse_counts().0, 3);
        assert_eq!(b.reuse_counts().0, 3);
    }
    // Once no rule holds the code, the same bytes compile again.
    drop((a, b));
    let d = engine.compile(&bytes).unwrap();
    assert!(!d.from_cache());
    assert_eq!(run(&d).unwrap(), ["INCR n"]);
}

/// The file mapped at `addr` in this process, if `addr` is in a file's mapping
/// (`/proc/self/maps`); `None` for anonymous memory.
fn mapped_file(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let (a, b) = words.next()?.split_once('-')?;
        let (a, b) = (
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        );
        let inode = words.nth(3)?;
        let path = words.next().unwrap_or_default();
        (a <= addr && addr < b && inode != "0").then(|| path.to_owned())
    })
}

#[test]
fn code_put_in_the_cache_runs_from_the_entry_s_mapped_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = Wat::default().build();
    let plain = engine().compile(&bytes).unwrap();
    assert_eq!(
        mapped_file(plain.image_start()),
        None,
        "no cache: anonymous memory"
    );
    let with_cache = || engine().with_cache(super::cache::Cache::open(dir.path()).unwrap());
    let a = with_cache().compile(&bytes).unwrap();
    assert!(!a.from_cache());
    let file = mapped_file(a.image_start()).expect("compiled, then mapped from its entry");
    assert!(file.ends_with(".bin"), "{file}");
    assert_eq!(run(&a).unwrap(), ["INCR n"]);
    // Another engine has no live code to share: it loads the entry.
    let b = with_cache().compile(&bytes).unwrap();
    assert!(b.from_cache());
    assert_eq!(mapped_file(b.image_start()), Some(file));
    for _ in 0..3 {
        assert_eq!(run(&b).unwrap(), ["INCR n"]);
    }
}

/// Where an entry cannot be mapped executable (a cache on a `noexec` filesystem), the
/// compiler's copy serves after a compile, and a load from the cache reads the entry
/// into memory: the rule loads and runs either way.
#[test]
fn an_entry_that_cannot_be_mapped_is_read_instead() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = Wat::default().build();
    let with_cache = || engine().with_cache(super::cache::Cache::open(dir.path()).unwrap());
    super::REFUSE_MAP.set(true);
    let compiled = with_cache().compile(&bytes);
    let loaded = with_cache().compile(&bytes);
    super::REFUSE_MAP.set(false);
    let (compiled, loaded) = (compiled.unwrap(), loaded.unwrap());
    assert!(!compiled.from_cache() && loaded.from_cache());
    for rule in [&compiled, &loaded] {
        assert_eq!(mapped_file(rule.image_start()), None, "anonymous memory");
        assert_eq!(run(rule).unwrap(), ["INCR n"]);
    }
}
