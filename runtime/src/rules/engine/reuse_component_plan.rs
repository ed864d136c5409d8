//! What a component can change at run time, and the component rewritten so that the
//! host can put all of it back after an event (`reuse_component.rs`).
//!
//! A component instance is its core instances plus the component model's own state
//! (resource handles, the flags a call sets and clears). wasmtime's component API
//! reaches none of the core instances, so the rewrite gives the component a way out:
//!
//! - every core module inside gets its defined mutable globals, tables and memories
//!   exported under reserved names (`reuse_plan::instrument_inner`);
//! - an accessor module is added, instantiated with every core instance a module of
//!   the component made, importing those exports. Its `save` copies the globals and
//!   tables into its own (one table holds all the tables' elements end to end) and
//!   notes every memory's and table's size; `reset` checks the sizes and copies the
//!   globals and tables back; `pages<k>` tells memory `k`'s size and `base<k>` hands
//!   the host memory `k` itself, as a `list<u8>` over all of it (the host keeps where
//!   it lies, which is where the reset restores pages). Returning a list needs eight
//!   bytes of the memory for its pointer and length: `base<k>` borrows bytes 0..8 and
//!   its post-return function puts them back;
//! - the accessor's functions are lifted and exported as the instance [`ACCESS`].
//!
//! The component model's own state cannot be reached this way, so a component that
//! could keep any is not reused: one that defines or imports resource types, or uses
//! any canonical function but `lift` and `lower` (resources, tasks, streams, futures,
//! threads, error contexts). Without resources or those, a call that returned leaves
//! nothing behind in the component model's tables. Also not reused: nested components,
//! modules that are imported or aliased rather than defined, and any module
//! `instrument_inner` refuses (segment drops, tags, 64-bit or shared memories).
//!
//! The rewrite copies every section as it is but the core modules, and appends the
//! accessor's sections, encoded with `wasm-encoder`.

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{
    Alias, CanonicalFunctionSection, CanonicalOption, CodeSection, ComponentAliasSection,
    ComponentExportKind, ComponentExportSection, ComponentInstanceSection, ComponentTypeSection,
    ComponentValType, ConstExpr, EntityType, ExportKind, ExportSection, Function, FunctionSection,
    GlobalSection, ImportSection, InstanceSection, MemArg, ModuleArg, PrimitiveValType,
    TableSection, TypeSection, ValType as EncValType,
};
use wasmparser::{
    CanonicalFunction, ComponentType, ComponentTypeRef, Instance, Parser, Payload, ValidPayload,
    Validator, WasmFeatures,
};

use super::reuse_plan::{self, Inner, leb};

/// The export name of the accessor instance the rewrite adds.
pub(super) const ACCESS: &str = "wasmrule-reset";

/// How to reset a rewritten component's instances in place.
#[derive(Debug, Clone)]
pub(super) struct ComponentPlan {
    /// Memories the component's instances define (`pages<k>`, `base<k>`, k in 0..).
    pub(super) memories: usize,
}

