//! What a core module can change at run time, read from its bytes before compiling, and
//! the module rewritten so that the host can reach all of it.
//!
//! A core module keeps state in its linear memory (contents and size), its mutable
//! globals, its tables (elements and size) and the dropped state of its passive data and
//! element segments. `reuse.rs` restores memory, globals and tables after each event;
//! this file decides whether that is possible and prepares for it:
//!
//! - globals and tables the module does not export are exported under reserved names
//!   (`__wasmrule_reset_global_N`, `__wasmrule_reset_table_N`), because wasmtime's API
//!   reaches an instance's globals and tables only through its exports. Adding exports
//!   changes nothing the module can observe.
//! - a module whose code contains `data.drop` or `elem.drop` is not reused: a dropped
//!   segment cannot be restored through the API (and no compiler emits these for a
//!   rule's usual code; LLVM only does for shared-memory threads).
//! - tables are only restored when the code contains an instruction that writes a table
//!   (`table.set`, `table.grow`, `table.fill`, `table.copy`, `table.init`); otherwise a
//!   table cannot change and costs nothing per event.
//! - reference-typed globals and tables other than `funcref`, imported globals, tables
//!   or memories (the ABI allows only imported functions anyway), and anything this
//!   parser does not understand, mean no reuse: the module runs in a fresh instance per
//!   event as before.
//!
//! The rewrite splices one section (the export section) and copies every other byte as
//! it is; it is written by hand because it needs only a LEB128 writer, not an encoder
//! library.

use wasmparser::{
    ExternalKind, GlobalType, MemoryType, Operator, Parser, Payload, RefType, TableType, TypeRef,
    ValType,
};

/// Prefix of the export names the rewrite adds.
pub(super) const RESET_PREFIX: &str = "__wasmrule_reset_";

/// How to reset a module's instance in place.
#[derive(Debug, Clone, Default)]
pub(super) struct Plan {
    /// Export names of the mutable globals the module defines.
    pub(super) globals: Vec<String>,
    /// Export names of the tables it defines, when its code can write a table.
    pub(super) tables: Vec<String>,
    /// Byte ranges of memory its active data segments initialise; `None` when an
    /// offset is not a constant (then all of memory counts as initialised).
    pub(super) data: Option<Vec<std::ops::Range<u64>>>,
    /// Whether the compiled module marks the chunks it writes in the map memory
    /// `reuse_marks::DIRTY_MAP` (set when the compiled code is prepared).
    pub(super) marks: bool,
}

/// The bytes to compile and, if the module's instances can be reset in place, how; else
/// why not.
pub(super) struct Instrumented {
    pub(super) bytes: Vec<u8>,
    pub(super) plan: Result<Plan, String>,
}

/// Reads `bytes` (a core module) and returns it with the exports `Plan` needs added.
/// Malformed bytes come back unchanged with no plan (compiling reports them).
pub(super) fn instrument(bytes: &[u8]) -> Instrumented {
    match analyse(bytes, false) {
        Ok(found) => match rewrite(bytes, &found.splice) {
            Some(out) => Instrumented {
                bytes: out,
                plan: Ok(found.plan),
            },
            None => unchanged(bytes, "the export section could not be rewritten".into()),
        },
        Err(why) => unchanged(bytes, why),
    }
}

/// What a core module inside a component defines that its instance can change, each
/// under the export name the rewrite gave it.
pub(super) struct Inner {
    pub(super) globals: Vec<(String, GlobalType)>,
    pub(super) tables: Vec<(String, TableType)>,
    pub(super) memories: Vec<(String, MemoryType)>,
    /// Whether its code has an instruction that writes a table.
    pub(super) writes_tables: bool,
}

/// Reads `bytes`, a core module inside a component, and returns it with its mutable
/// globals, tables and memories exported; or why its instances cannot be reset.
pub(super) fn instrument_inner(bytes: &[u8]) -> Result<(Vec<u8>, Inner), String> {
    let found = analyse(bytes, true)?;
    let out = rewrite(bytes, &found.splice).ok_or("the export section could not be rewritten")?;
    Ok((
        out,
        Inner {
            globals: found.globals,
            tables: found.tables,
            memories: found.memories,
            writes_tables: found.writes_tables,
        },
    ))
}

fn unchanged(bytes: &[u8], why: String) -> Instrumented {
    Instrumented {
        bytes: bytes.to_vec(),
        plan: Err(why),
    }
}

/// Where the export section lies and what to add to it.
struct Splice {
    /// The whole section, id and size included.
    section: std::ops::Range<usize>,
    /// Its contents after the entry count.
    entries: std::ops::Range<usize>,
    count: u32,
    added: Vec<(String, u8, u32)>,
}

/// What [`analyse`] found: the plan for a rule's own module, and for a module inside a
/// component the types of what it defines.
struct Found {
    plan: Plan,
    splice: Splice,
    globals: Vec<(String, GlobalType)>,
    tables: Vec<(String, TableType)>,
    memories: Vec<(String, MemoryType)>,
    writes_tables: bool,
}

