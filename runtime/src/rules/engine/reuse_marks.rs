//! A core module rewritten to mark, in a memory of its own, every 4 KiB chunk of its
//! linear memory that it writes: the host then restores just those chunks after an
//! event, without asking the kernel which pages changed (`reuse.rs`).
//!
//! The kernel's answer (`PAGEMAP_SCAN`) costs a system call and a walk of the memory's
//! page table on every event, about 0.75 us of a 2.5 us event for `store-last-message`
//! (docs/performance.md), and it reports every page ever written since the instance
//! was made, not only this event's. The marks cost a few instructions per store.
//!
//! The rewrite adds memory 1, the *map*: 16 pages (1 MiB), one byte per 4 KiB chunk of
//! a 4 GiB memory, so no mark can fall outside it. It is exported as [`DIRTY_MAP`] for
//! the host, and no instruction of the module's own refers to it. Before each
//! instruction that writes memory 0, the rewrite inserts code that sets the map's
//! bytes for the chunks the write touches:
//!
//! - a store at `addr + offset`: the chunk of its first byte (an `i32.store8` of 1 into
//!   the map at `(addr + offset) >> 12`). A store is at most 16 bytes, so the host
//!   restores each marked chunk and the first 15 bytes after it ([`SPILL`]), where a
//!   store that starts near the chunk's end may reach; restoring bytes nobody wrote
//!   writes what they already hold;
//! - `memory.fill`, `memory.copy`, `memory.init` of `len` bytes at `dst`: every chunk
//!   of `dst..dst + len` (two stores into the map up to 4 KiB, which span at most two
//!   chunks; a `memory.fill` of the map beyond).
//!
//! The marks use 32-bit arithmetic. Where `addr + offset` wraps, the write itself is
//! out of bounds and traps, and a trapped event's instance is dropped, not reset; so
//! are instances whose memory grew. A write the host makes (the event, a Redis reply)
//! is marked by the host.
//!
//! Only modules whose every memory write is one of these instructions are rewritten:
//! the result is validated without the threads proposal (atomics write memory too),
//! and a module with more than one memory, or that fails that validation, is compiled
//! without marks and reset through the kernel's answer as before.

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{ExportKind, Function, Instruction, MemArg, ValType};
use wasmparser::{FunctionBody, Parser, Payload, WasmFeatures};

/// Export name of the map memory.
pub(super) const DIRTY_MAP: &str = "__wasmrule_reset_dirty";

/// Bytes per chunk of linear memory the map has a byte for.
pub(super) const CHUNK: usize = 4096;
const CHUNK_SHIFT: i32 = 12;

/// Bytes after a marked chunk that its restore also covers: a store of up to 16 bytes
/// (`v128.store`) that starts in the chunk ends at most this far into the next, and only
/// the chunk of its first byte is marked.
pub(super) const SPILL: usize = 15;

/// The map's size in wasm pages: a byte for each chunk of 4 GiB.
const MAP_PAGES: u64 = (1 << 32) / CHUNK as u64 / 65536;

/// `bytes` (a valid core module with one memory, defined) with marks on every write to
/// it and the map exported; `None` when the module has another shape or the result does
/// not validate.
pub(super) fn mark_writes(bytes: &[u8]) -> Option<Vec<u8>> {
    let shape = Shape::read(bytes)?;
    if shape.memories != 1 {
        return None;
    }
    let mut marker = Marker {
        params: shape.params,
        next: 0,
        map: 1,
    };
    let mut module = wasm_encoder::Module::new();
    marker
        .parse_core_module(&mut module, Parser::new(0), bytes)
        .ok()?;
    let out = module.finish();
    // The default features less those with writes the marks miss: threads (atomics)
    // and memory control (`memory.discard`, off by default anyway).
    let mut features = WasmFeatures::default();
    features.remove(
        WasmFeatures::THREADS
            | WasmFeatures::SHARED_EVERYTHING_THREADS
            | WasmFeatures::MEMORY_CONTROL,
    );
    wasmparser::Validator::new_with_features(features)
        .validate_all(&out)
        .ok()?;
    Some(out)
}