/// The plan of a compiled component: what its accessor instance offers, if it has one.
/// Only components this file rewrote have it (`compile_component` in `mod.rs` refuses
/// others exporting the name), so the compiled code, from the cache too, says itself
/// whether and how its instances are reset.
pub(super) fn plan_of(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Option<ComponentPlan> {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    let (_, item) = ty.exports(engine).find(|(n, _)| *n == ACCESS)?;
    let ComponentItem::ComponentInstance(instance) = item.ty else {
        return None;
    };
    let memories = instance
        .exports(engine)
        .filter(|(n, _)| n.starts_with("pages"))
        .count();
    Some(ComponentPlan { memories })
}

/// The bytes to compile and, if the component's instances can be reset in place, how;
/// else why not.
pub(super) struct Instrumented {
    pub(super) bytes: Vec<u8>,
    pub(super) plan: Result<ComponentPlan, String>,
}

/// Reads `bytes` (a component) and returns it rewritten as this file describes, or
/// unchanged with the reason. Malformed bytes come back unchanged (compiling reports
/// them).
pub(super) fn instrument(bytes: &[u8]) -> Instrumented {
    match rewrite(bytes) {
        Ok((out, plan)) => Instrumented {
            bytes: out,
            plan: Ok(plan),
        },
        Err(why) => Instrumented {
            bytes: bytes.to_vec(),
            plan: Err(why),
        },
    }
}

/// A core instance a module of the component made, and what that module defines.
struct Made {
    instance: u32,
    module: usize,
}

fn rewrite(bytes: &[u8]) -> Result<(Vec<u8>, ComponentPlan), String> {
    let mut out = Vec::with_capacity(bytes.len() + 4096);
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut modules: Vec<Inner> = Vec::new();
    let mut made: Vec<Made> = Vec::new();
    let mut core_instances = 0u32;
    // Inside which nested module or component the parser is; empty at the top.
    let mut nested: Vec<Nested> = Vec::new();
    let mut pos = 0usize;
    let mut types = None;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("unreadable component: {e}"))?;
        // Function bodies are not validated here: compiling does that. This reads the
        // component's index spaces, which the appended sections continue.
        match validator.payload(&payload).map_err(|e| e.to_string())? {
            ValidPayload::End(t) if nested.is_empty() => types = Some(t),
            _ => {}
        }
        if let Some(inside) = nested.last() {
            match (&payload, inside) {
                (Payload::End(_), _) => {
                    nested.pop();
                }
                (Payload::ModuleSection { .. }, Nested::Component) => {
                    nested.push(Nested::Module);
                    stateful_nested()?;
                }
                (Payload::ComponentSection { .. }, _) => nested.push(Nested::Component),
                (
                    Payload::InstanceSection(_) | Payload::ComponentCanonicalSection(_),
                    Nested::Component,
                ) => stateful_nested()?,
                (Payload::ComponentTypeSection(reader), Nested::Component) => {
                    no_resources(reader)?;
                }
                _ => {}
            }
            continue;
        }
        match &payload {
            Payload::Version { range, .. } => {
                out.extend_from_slice(&bytes[..range.end]);
                pos = range.end;
                continue;
            }
            Payload::End(_) => break,
            Payload::ModuleSection {
                unchecked_range, ..
            } => {
                let (module, inner) = reuse_plan::instrument_inner(&bytes[unchecked_range.clone()])
                    .map_err(|why| format!("core module {}: {why}", modules.len()))?;
                modules.push(inner);
                out.push(1);
                leb(&mut out, module.len() as u32);
                out.extend_from_slice(&module);
                pos = unchecked_range.end;
                nested.push(Nested::Module);
                continue;
            }
            // A nested component is reused only if it holds no state (wit-component's
            // wrappers that give exports their types): checked as its payloads pass.
            Payload::ComponentSection { .. } => nested.push(Nested::Component),
            Payload::InstanceSection(reader) => {
                for instance in reader.clone() {
                    match instance.map_err(|e| e.to_string())? {
                        Instance::Instantiate { module_index, .. } => made.push(Made {
                            instance: core_instances,
                            module: module_index as usize,
                        }),
                        Instance::FromExports(_) => {}
                    }
                    core_instances += 1;
                }
            }
            Payload::ComponentCanonicalSection(reader) => {
                for f in reader.clone() {
                    match f.map_err(|e| e.to_string())? {
                        CanonicalFunction::Lift { .. } | CanonicalFunction::Lower { .. } => {}
                        other => {
                            return Err(format!(
                                "uses the canonical function {}, whose state the reset \
                                 cannot reach",
                                canonical_name(&other)
                            ));
                        }
                    }
                }
            }
            Payload::ComponentTypeSection(reader) => no_resources(reader)?,
            Payload::ComponentImportSection(reader) => {
                for i in reader.clone() {
                    match i.map_err(|e| e.to_string())?.ty {
                        ComponentTypeRef::Type(_) => {
                            return Err("imports a type (a resource)".into());
                        }
                        ComponentTypeRef::Module(_) => return Err("imports a core module".into()),
                        _ => {}
                    }
                }
            }
            Payload::ComponentAliasSection(reader) => {
                for a in reader.clone() {
                    if let wasmparser::ComponentAlias::InstanceExport {
                        kind: wasmparser::ComponentExternalKind::Module,
                        ..
                    }
                    | wasmparser::ComponentAlias::Outer {
                        kind: wasmparser::ComponentOuterAliasKind::CoreModule,
                        ..
                    } = a.map_err(|e| e.to_string())?
                    {
                        return Err("aliases a core module".into());
                    }
                }
            }
            Payload::ComponentExportSection(reader) => {
                for e in reader.clone() {
                    let e = e.map_err(|e| e.to_string())?;
                    if e.name.name == ACCESS {
                        return Err(format!("already exports `{ACCESS}`"));
                    }
                    if e.kind == wasmparser::ComponentExternalKind::Module {
                        return Err("exports a core module".into());
                    }
                }
            }
            _ => {}
        }
        if let Some((_, range)) = payload.as_section() {
            out.extend_from_slice(&bytes[pos..range.end]);
            pos = range.end;
        }
    }
    let types = types.ok_or("the component ended early")?;
    let types = types.as_ref();
    let counts = Counts {
        modules: types.module_count(),
        core_instances: types.core_instance_count(),
        core_funcs: types.function_count(),
        core_memories: types.memory_count(),
        types: types.component_type_count(),
        funcs: types.component_function_count(),
        instances: types.component_instance_count(),
    };
    if counts.core_instances != core_instances || counts.modules as usize != modules.len() {
        return Err("core instances or modules the rewrite did not count".into());
    }
    // The accessor is one more instantiated module (the engine's limit counts those,
    // not instances bundled from exports), and one more table if it saves any: the
    // rewritten component must still fit the engine's limits, or it would not load.
    let instantiated = made.len();
    let tables: usize = made
        .iter()
        .filter_map(|m| modules.get(m.module))
        .map(|m| m.tables.len())
        .sum();
    let max = super::COMPONENT_CORE_INSTANCES as usize;
    if instantiated >= max || tables >= max {
        return Err(format!(
            "instantiates {instantiated} core modules and has {tables} tables; a \
             component may have {max} of each, and the reset's accessor needs one more"
        ));
    }
    let plan = append_accessor(&mut out, &modules, &made, &counts)?;
    Ok((out, plan))
}