/// Reads a module. `inner`: a core module inside a component, which may import
/// globals, tables and memories (another instance of the component defines and resets
/// them) and gets every defined mutable global, table and memory exported.
fn analyse(bytes: &[u8], inner: bool) -> Result<Found, String> {
    // Index spaces start with the imports.
    let (mut imported_globals, mut imported_tables, mut imported_memories) = (0u32, 0u32, 0u32);
    let mut globals: Vec<(u32, GlobalType)> = Vec::new();
    let mut tables: Vec<(u32, TableType)> = Vec::new();
    let mut memories: Vec<(u32, MemoryType)> = Vec::new();
    // Where an export section goes if the module has none: after the sections that
    // come before it (type, import, function, table, memory, tag, global).
    let mut export_at = 8usize;
    let mut writes_tables = false;
    let mut exported: Vec<(String, ExternalKind, u32)> = Vec::new();
    let mut export_section = None;
    let mut data: Option<Vec<std::ops::Range<u64>>> = Some(Vec::new());
    let mut prev_end = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("unreadable module: {e}"))?;
        let section_start = prev_end;
        match &payload {
            Payload::Version { range, .. } => prev_end = range.end,
            _ => {
                if let Some((_, range)) = payload.as_section() {
                    prev_end = range.end;
                }
            }
        }
        match payload {
            Payload::ImportSection(reader) => {
                export_at = prev_end;
                for import in reader.into_imports() {
                    let import = import.map_err(|e| e.to_string())?;
                    match import.ty {
                        TypeRef::Global(_) if inner => imported_globals += 1,
                        TypeRef::Table(_) if inner => imported_tables += 1,
                        TypeRef::Memory(_) if inner => imported_memories += 1,
                        _ => {}
                    }
                    if matches!(import.ty, TypeRef::Tag(_)) {
                        return Err("imports an exception tag".into());
                    }
                    if !inner && !matches!(import.ty, TypeRef::Func(_)) {
                        return Err(format!(
                            "imports `{}::{}`, which is not a function",
                            import.module, import.name
                        ));
                    }
                }
            }
            Payload::TypeSection(_) | Payload::FunctionSection(_) => export_at = prev_end,
            Payload::TableSection(reader) => {
                export_at = prev_end;
                for table in reader {
                    let table = table.map_err(|e| e.to_string())?;
                    if table.ty.element_type != RefType::FUNCREF || table.ty.shared {
                        return Err("has a table that is not a plain funcref table".into());
                    }
                    if table.ty.table64 {
                        return Err("has a 64-bit table".into());
                    }
                    tables.push((imported_tables + tables.len() as u32, table.ty));
                }
            }
            Payload::MemorySection(reader) => {
                export_at = prev_end;
                for memory in reader {
                    let ty = memory.map_err(|e| e.to_string())?;
                    if ty.memory64 || ty.shared || ty.page_size_log2.is_some() {
                        return Err("has a 64-bit, shared or custom-page memory".into());
                    }
                    memories.push((imported_memories + memories.len() as u32, ty));
                }
            }
            Payload::GlobalSection(reader) => {
                export_at = prev_end;
                for global in reader {
                    let global = global.map_err(|e| e.to_string())?;
                    let ty = global.ty;
                    let plain = matches!(
                        ty.content_type,
                        ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64 | ValType::V128
                    ) || ty.content_type == ValType::Ref(RefType::FUNCREF);
                    if !plain || ty.shared {
                        return Err("has a global of a type the reset does not handle".into());
                    }
                    globals.push((imported_globals + globals.len() as u32, ty));
                }
            }
            Payload::ExportSection(reader) => {
                let content = reader.range();
                let count = reader.count();
                for export in reader {
                    let e = export.map_err(|e| e.to_string())?;
                    exported.push((e.name.to_owned(), e.kind, e.index));
                }
                let count_len = leb_len(&bytes[content.start..]).ok_or("bad export count")?;
                export_section = Some(Splice {
                    section: section_start..content.end,
                    entries: content.start + count_len..content.end,
                    count,
                    added: Vec::new(),
                });
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().map_err(|e| e.to_string())?;
                while !ops.eof() {
                    match ops.read().map_err(|e| e.to_string())? {
                        Operator::DataDrop { .. } | Operator::ElemDrop { .. } => {
                            return Err("drops a data or element segment (data.drop, \
                                        elem.drop), which cannot be restored"
                                .into());
                        }
                        Operator::TableSet { .. }
                        | Operator::TableGrow { .. }
                        | Operator::TableFill { .. }
                        | Operator::TableCopy { .. }
                        | Operator::TableInit { .. } => writes_tables = true,
                        _ => {}
                    }
                }
            }
            Payload::DataSection(reader) => {
                for segment in reader {
                    let segment = segment.map_err(|e| e.to_string())?;
                    if let wasmparser::DataKind::Active { offset_expr, .. } = segment.kind {
                        let mut ops = offset_expr.get_operators_reader();
                        let at = match (ops.read(), ops.read()) {
                            (Ok(Operator::I32Const { value }), Ok(Operator::End)) => {
                                Some(value as u32 as u64)
                            }
                            _ => None,
                        };
                        match (at, data.as_mut()) {
                            (Some(at), Some(d)) => d.push(at..at + segment.data.len() as u64),
                            _ => data = None,
                        }
                    }
                }
            }
            Payload::TagSection(_) => return Err("defines exception tags".into()),
            _ => {}
        }
    }
    let splice = match export_section {
        Some(s) => s,
        // A module inside a component need not export anything: it gets a section.
        None if inner => Splice {
            section: export_at..export_at,
            entries: 0..0,
            count: 0,
            added: Vec::new(),
        },
        None => return Err("exports nothing".into()),
    };
    if exported.iter().any(|(n, _, _)| n.starts_with(RESET_PREFIX)) {
        return Err(format!(
            "already exports a name starting with `{RESET_PREFIX}`"
        ));
    }
    let mut found = Found {
        plan: Plan {
            data,
            ..Plan::default()
        },
        splice,
        globals: Vec::new(),
        tables: Vec::new(),
        memories: Vec::new(),
        writes_tables,
    };
    let splice = &mut found.splice;
    for (index, ty) in globals {
        if ty.mutable {
            let name = format!("{RESET_PREFIX}global_{index}");
            splice.added.push((name.clone(), 0x03, index));
            found.plan.globals.push(name.clone());
            found.globals.push((name, ty));
        }
    }
    // A component's tables may be written by another of its modules: all exported.
    if writes_tables || inner {
        for (index, ty) in tables {
            let name = format!("{RESET_PREFIX}table_{index}");
            splice.added.push((name.clone(), 0x01, index));
            found.plan.tables.push(name.clone());
            found.tables.push((name, ty));
        }
    }
    if inner {
        for (index, ty) in memories {
            let name = format!("{RESET_PREFIX}memory_{index}");
            splice.added.push((name.clone(), 0x02, index));
            found.memories.push((name, ty));
        }
    }
    Ok(found)
}