/// What the rewrite needs to know before the code section.
struct Shape {
    /// Memories the module defines or imports.
    memories: u32,
    /// Parameter count of each defined function, in order.
    params: Vec<u32>,
}

impl Shape {
    fn read(bytes: &[u8]) -> Option<Shape> {
        let mut types: Vec<u32> = Vec::new();
        let mut shape = Shape {
            memories: 0,
            params: Vec::new(),
        };
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.ok()? {
                Payload::TypeSection(reader) => {
                    for ty in reader.into_iter_err_on_gc_types() {
                        types.push(ty.ok()?.params().len() as u32);
                    }
                }
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        if matches!(import.ok()?.ty, wasmparser::TypeRef::Memory(_)) {
                            shape.memories += 1;
                        }
                    }
                }
                Payload::FunctionSection(reader) => {
                    for ty in reader {
                        shape.params.push(*types.get(ty.ok()? as usize)?);
                    }
                }
                Payload::MemorySection(reader) => shape.memories += reader.count(),
                _ => {}
            }
        }
        Some(shape)
    }
}

/// The reencoder that adds the map and the marks.
struct Marker {
    params: Vec<u32>,
    /// The next defined function's index.
    next: usize,
    /// The map's memory index.
    map: u32,
}

/// The locals each function gets, after its own: where a write's operands wait while
/// its marks are made.
struct Scratch {
    addr: u32,
    len: u32,
    i32: u32,
    i64: u32,
    f32: u32,
    f64: u32,
    v128: u32,
}

const SCRATCH: [ValType; 7] = [
    ValType::I32,
    ValType::I32,
    ValType::I32,
    ValType::I64,
    ValType::F32,
    ValType::F64,
    ValType::V128,
];

impl Reencode for Marker {
    /// More function bodies than the function section declares (the validator would
    /// refuse the module too; the scratch locals must not be placed by a guess).
    type Error = &'static str;

