//! Warm instances reset in place against fresh ones: a random stateful module (memory
//! with random data segments, mutable globals, a table with elements, passive segments)
//! whose `wasmrule_on_event` first hashes everything it can observe of its state and
//! then changes state at random (stores, fills, copies, global and table writes,
//! memory and table growth, segment drops, a trap). Each event of a random sequence runs
//! on an engine that reuses instances and on one that instantiates per event; the
//! results (the hash, or the error) must be the same. Any state that survives a reset
//! changes the next event's hash.
#![no_main]

use std::fmt::Write;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use wasmrule::Commands;
use wasmrule::engine::{Engine, Limits};

const MANIFEST: &str = r##"{"name":"f","filters":["#"]}"##;

#[derive(Debug, Arbitrary)]
enum Op {
    Store { addr: u16, value: u32 },
    Store64 { addr: u32, value: u64 },
    Fill { addr: u16, byte: u8, len: u8 },
    Copy { dst: u16, src: u16, len: u8 },
    EventCopy { addr: u16 },
    Global { index: u8, value: u32 },
    TableSet { index: u8, func: u8, null: bool },
    TableGrow { by: u8 },
    MemoryGrow { by: u8 },
    DataDrop,
    ElemDrop,
    MemoryInit { addr: u16 },
    TableInit { index: u8 },
    TrapIfEventStartsWith { byte: u8 },
}

#[derive(Debug, Arbitrary)]
struct Case {
    pages: u8,
    segments: Vec<(u16, Vec<u8>)>,
    passive: Option<Vec<u8>>,
    globals: Vec<(bool, bool, u32)>, // (i64?, exported?, initial)
    table: u8,
    elems: Vec<u8>,
    passive_elem: bool,
    ops: Vec<Op>,
    events: Vec<Vec<u8>>,
}

fn engines() -> &'static (Engine, Engine) {
    static E: OnceLock<(Engine, Engine)> = OnceLock::new();
    E.get_or_init(|| {
        let warm = Engine::new(Limits::default(), 4).expect("engine");
        assert!(
            warm.reuses_instances(),
            "PAGEMAP_SCAN is needed (Linux 6.7+)"
        );
        let fresh = Engine::new(Limits::default(), 4)
            .expect("engine")
            .fresh_instances();
        (warm, fresh)
    })
}

fn wat_bytes(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "\\{x:02x}");
        s
    })
}