/// The module with the export section replaced by one that also has `splice.added`.
fn rewrite(bytes: &[u8], splice: &Splice) -> Option<Vec<u8>> {
    if splice.added.is_empty() {
        return Some(bytes.to_vec());
    }
    let mut content = Vec::new();
    let count = splice.count.checked_add(splice.added.len() as u32)?;
    leb(&mut content, count);
    content.extend_from_slice(bytes.get(splice.entries.clone())?);
    for (name, kind, index) in &splice.added {
        leb(&mut content, name.len() as u32);
        content.extend_from_slice(name.as_bytes());
        content.push(*kind);
        leb(&mut content, *index);
    }
    let mut out = Vec::with_capacity(bytes.len() + content.len());
    out.extend_from_slice(bytes.get(..splice.section.start)?);
    out.push(0x07);
    leb(&mut out, u32::try_from(content.len()).ok()?);
    out.extend_from_slice(&content);
    out.extend_from_slice(bytes.get(splice.section.end..)?);
    Some(out)
}

/// Unsigned LEB128.
pub(super) fn leb(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Length of the unsigned LEB128 at the start of `b`.
fn leb_len(b: &[u8]) -> Option<usize> {
    b.iter().take(5).position(|x| x & 0x80 == 0).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(wasm: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for p in Parser::new(0).parse_all(wasm) {
            if let Payload::ExportSection(r) = p.unwrap() {
                out.extend(r.into_iter().map(|e| e.unwrap().name.to_owned()));
            }
        }
        out
    }

    #[test]
    fn internal_mutable_globals_and_written_tables_get_exports() {
        let wasm = wat::parse_str(
            r#"(module (global $a (mut i32) (i32.const 1)) (global $b i32 (i32.const 2))
                 (global $c (mut i64) (i64.const 3)) (table $t 1 funcref)
                 (func (export "f") (table.set $t (i32.const 0) (ref.null func))))"#,
        )
        .unwrap();
        let i = instrument(&wasm);
        let plan = i.plan.unwrap();
        assert_eq!(
            plan.globals,
            ["__wasmrule_reset_global_0", "__wasmrule_reset_global_2"]
        );
        assert_eq!(plan.tables, ["__wasmrule_reset_table_0"]);
        assert_eq!(
            names(&i.bytes),
            [
                "f",
                "__wasmrule_reset_global_0",
                "__wasmrule_reset_global_2",
                "__wasmrule_reset_table_0"
            ]
        );
        wasmparser::Validator::new().validate_all(&i.bytes).unwrap();
    }

    #[test]
    fn tables_nothing_writes_are_left_alone() {
        let wasm = wat::parse_str(r#"(module (table 1 funcref) (func (export "f")))"#).unwrap();
        let i = instrument(&wasm);
        assert!(i.plan.unwrap().tables.is_empty());
        assert_eq!(i.bytes, wasm);
    }

    #[test]
    fn segment_drops_rule_reuse_out() {
        let wasm = wat::parse_str(
            r#"(module (memory 1) (data $d "x") (func (export "f") (data.drop $d)))"#,
        )
        .unwrap();
        let i = instrument(&wasm);
        assert!(i.plan.unwrap_err().contains("data.drop"));
        assert_eq!(i.bytes, wasm);
    }
}