    fn parse_memory_section(
        &mut self,
        memories: &mut wasm_encoder::MemorySection,
        section: wasmparser::MemorySectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_memory_section(self, memories, section)?;
        memories.memory(wasm_encoder::MemoryType {
            minimum: MAP_PAGES,
            maximum: Some(MAP_PAGES),
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        exports.export(DIRTY_MAP, ExportKind::Memory, self.map);
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let params = *self
            .params
            .get(self.next)
            .ok_or(reencode::Error::UserError("a body without a function"))?;
        self.next += 1;
        let mut locals = Vec::new();
        let mut count = params;
        for pair in func.get_locals_reader()? {
            let (n, ty) = pair?;
            count = count.saturating_add(n);
            locals.push((n, self.val_type(ty)?));
        }
        let s = Scratch {
            addr: count,
            len: count + 1,
            i32: count + 2,
            i64: count + 3,
            f32: count + 4,
            f64: count + 5,
            v128: count + 6,
        };
        locals.extend(SCRATCH.iter().map(|t| (1, *t)));
        let mut f = Function::new(locals);
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let write = Write::of(&op);
            let ins = self.instruction(op)?;
            if let Some(w) = write {
                self.marks(&mut f, &s, w);
            }
            f.instruction(&ins);
        }
        code.function(&f);
        Ok(())
    }
}

/// A write to memory 0, as the rewrite sees it.
#[derive(Clone, Copy)]
enum Write {
    /// A store of a value of type `value` at `addr + offset` (at most `SPILL + 1`
    /// bytes); operands `[addr, value]`.
    Store { offset: u64, value: ValType },
    /// `memory.fill` (`[dst, byte, len]`), `memory.copy` and `memory.init`
    /// (`[dst, src, len]`): `len` bytes at `dst`.
    Bulk,
}

impl Write {
    fn of(op: &wasmparser::Operator<'_>) -> Option<Write> {
        use wasmparser::Operator as O;
        // The size is only checked: every store is at most `SPILL + 1` bytes.
        let store = |m: &wasmparser::MemArg, bytes: usize, value: ValType| {
            debug_assert!(bytes <= SPILL + 1);
            (m.memory == 0).then_some(Write::Store {
                offset: m.offset,
                value,
            })
        };
        match op {
            O::I32Store { memarg } => store(memarg, 4, ValType::I32),
            O::I64Store { memarg } => store(memarg, 8, ValType::I64),
            O::F32Store { memarg } => store(memarg, 4, ValType::F32),
            O::F64Store { memarg } => store(memarg, 8, ValType::F64),
            O::I32Store8 { memarg } => store(memarg, 1, ValType::I32),
            O::I32Store16 { memarg } => store(memarg, 2, ValType::I32),
            O::I64Store8 { memarg } => store(memarg, 1, ValType::I64),
            O::I64Store16 { memarg } => store(memarg, 2, ValType::I64),
            O::I64Store32 { memarg } => store(memarg, 4, ValType::I64),
            O::V128Store { memarg } => store(memarg, 16, ValType::V128),
            O::V128Store8Lane { memarg, .. } => store(memarg, 1, ValType::V128),
            O::V128Store16Lane { memarg, .. } => store(memarg, 2, ValType::V128),
            O::V128Store32Lane { memarg, .. } => store(memarg, 4, ValType::V128),
            O::V128Store64Lane { memarg, .. } => store(memarg, 8, ValType::V128),
            O::MemoryFill { mem: 0 }
            | O::MemoryCopy { dst_mem: 0, .. }
            | O::MemoryInit { mem: 0, .. } => Some(Write::Bulk),
            _ => None,
        }
    }
}

impl Marker {
    /// The code that marks what `w` writes; it leaves the operand stack as it found it.
    fn marks(&self, f: &mut Function, s: &Scratch, w: Write) {
        use Instruction as I;
        let mark = MemArg {
            offset: 0,
            align: 0,
            memory_index: self.map,
        };
        match w {
            Write::Store { offset, value } => {
                let v = s.of(value);
                // [addr, value] -> value and addr in locals.
                f.instruction(&I::LocalSet(v));
                f.instruction(&I::LocalTee(s.addr));
                if offset != 0 {
                    // Wrapping, as documented above: the store traps then.
                    f.instruction(&I::I32Const(offset as u32 as i32));
                    f.instruction(&I::I32Add);
                }
                // Only the chunk of the first byte: the host restores a marked chunk
                // and the first `SPILL` bytes after it, where the rest of a store that
                // starts near its end lies.
                f.instruction(&I::I32Const(CHUNK_SHIFT));
                f.instruction(&I::I32ShrU);
                f.instruction(&I::I32Const(1));
                f.instruction(&I::I32Store8(mark));
                f.instruction(&I::LocalGet(s.addr));
                f.instruction(&I::LocalGet(v));
            }
            Write::Bulk => {
                let v = s.i32;
                // [dst, second, len] -> locals.
                f.instruction(&I::LocalSet(s.len));
                f.instruction(&I::LocalSet(v));
                f.instruction(&I::LocalSet(s.addr));
                let chunk_of = |f: &mut Function, last: bool| {
                    f.instruction(&I::LocalGet(s.addr));
                    if last {
                        f.instruction(&I::LocalGet(s.len));
                        f.instruction(&I::I32Add);
                        f.instruction(&I::I32Const(1));
                        f.instruction(&I::I32Sub);
                    }
                    f.instruction(&I::I32Const(CHUNK_SHIFT));
                    f.instruction(&I::I32ShrU);
                };
                // Up to a chunk's length, the range lies in at most two chunks: the
                // first byte's and the last's, marked with two stores (a fill of the
                // map would be a call). Of length 0, it marks a chunk nothing wrote,
                // or one past the end of memory, which the host never reads.
                f.instruction(&I::LocalGet(s.len));
                f.instruction(&I::I32Const(CHUNK as i32));
                f.instruction(&I::I32GtU);
                f.instruction(&I::If(wasm_encoder::BlockType::Empty));
                // Longer: a fill of the map, from the first byte's chunk over
                // ((dst + len - 1) >> 12) - (dst >> 12) + 1 chunks.
                chunk_of(f, false);
                f.instruction(&I::I32Const(1));
                chunk_of(f, true);
                chunk_of(f, false);
                f.instruction(&I::I32Sub);
                f.instruction(&I::I32Const(1));
                f.instruction(&I::I32Add);
                f.instruction(&I::MemoryFill(self.map));
                f.instruction(&I::Else);
                for last in [false, true] {
                    chunk_of(f, last);
                    f.instruction(&I::I32Const(1));
                    f.instruction(&I::I32Store8(mark));
                }
                f.instruction(&I::End);
                f.instruction(&I::LocalGet(s.addr));
                f.instruction(&I::LocalGet(v));
                f.instruction(&I::LocalGet(s.len));
            }
        }
    }
}

impl Scratch {
    fn of(&self, ty: ValType) -> u32 {
        match ty {
            ValType::I64 => self.i64,
            ValType::F32 => self.f32,
            ValType::F64 => self.f64,
            ValType::V128 => self.v128,
            _ => self.i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rewritten module's operators, as text.
    fn ops(wasm: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for p in Parser::new(0).parse_all(wasm) {
            if let Payload::CodeSectionEntry(body) = p.unwrap() {
                let mut r = body.get_operators_reader().unwrap();
                while !r.eof() {
                    out.push(format!("{:?}", r.read().unwrap()));
                }
            }
        }
        out
    }

    #[test]
    fn each_write_gets_a_mark_in_the_map_and_the_map_is_exported() {
        let wasm = wat::parse_str(
            r#"(module (memory (export "memory") 1) (data $d "xy")
                 (func (export "f") (param i32)
                   (i32.store offset=8 (local.get 0) (i32.const 1))
                   (i64.store8 (local.get 0) (i64.const 1))
                   (v128.store (local.get 0) (v128.const i32x4 0 0 0 0))
                   (memory.fill (local.get 0) (i32.const 0) (i32.const 3))
                   (memory.copy (local.get 0) (i32.const 0) (i32.const 3))
                   (memory.init $d (local.get 0) (i32.const 0) (i32.const 2))
                   (drop (i32.load (local.get 0)))))"#,
        )
        .unwrap();
        let out = mark_writes(&wasm).expect("rewritten");
        let ops = ops(&out);
        let marks = ops.iter().filter(|o| o.contains("memory: 1")).count();
        assert_eq!(
            marks,
            3 + 3 * 2,
            "a store8 into the map per store, two per short bulk write: {ops:#?}"
        );
        let fills = ops
            .iter()
            .filter(|o| o.starts_with("MemoryFill { mem: 1"))
            .count();
        assert_eq!(fills, 3, "a fill of the map per bulk write, for long ones");
        let mut exported = false;
        for p in Parser::new(0).parse_all(&out) {
            if let Payload::ExportSection(r) = p.unwrap() {
                for e in r {
                    let e = e.unwrap();
                    exported |= e.name == DIRTY_MAP
                        && e.kind == wasmparser::ExternalKind::Memory
                        && e.index == 1;
                }
            }
        }
        assert!(exported);
    }

    #[test]
    fn atomics_and_second_memories_are_left_to_the_kernel() {
        let atomic = wat::parse_str(
            r#"(module (memory 1 1 shared)
                 (func (export "f") (i32.atomic.store (i32.const 0) (i32.const 1))))"#,
        )
        .unwrap();
        assert!(mark_writes(&atomic).is_none());
        let two = wat::parse_str(r#"(module (memory 1) (memory 1) (func (export "f")))"#).unwrap();
        assert!(mark_writes(&two).is_none());
    }
}