fn module(c: &Case) -> String {
    let pages = 1 + c.pages % 3;
    let globals: Vec<_> = c.globals.iter().take(4).collect();
    let table = 1 + c.table % 5;
    let mut m = String::new();
    let mtext = MANIFEST.replace('"', "\\\"");
    let _ = write!(
        m,
        r#"(module
  (memory (export "memory") {pages} {max})
  (func (export "wasmrule_abi_version_1"))
  (data (i32.const 0) "{mtext}")
  (data (i32.const 1024) "\00\01\00\00\00\02\00\00\00\04\00\00\00HASH\10\00\00\00")
  (func (export "wasmrule_manifest") (result i64) (i64.const {mlen}))
  (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 4096))
  (type $ret (func (result i32)))
  (table $t {table} 16 funcref)
  (func $f0 (result i32) (i32.const 100))
  (func $f1 (result i32) (i32.const 101))
  (func $f2 (result i32) (i32.const 102))
  (func $f3 (result i32) (i32.const 103))
  (elem declare func $f0 $f1 $f2 $f3)
"#,
        max = pages + 3,
        mlen = MANIFEST.len(),
    );
    for (addr, bytes) in c.segments.iter().take(4) {
        let at = 8192 + (*addr as usize % 50000);
        let bytes: Vec<u8> = bytes.iter().copied().take(64).collect();
        let _ = writeln!(m, r#"  (data (i32.const {at}) "{}")"#, wat_bytes(&bytes));
    }
    let passive = c.passive.as_ref().map(|p| {
        let mut p: Vec<u8> = p.iter().copied().take(32).collect();
        if p.is_empty() {
            p.push(1);
        }
        p
    });
    if let Some(p) = &passive {
        let _ = writeln!(m, r#"  (data $p "{}")"#, wat_bytes(p));
    }
    let elems: Vec<u8> = c.elems.iter().take(table as usize).map(|e| e % 4).collect();
    if !elems.is_empty() {
        let names: Vec<String> = elems.iter().map(|e| format!("$f{e}")).collect();
        let _ = writeln!(
            m,
            "  (elem (table $t) (i32.const 0) func {})",
            names.join(" ")
        );
    }
    if c.passive_elem {
        let _ = writeln!(m, "  (elem $e func $f3 $f2)");
    }
    for (i, (wide, exported, init)) in globals.iter().enumerate() {
        let export = if *exported {
            format!(r#"(export "g{i}")"#)
        } else {
            String::new()
        };
        let ty = if *wide { "i64" } else { "i32" };
        let _ = writeln!(
            m,
            "  (global $g{i} {export} (mut {ty}) ({ty}.const {init}))"
        );
    }
    // Observe: hash memory (size and every byte), globals, table (size and what each
    // element calls), and the passive segments (memory.init / table.init trap if they
    // were dropped).
    m.push_str(
        r#"  (func $mix (param $h i64) (param $v i64) (result i64)
    (i64.mul (i64.xor (local.get $h) (local.get $v)) (i64.const 0x100000001b3)))
  (func $hex (param $v i64) (param $at i32)
    (local $i i32) (local $n i32)
    (loop $l
      (local.set $n (i32.wrap_i64 (i64.and (i64.shr_u (local.get $v)
        (i64.extend_i32_u (i32.sub (i32.const 60) (i32.shl (local.get $i) (i32.const 2)))))
        (i64.const 15))))
      (i32.store8 (i32.add (local.get $at) (local.get $i))
        (i32.add (local.get $n)
          (select (i32.const 48) (i32.const 87) (i32.lt_u (local.get $n) (i32.const 10)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 16)))))
  (func $addr (param $a i32) (result i32)
    ;; An address from 2048 to 8 bytes before the end of memory.
    (i32.add (i32.const 2048) (i32.rem_u (local.get $a)
      (i32.sub (i32.mul (memory.size) (i32.const 65536)) (i32.const 2056)))))
  (func (export "wasmrule_on_event") (param $ev i32) (param $len i32) (result i64)
    (local $h i64) (local $a i32) (local $end i32)
    (local.set $h (i64.const 0xcbf29ce484222325))
    (local.set $h (call $mix (local.get $h) (i64.extend_i32_u (memory.size))))
    (local.set $end (i32.mul (memory.size) (i32.const 65536)))
    (local.set $a (i32.const 0))
    (loop $m
      (local.set $h (call $mix (local.get $h) (i64.load (local.get $a))))
      (local.set $a (i32.add (local.get $a) (i32.const 8)))
      (br_if $m (i32.lt_u (local.get $a) (local.get $end))))
    (local.set $h (call $mix (local.get $h) (i64.extend_i32_u (table.size $t))))
    (local.set $a (i32.const 0))
    (loop $t
      (local.set $h (call $mix (local.get $h)
        (if (result i64) (ref.is_null (table.get $t (local.get $a)))
          (then (i64.const 7))
          (else (i64.extend_i32_u (call_indirect $t (type $ret) (local.get $a)))))))
      (local.set $a (i32.add (local.get $a) (i32.const 1)))
      (br_if $t (i32.lt_u (local.get $a) (table.size $t))))
"#,
    );
    for (i, (wide, _, _)) in globals.iter().enumerate() {
        let get = if *wide {
            format!("(global.get $g{i})")
        } else {
            format!("(i64.extend_i32_u (global.get $g{i}))")
        };
        let _ = writeln!(m, "    (local.set $h (call $mix (local.get $h) {get}))");
    }
    if passive.is_some() {
        m.push_str("    (memory.init $p (i32.const 2048) (i32.const 0) (i32.const 1))\n");
    }
    if c.passive_elem {
        m.push_str("    (table.init $t $e (i32.const 0) (i32.const 0) (i32.const 1))\n");
    }
    // Change state at random.
    for op in c.ops.iter().take(24) {
        let line = match op {
            Op::Store { addr, value } => {
                format!("(i32.store (call $addr (i32.const {addr})) (i32.const {value}))")
            }
            Op::Store64 { addr, value } => format!(
                "(i64.store (call $addr (i32.const {})) (i64.const {value}))",
                addr & 0x7fff_ffff
            ),
            Op::Fill { addr, byte, len } => format!(
                "(memory.fill (call $addr (i32.const {addr})) (i32.const {byte}) (i32.const {}))",
                len % 8
            ),
            Op::Copy { dst, src, len } => format!(
                "(memory.copy (call $addr (i32.const {dst})) (call $addr (i32.const {src})) (i32.const {}))",
                len % 8
            ),
            Op::EventCopy { addr } => format!(
                "(memory.copy (call $addr (i32.const {addr})) (local.get $ev) \
                 (select (local.get $len) (i32.const 8) (i32.lt_u (local.get $len) (i32.const 8))))"
            ),
            Op::Global { index, value } if !globals.is_empty() => {
                let i = *index as usize % globals.len();
                if globals[i].0 {
                    format!("(global.set $g{i} (i64.const {value}))")
                } else {
                    format!("(global.set $g{i} (i32.const {value}))")
                }
            }
            Op::Global { .. } => String::new(),
            Op::TableSet { index, func, null } => {
                let v = if *null {
                    "(ref.null func)".to_owned()
                } else {
                    format!("(ref.func $f{})", func % 4)
                };
                format!("(table.set $t (i32.rem_u (i32.const {index}) (table.size $t)) {v})")
            }
            Op::TableGrow { by } => format!(
                "(drop (table.grow $t (ref.func $f1) (i32.const {})))",
                by % 3
            ),
            Op::MemoryGrow { by } => format!("(drop (memory.grow (i32.const {})))", by % 2),
            Op::DataDrop if passive.is_some() => "(data.drop $p)".into(),
            Op::ElemDrop if c.passive_elem => "(elem.drop $e)".into(),
            Op::MemoryInit { addr } if passive.is_some() => format!(
                "(memory.init $p (call $addr (i32.const {addr})) (i32.const 0) (i32.const 1))"
            ),
            Op::TableInit { index } if c.passive_elem => format!(
                "(table.init $t $e (i32.rem_u (i32.const {index}) (table.size $t)) (i32.const 0) (i32.const 1))"
            ),
            Op::TrapIfEventStartsWith { byte } => format!(
                "(if (i32.and (i32.ne (local.get $len) (i32.const 0)) \
                 (i32.eq (i32.load8_u (local.get $ev)) (i32.const {byte}))) (then unreachable))"
            ),
            _ => String::new(),
        };
        let _ = writeln!(m, "    {line}");
    }
    m.push_str(
        "    (call $hex (local.get $h) (i32.const 1045))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 37))))\n",
    );
    m
}

fn run(rule: &wasmrule::engine::Rule, event: &[u8]) -> String {
    let mut out = Commands::new();
    match rule.invoke(event, &mut out) {
        Ok(_) => out
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(";"),
        Err(e) => format!("error: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(case) = Case::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let text = module(&case);
    let wasm = wat::parse_str(&text).unwrap_or_else(|e| panic!("generated bad WAT: {e}\n{text}"));
    let (warm, fresh) = engines();
    let (Ok(w), Ok(f)) = (warm.compile(&wasm), fresh.compile(&wasm)) else {
        panic!("generated module does not load\n{text}");
    };
    let mut events = case.events.clone();
    events.truncate(8);
    // At least three events, so what one event leaves is seen by the next in the
    // same warm instance.
    while events.len() < 3 {
        events.push(b"{}".to_vec());
    }
    for (i, e) in events.iter().enumerate() {
        let (a, b) = (run(&w, e), run(&f, e));
        assert_eq!(a, b, "event {i} differs (warm vs fresh)\n{text}");
    }
});