enum Nested {
    Module,
    Component,
}

fn stateful_nested() -> Result<(), String> {
    Err("has a nested component with core instances or canonical functions".into())
}

fn no_resources(reader: &wasmparser::ComponentTypeSectionReader<'_>) -> Result<(), String> {
    for t in reader.clone() {
        if let ComponentType::Resource { .. } = t.map_err(|e| e.to_string())? {
            return Err("defines a resource type".into());
        }
    }
    Ok(())
}

/// The component's index spaces, where the appended definitions start.
struct Counts {
    modules: u32,
    core_instances: u32,
    core_funcs: u32,
    core_memories: u32,
    types: u32,
    funcs: u32,
    instances: u32,
}

fn canonical_name(f: &CanonicalFunction) -> String {
    let debug = format!("{f:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// One global, table or memory of a core instance, which the accessor imports: the
/// instance (its index is the import's module name) and the name it is exported as.
struct Item {
    instance: u32,
    name: String,
}

/// `instance`'s exported state of one kind, as the accessor imports it.
fn items<T: Copy>(instance: u32, list: &[(String, T)]) -> impl Iterator<Item = (Item, T)> + '_ {
    list.iter().map(move |(name, ty)| {
        let item = Item {
            instance,
            name: name.clone(),
        };
        (item, *ty)
    })
}

/// Builds the accessor module, instantiates it, lifts and exports its functions.
fn append_accessor(
    out: &mut Vec<u8>,
    modules: &[Inner],
    made: &[Made],
    counts: &Counts,
) -> Result<ComponentPlan, String> {
    let writes_tables = modules.iter().any(|m| m.writes_tables);
    let mut imports = ImportSection::new();
    let mut globals: Vec<(Item, wasmparser::GlobalType)> = Vec::new();
    let mut tables: Vec<(Item, wasmparser::TableType)> = Vec::new();
    let mut memories: Vec<(Item, wasmparser::MemoryType)> = Vec::new();
    for m in made {
        let Some(inner) = modules.get(m.module) else {
            return Err(format!(
                "instantiates module {}, which it does not define",
                m.module
            ));
        };
        globals.extend(items(m.instance, &inner.globals));
        if writes_tables {
            tables.extend(items(m.instance, &inner.tables));
        }
        memories.extend(items(m.instance, &inner.memories));
    }
    // Imports: globals 0..G, memories 0..M, tables 0..T, each with its module's type.
    for (item, ty) in &globals {
        let ty = RoundtripReencoder
            .global_type(*ty)
            .map_err(|e| format!("global type: {e:?}"))?;
        imports.import(
            &item.instance.to_string(),
            &item.name,
            EntityType::Global(ty),
        );
    }
    for (item, ty) in &memories {
        let ty = RoundtripReencoder
            .memory_type(*ty)
            .map_err(|e| format!("{e:?}"))?;
        imports.import(
            &item.instance.to_string(),
            &item.name,
            EntityType::Memory(ty),
        );
    }
    for (item, ty) in &tables {
        let ty = RoundtripReencoder
            .table_type(*ty)
            .map_err(|e| format!("{e:?}"))?;
        imports.import(
            &item.instance.to_string(),
            &item.name,
            EntityType::Table(ty),
        );
    }
    let (g, m, t) = (
        globals.len() as u32,
        memories.len() as u32,
        tables.len() as u32,
    );

    // Defined globals: G copies, then T saved table sizes, M saved memory sizes, M
    // borrowed words (bytes 0..8 of each memory while `base<k>` lends them).
    let mut defined = GlobalSection::new();
    for (_, ty) in &globals {
        let content = RoundtripReencoder
            .val_type(ty.content_type)
            .map_err(|e| format!("{e:?}"))?;
        let init = match content {
            EncValType::I32 => ConstExpr::i32_const(0),
            EncValType::I64 => ConstExpr::i64_const(0),
            EncValType::F32 => ConstExpr::f32_const(0.0.into()),
            EncValType::F64 => ConstExpr::f64_const(0.0.into()),
            EncValType::V128 => ConstExpr::v128_const(0),
            EncValType::Ref(r) => ConstExpr::ref_null(r.heap_type),
        };
        defined.global(
            wasm_encoder::GlobalType {
                val_type: content,
                mutable: true,
                shared: false,
            },
            &init,
        );
    }
    let plain = |v: EncValType, init: ConstExpr, s: &mut GlobalSection| {
        s.global(
            wasm_encoder::GlobalType {
                val_type: v,
                mutable: true,
                shared: false,
            },
            &init,
        );
    };
    for _ in 0..t + m {
        plain(EncValType::I32, ConstExpr::i32_const(0), &mut defined);
    }
    for _ in 0..m {
        plain(EncValType::I64, ConstExpr::i64_const(0), &mut defined);
    }
    let copy_of = |i: u32| g + i;
    let table_size = move |j: u32| 2 * g + j;
    let pages_of = move |k: u32| 2 * g + t + k;
    let borrowed = move |k: u32| 2 * g + t + m + k;

    // One defined table after the T imported ones: the saved elements, end to end.
    let own_table = t;
    let mut table_section = TableSection::new();
    if t > 0 {
        table_section.table(wasm_encoder::TableType {
            element_type: wasm_encoder::RefType::FUNCREF,
            table64: false,
            minimum: 0,
            maximum: None,
            shared: false,
        });
    }

    // Types: 0 () -> (), 1 () -> i32, 2 (i32) -> ().
    let mut core_types = TypeSection::new();
    core_types.ty().function([], []);
    core_types.ty().function([], [EncValType::I32]);
    core_types.ty().function([EncValType::I32], []);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut exports = ExportSection::new();
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: String, ty: u32, f: Function, names: &mut Vec<String>| {
        let index = names.len() as u32;
        functions.function(ty);
        code.function(&f);
        exports.export(&name, ExportKind::Func, index);
        names.push(name);
    };

    // save
    let mut f = Function::new([(1, EncValType::I32)]);
    {
        let mut i = f.instructions();
        for k in 0..g {
            i.global_get(k).global_set(copy_of(k));
        }
        for j in 0..t {
            i.table_size(j).global_set(table_size(j));
            i.ref_null(wasm_encoder::HeapType::FUNC)
                .global_get(table_size(j))
                .table_grow(own_table)
                .i32_const(-1)
                .i32_eq()
                .if_(wasm_encoder::BlockType::Empty)
                .unreachable()
                .end();
            i.local_get(0)
                .i32_const(0)
                .global_get(table_size(j))
                .table_copy(own_table, j);
            i.local_get(0)
                .global_get(table_size(j))
                .i32_add()
                .local_set(0);
        }
        for k in 0..m {
            i.memory_size(k).global_set(pages_of(k));
        }
        i.end();
    }
    add("save".into(), 0, f, &mut names);

    // reset: 1 if a memory changed size, 2 if a table did, else 0 with all restored.
    let mut f = Function::new([(1, EncValType::I32)]);
    {
        let mut i = f.instructions();
        for k in 0..m {
            i.memory_size(k)
                .global_get(pages_of(k))
                .i32_ne()
                .if_(wasm_encoder::BlockType::Empty)
                .i32_const(1)
                .return_()
                .end();
        }
        for j in 0..t {
            i.table_size(j)
                .global_get(table_size(j))
                .i32_ne()
                .if_(wasm_encoder::BlockType::Empty)
                .i32_const(2)
                .return_()
                .end();
        }
        for k in 0..g {
            i.global_get(copy_of(k)).global_set(k);
        }
        for j in 0..t {
            i.i32_const(0)
                .local_get(0)
                .global_get(table_size(j))
                .table_copy(j, own_table);
            i.local_get(0)
                .global_get(table_size(j))
                .i32_add()
                .local_set(0);
        }
        i.i32_const(0).end();
    }
    add("reset".into(), 1, f, &mut names);

    let word = |k: u32, align: u32| MemArg {
        offset: 0,
        align,
        memory_index: k,
    };
    for k in 0..m {
        // pages<k>
        let mut f = Function::new([]);
        f.instructions().global_get(pages_of(k)).end();
        add(format!("pages{k}"), 1, f, &mut names);
        // base<k>: a list over the whole memory, its pointer and length in bytes 0..8.
        let mut f = Function::new([]);
        {
            let mut i = f.instructions();
            // A memory of 4 GiB has a length that does not fit the list's.
            i.global_get(pages_of(k))
                .i32_const(65536)
                .i32_ge_u()
                .global_get(pages_of(k))
                .i32_eqz()
                .i32_or()
                .if_(wasm_encoder::BlockType::Empty)
                .unreachable()
                .end();
            i.i32_const(0).i64_load(word(k, 3)).global_set(borrowed(k));
            i.i32_const(0).i32_const(0).i32_store(word(k, 2));
            i.i32_const(4)
                .global_get(pages_of(k))
                .i32_const(16)
                .i32_shl()
                .i32_store(word(k, 2));
            i.i32_const(0).end();
        }
        add(format!("base{k}"), 1, f, &mut names);
        // undo<k>: base<k>'s post-return, the borrowed bytes back.
        let mut f = Function::new([]);
        f.instructions()
            .i32_const(0)
            .global_get(borrowed(k))
            .i64_store(word(k, 3))
            .end();
        add(format!("undo{k}"), 2, f, &mut names);
    }

    let mut module = wasm_encoder::Module::new();
    module.section(&core_types);
    module.section(&imports);
    module.section(&functions);
    if t > 0 {
        module.section(&table_section);
    }
    module.section(&defined);
    module.section(&exports);
    module.section(&code);
    let module = module.finish();

    // The component side.
    let mut tail = wasm_encoder::Component::new();
    tail.section(&wasm_encoder::RawSection {
        id: wasm_encoder::ComponentSectionId::CoreModule as u8,
        data: &module,
    });
    let mut instances = InstanceSection::new();
    let mut args: Vec<(String, u32)> = Vec::new();
    for mm in made {
        let name = mm.instance.to_string();
        if !args.iter().any(|(n, _)| *n == name) {
            args.push((name, mm.instance));
        }
    }
    instances.instantiate(
        counts.modules,
        args.iter()
            .map(|(n, i)| (n.as_str(), ModuleArg::Instance(*i))),
    );
    tail.section(&instances);
    let accessor = counts.core_instances;

    let mut aliases = ComponentAliasSection::new();
    for name in &names {
        aliases.alias(Alias::CoreInstanceExport {
            instance: accessor,
            kind: ExportKind::Func,
            name,
        });
    }
    for (item, _) in &memories {
        aliases.alias(Alias::CoreInstanceExport {
            instance: item.instance,
            kind: ExportKind::Memory,
            name: &item.name,
        });
    }
    tail.section(&aliases);
    let core_func =
        |name: &str| counts.core_funcs + names.iter().position(|n| n == name).unwrap_or(0) as u32;
    let memory_alias = |k: u32| counts.core_memories + k;

    // Component types: 0 func(), 1 func() -> u32, 2 list<u8>, 3 func() -> list<u8>.
    let mut ctypes = ComponentTypeSection::new();
    ctypes
        .function()
        .params::<_, ComponentValType>([])
        .result(None);
    ctypes
        .function()
        .params::<_, ComponentValType>([])
        .result(Some(ComponentValType::Primitive(PrimitiveValType::U32)));
    ctypes
        .defined_type()
        .list(ComponentValType::Primitive(PrimitiveValType::U8));
    ctypes
        .function()
        .params::<_, ComponentValType>([])
        .result(Some(ComponentValType::Type(counts.types + 2)));
    tail.section(&ctypes);
    let ty = |i: u32| counts.types + i;

    let mut canon = CanonicalFunctionSection::new();
    let mut lifted: Vec<String> = Vec::new();
    canon.lift(core_func("save"), ty(0), []);
    lifted.push("save".into());
    canon.lift(core_func("reset"), ty(1), []);
    lifted.push("reset".into());
    for k in 0..m {
        canon.lift(core_func(&format!("pages{k}")), ty(1), []);
        lifted.push(format!("pages{k}"));
        canon.lift(
            core_func(&format!("base{k}")),
            ty(3),
            [
                CanonicalOption::Memory(memory_alias(k)),
                CanonicalOption::PostReturn(core_func(&format!("undo{k}"))),
            ],
        );
        lifted.push(format!("base{k}"));
    }
    tail.section(&canon);

    let mut component_instances = ComponentInstanceSection::new();
    component_instances.export_items(lifted.iter().enumerate().map(|(i, n)| {
        (
            n.as_str(),
            ComponentExportKind::Func,
            counts.funcs + i as u32,
        )
    }));
    tail.section(&component_instances);
    let mut export = ComponentExportSection::new();
    export.export(
        ACCESS,
        ComponentExportKind::Instance,
        counts.instances,
        None,
    );
    tail.section(&export);

    // `tail` is a component of its own: its sections without the 8-byte header.
    let tail = tail.finish();
    out.extend_from_slice(&tail[8..]);
    Ok(ComponentPlan {
        memories: memories.len(),
    })
}
