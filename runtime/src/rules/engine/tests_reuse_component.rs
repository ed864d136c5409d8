//! Warm component instances reset in place (`reuse_component.rs`): a component plants
//! a trace in every place its core instance can keep state (a mutable global of each
//! kind it has, a table element, a data page, a zero page, its allocator's heap
//! pointer), and the next event must see none of it. As in `tests_reuse.rs`, the rule
//! reports what it found as a bit mask in its one command (`LEAK <8 hex digits>`): bit
//! 0 the i32 global, 1 the i64 global, 2 the table, 3 the data page, 4 the zero page,
//! 5 the heap pointer `realloc` bumps. An event whose topic starts with `t` traps after
//! planting.
//!
//! The component is written out in the text format, world `wasmrule:rule@1.0.0` by
//! hand: the event record arrives through a pointer (it flattens to more than 16
//! values) and both results are returned through static areas.

use super::reuse_component::test_hooks::SKIP_RESET;
use super::*;

const EVERY_PLACE: &str = r##"(component
  (core module $m
    (memory (export "mem") 2 10)
    (global $heap (mut i32) (i32.const 65536))
    (global $g (mut i32) (i32.const 7))
    (global $l (mut i64) (i64.const 8))
    (table $t 2 funcref)
    (elem declare func $f)
    (func $f)
    (data (i32.const 100) "orig")
    (data (i32.const 1024) "\00\00\00\00\10\04\00\00\01\00\00\00")
    (data (i32.const 1040) "\24\04\00\00\02\00\00\00")
    (data (i32.const 1060) "\4c\04\00\00\04\00\00\00\56\04\00\00\08\00\00\00")
    (data (i32.const 1100) "LEAK")
    (data (i32.const 1110) "????????")
    (data (i32.const 2048) "\34\08\00\00\01\00\00\00\00\00\00\00\00\00\00\00\00\00\00\00\48\08\00\00\01\00\00\00")
    (data (i32.const 2100) "r")
    (data (i32.const 2120) "\5c\08\00\00\03\00\00\00")
    (data (i32.const 2140) "a/+")
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                             (i32.sub (i32.const 0) (local.get 2))))
      (global.set $heap (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func (export "manifest") (result i32) (i32.const 2048))
    (func $hex (param $v i32) (param $at i32)
      (local $i i32) (local $n i32)
      (loop $l
        (local.set $n (i32.and (i32.shr_u (local.get $v)
          (i32.sub (i32.const 28) (i32.shl (local.get $i) (i32.const 2)))) (i32.const 15)))
        (i32.store8 (i32.add (local.get $at) (local.get $i))
          (i32.add (local.get $n)
            (select (i32.const 48) (i32.const 87) (i32.lt_u (local.get $n) (i32.const 10)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (i32.const 8)))))
    (func (export "on-event") (param $e i32) (result i32) (local $m i32)
      (if (i32.ne (global.get $g) (i32.const 7)) (then (local.set $m (i32.or (local.get $m) (i32.const 1)))))
      (if (i64.ne (global.get $l) (i64.const 8)) (then (local.set $m (i32.or (local.get $m) (i32.const 2)))))
      (if (i32.eqz (ref.is_null (table.get $t (i32.const 0)))) (then (local.set $m (i32.or (local.get $m) (i32.const 4)))))
      (if (i32.ne (i32.load (i32.const 100)) (i32.const 0x6769726f)) (then (local.set $m (i32.or (local.get $m) (i32.const 8)))))
      (if (i32.ne (i32.load (i32.const 70000)) (i32.const 0)) (then (local.set $m (i32.or (local.get $m) (i32.const 16)))))
      (if (i32.gt_u (global.get $heap) (i32.const 73728)) (then (local.set $m (i32.or (local.get $m) (i32.const 32)))))
      (call $hex (local.get $m) (i32.const 1110))
      (global.set $g (i32.const 99))
      (global.set $l (i64.const 99))
      (table.set $t (i32.const 0) (ref.func $f))
      (i32.store (i32.const 100) (i32.const 0x58585858))
      (i32.store (i32.const 70000) (i32.const 1))
      (global.set $heap (i32.add (global.get $heap) (i32.const 10000)))
      ;; topic starting with `t`: trap after planting
      (if (i32.eq (i32.load8_u (i32.load (i32.add (local.get $e) (i32.const 40)))) (i32.const 116))
        (then unreachable))
      (i32.const 1024)))
  (core instance $i (instantiate $m))
  (alias core export $i "mem" (core memory $mem))
  (alias core export $i "realloc" (core func $realloc))
  (type $event (record (field "event" string) (field "id" string) (field "clientid" (option string))
    (field "username" (option string)) (field "topic" string) (field "qos" u8) (field "retain" bool)
    (field "payload" (list u8)) (field "timestamp" u64) (field "node" string) (field "json" string)))
  (type $command (list (list u8)))
  (type $manifest (record (field "name" string) (field "version" (option string)) (field "filters" (list string))))
  (func $on-event (param "event" $event) (result (result (list $command) (error string)))
    (canon lift (core func $i "on-event") (memory $mem) (realloc $realloc)))
  (func $manifest (result $manifest)
    (canon lift (core func $i "manifest") (memory $mem) (realloc $realloc)))
  (instance $h
    (export "event" (type $event))
    (export "command" (type $command))
    (export "rule-manifest" (type $manifest))
    (export "manifest" (func $manifest))
    (export "on-event" (func $on-event)))
  (export "wasmrule:rule/handler@1.0.0" (instance $h)))
"##;

fn every_place() -> Vec<u8> {
    wat::parse_str(EVERY_PLACE).expect("test component")
}

fn invoke(rule: &Rule, topic: &str) -> Result<String, RuleError> {
    let event = format!(r#"{{"event":"message.publish","topic":"{topic}","payload":"x"}}"#);
    let mut out = Commands::new();
    rule.invoke(event.as_bytes(), &mut out)?;
    Ok(out
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("; "))
}

const CLEAN: &str = "LEAK 00000000";

fn rule() -> Rule {
    let rule = Engine::new(Limits::default(), 2)
        .unwrap()
        .compile(&every_place())
        .unwrap();
    assert!(rule.resettable(), "the test component is planned for reuse");
    rule
}

#[test]
fn a_warm_component_instance_keeps_no_trace_of_the_event_before() {
    let rule = rule();
    for i in 0..6 {
        assert_eq!(invoke(&rule, "a/1").unwrap(), CLEAN, "event {i}");
    }
    assert_eq!(
        rule.reuse_counts(),
        (6, 0),
        "one warm instance, reset six times"
    );
}

#[test]
fn without_the_reset_every_trace_shows() {
    // The checks above can fail: with the reset skipped, the second event sees all
    // six traces of the first.
    let rule = rule();
    SKIP_RESET.with(|s| s.set(true));
    let first = invoke(&rule, "a/1");
    let second = invoke(&rule, "a/1");
    SKIP_RESET.with(|s| s.set(false));
    assert_eq!(first.unwrap(), CLEAN);
    assert_eq!(second.unwrap(), "LEAK 0000003f");
}

#[test]
fn a_trapped_event_discards_its_instance_and_the_next_sees_nothing() {
    let rule = rule();
    assert_eq!(invoke(&rule, "a/1").unwrap(), CLEAN);
    let e = invoke(&rule, "t/1").unwrap_err();
    assert!(matches!(e, RuleError::Trap(_)), "{e:?}");
    assert_eq!(invoke(&rule, "a/1").unwrap(), CLEAN);
    assert_eq!(invoke(&rule, "a/1").unwrap(), CLEAN);
    let (reused, discarded) = rule.reuse_counts();
    assert_eq!((reused, discarded), (3, 1));
}

#[test]
fn a_warm_component_from_the_cache_keeps_no_trace_either() {
    let (_dir, compiled, loaded) = super::tests_reuse::compiled_then_cached(&every_place());
    for rule in [&compiled, &loaded] {
        for i in 0..4 {
            assert_eq!(invoke(rule, "a/1").unwrap(), CLEAN, "event {i}");
        }
        assert_eq!(rule.reuse_counts(), (4, 0));
    }
}

#[test]
fn the_rewritten_component_is_valid_with_its_function_bodies() {
    let i = super::reuse_component_plan::instrument(&every_place());
    assert_eq!(i.plan.unwrap().memories, 1);
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&i.bytes)
        .unwrap();
}

#[test]
fn components_that_can_hold_state_the_reset_cannot_reach_run_fresh() {
    let resource = EVERY_PLACE.replacen(
        "(core instance $i (instantiate $m))",
        "(type $r (resource (rep i32))) (core instance $i (instantiate $m))",
        1,
    );
    let nested = EVERY_PLACE.replacen(
        "(core instance $i (instantiate $m))",
        "(component $inner (core module $n (global (mut i32) (i32.const 0))) \
           (core instance (instantiate $n))) \
         (core instance $i (instantiate $m))",
        1,
    );
    for (what, text) in [("a resource type", resource), ("stateful nesting", nested)] {
        let bytes = wat::parse_str(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
        let rule = Engine::new(Limits::default(), 2)
            .unwrap()
            .compile(&bytes)
            .unwrap();
        assert!(!rule.resettable(), "{what}");
        // Still correct, in a fresh instance per event.
        for _ in 0..3 {
            assert_eq!(invoke(&rule, "a/1").unwrap(), CLEAN, "{what}");
        }
        assert_eq!(rule.reuse_counts(), (0, 0), "{what}");
    }
}

#[test]
fn a_component_exporting_the_accessors_name_itself_is_refused() {
    // Its own `reset` would be trusted to isolate events.
    let text = EVERY_PLACE.replacen(
        r#"(export "wasmrule:rule/handler@1.0.0" (instance $h))"#,
        r#"(export "wasmrule:rule/handler@1.0.0" (instance $h)) (export "wasmrule-reset" (instance $h))"#,
        1,
    );
    assert_ne!(text, EVERY_PLACE);
    let bytes = wat::parse_str(&text).unwrap();
    let e = Engine::new(Limits::default(), 2)
        .unwrap()
        .compile(&bytes)
        .unwrap_err();
    assert!(e.to_string().contains("`wasmrule-reset`"), "{e}");
}

#[test]
fn a_snapshot_that_fails_runs_the_event_fresh() {
    // Two tables of 6,000 elements: the accessor's copy of both (12,000) is past the
    // engine's 10,000 per table, so `save` traps. The events must not notice.
    let text = EVERY_PLACE
        .replacen("(table $t 2 funcref)", "(table $t 6000 funcref)", 1)
        .replacen(
            "(core instance $i (instantiate $m))",
            r#"(core module $n (table 6000 funcref)
                 (func (export "w") (table.set 0 (i32.const 0) (ref.null func))))
               (core instance (instantiate $n))
               (core instance $i (instantiate $m))"#,
            1,
        );
    let bytes = wat::parse_str(&text).unwrap();
    let rule = Engine::new(Limits::default(), 2)
        .unwrap()
        .compile(&bytes)
        .unwrap();
    assert!(rule.resettable());
    for i in 0..12 {
        assert_eq!(invoke(&rule, "a/1").unwrap(), CLEAN, "event {i}");
    }
    let (reused, discarded) = rule.reuse_counts();
    assert_eq!(reused, 0);
    // Tried until reusing stops paying (8 failures), then fresh without trying.
    assert_eq!(discarded, 8);
}

#[test]
fn instances_made_of_exports_do_not_count_against_the_limit() {
    // wasmtime's 64 core instances per component count instantiated modules only; a
    // component bundles exports into instances freely (componentize-py's Python has
    // 38 modules and 107 core instances).
    let bundles: String = (0..80)
        .map(|_| r#"(core instance (export "m" (memory $mem)))"#)
        .collect();
    let text = EVERY_PLACE.replacen(
        r#"(alias core export $i "realloc" (core func $realloc))"#,
        &format!(r#"(alias core export $i "realloc" (core func $realloc)) {bundles}"#),
        1,
    );
    let bytes = wat::parse_str(&text).unwrap();
    let rule = Engine::new(Limits::default(), 2)
        .unwrap()
        .compile(&bytes)
        .unwrap();
    assert!(rule.resettable());
    for i in 0..3 {
        assert_eq!(invoke(&rule, "a/1").unwrap(), CLEAN, "event {i}");
    }
    assert_eq!(rule.reuse_counts(), (3, 0));
}

#[test]
fn a_component_at_the_engines_64_instantiated_modules_runs_fresh() {
    // 63 more instances of an empty module: 64 with the rule's, the engine's most; the
    // accessor would be the 65th, so the component is left as it is and still loads.
    let more: String = (0..63)
        .map(|_| "(core instance (instantiate $z))")
        .collect();
    let text = EVERY_PLACE.replacen(
        "(core instance $i (instantiate $m))",
        &format!("(core module $z) {more} (core instance $i (instantiate $m))"),
        1,
    );
    let bytes = wat::parse_str(&text).unwrap();
    let rule = Engine::new(Limits::default(), 2)
        .unwrap()
        .compile(&bytes)
        .unwrap();
    assert!(!rule.resettable());
    assert_eq!(invoke(&rule, "a/1").unwrap(), CLEAN);
    assert_eq!(invoke(&rule, "a/1").unwrap(), CLEAN);
}
