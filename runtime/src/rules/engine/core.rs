//! Core-module rules (ABI v1 and v2, `abi.rs`): pre-linking, reading the manifest, and
//! one invocation: allocate in the guest, copy the event in, call, decode the result;
//! in a fresh instance, or in a warm one that is reset afterwards (`reuse.rs`).

use wasmtime::{InstancePre, Memory, Module, ModuleExport, Store, TypedFunc};

use super::host::{ReadState, RedisReads};
use super::reuse::{self, Entry, Pool, Reservation, Warm};
use super::reuse_marks::{CHUNK, DIRTY_MAP};
use super::reuse_plan::Plan;
use super::{Ctx, Engine, Failure, InvokeLimits, LoadError, RuleError, WARM_INSTANCES, abi};
use crate::actions::MqttAction;
use crate::commands::Commands;

pub(super) struct Exports {
    memory: ModuleExport,
    manifest: ModuleExport,
    alloc: ModuleExport,
    on_event: ModuleExport,
}

/// A checked, pre-linked module.
pub(super) struct CoreParts {
    pre: InstancePre<Ctx>,
    exports: Exports,
    /// The ABI version, 1 or 2.
    pub(super) abi: u32,
    /// How to reset an instance in place; `None`: fresh instances only.
    plan: Option<Plan>,
    pool: Pool,
}

impl CoreParts {
    /// Events run in a warm instance that was then reset, and warm instances dropped
    /// after an event.
    pub(super) fn reuse_counts(&self) -> (usize, usize) {
        self.pool.counts()
    }

    /// Whether the compiled module marks its writes for the reset (`reuse_marks.rs`).
    #[cfg(test)]
    pub(super) fn marks_writes(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.marks)
    }

    /// Whether this module's instances are reset in place (else: fresh per event).
    pub(super) fn resettable(&self) -> bool {
        self.plan.is_some()
    }
}

/// Where one invocation's output goes.
pub(super) struct Output<'a> {
    pub(super) out: &'a mut Commands,
    pub(super) actions: &'a mut Vec<MqttAction>,
}

/// Checks `module` against the ABI and pre-links it.
pub(super) fn prepare(
    engine: &Engine,
    module: &Module,
    plan: Option<Plan>,
) -> Result<CoreParts, LoadError> {
    let abi = abi::check_module(module)?;
    let pre = engine
        .inner
        .linker
        .instantiate_pre(module)
        .map_err(super::compile_error)?;
    let export = |name: &'static str| {
        module
            .get_export_index(name)
            .ok_or(LoadError::MissingExport(name))
    };
    // Marks are used when the compiled code has them (a rewrite that failed, or code
    // cached without them, has not) and chunks are host pages (`Image` restores pages).
    let map = module.get_export(DIRTY_MAP).is_some();
    if map && plan.is_none() {
        // Only the rewrite of a module the host resets adds it (a module exporting a
        // name of the host's own is not reset, so it has no plan).
        return Err(LoadError::Abi(format!(
            "exports `{DIRTY_MAP}`, a name the host reserves for its own memory"
        )));
    }
    let plan = plan.map(|mut p| {
        p.marks = map && reuse::host_page_size() == CHUNK;
        p
    });
    let exports = Exports {
        memory: export(abi::EXPORT_MEMORY)?,
        manifest: export(abi::EXPORT_MANIFEST)?,
        alloc: export(abi::EXPORT_ALLOC)?,
        on_event: export(abi::EXPORT_ON_EVENT)?,
    };
    Ok(CoreParts {
        pre,
        exports,
        abi,
        plan,
        pool: Pool::default(),
    })
}

fn instantiate(
    parts: &CoreParts,
    store: &mut Store<Ctx>,
) -> Result<(wasmtime::Instance, wasmtime::Memory), Failure> {
    // A trap in the start function is classified like any other (a deep recursion
    // there is `stack`, an endless loop `timeout`); other failures are the module's.
    let instance = parts.pre.instantiate(&mut *store).map_err(|e| {
        if e.downcast_ref::<wasmtime::Trap>().is_some() {
            Failure::Wasm(e)
        } else {
            RuleError::Instantiate(format!("{e:#}")).into()
        }
    })?;
    let memory = instance
        .get_module_export(&mut *store, &parts.exports.memory)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| RuleError::Abi("`memory` export missing at run time".into()))?;
    Ok((instance, memory))
}

fn func(
    instance: &wasmtime::Instance,
    store: &mut Store<Ctx>,
    export: &ModuleExport,
) -> Result<wasmtime::Func, RuleError> {
    instance
        .get_module_export(&mut *store, export)
        .and_then(|e| e.into_func())
        .ok_or_else(|| RuleError::Abi("function export missing at run time".into()))
}

/// Instantiates the module once (its start function runs, under the invocation limits)
/// and copies out the manifest.
pub(super) fn read_manifest(parts: &CoreParts, store: &mut Store<Ctx>) -> Result<Vec<u8>, Failure> {
    let (instance, memory) = instantiate(parts, store)?;
    let f = func(&instance, store, &parts.exports.manifest)?.typed::<(), i64>(&*store)?;
    let (ptr, len) = abi::unpack(f.call(&mut *store, ())?);
    let manifest = abi::guest_slice(memory.data(&*store), ptr, len, "the manifest")?;
    if manifest.len() > abi::MAX_MANIFEST {
        return Err(RuleError::Abi(format!(
            "the manifest is {len} bytes, above the ABI's limit of {} bytes for a manifest \
             (fixed, not a setting; docs/abi.md)",
            abi::MAX_MANIFEST
        ))
        .into());
    }
    Ok(manifest.to_vec())
}

type EntryPoints = (TypedFunc<i32, i32>, TypedFunc<(i32, i32), i64>);

fn entry_points(
    parts: &CoreParts,
    instance: &wasmtime::Instance,
    store: &mut Store<Ctx>,
) -> Result<EntryPoints, Failure> {
    let alloc = func(instance, store, &parts.exports.alloc)?.typed::<i32, i32>(&*store)?;
    let on_event =
        func(instance, store, &parts.exports.on_event)?.typed::<(i32, i32), i64>(&*store)?;
    Ok((alloc, on_event))
}

/// One event in a fresh instance; appends the decoded commands and actions to `output`.
pub(super) fn invoke(
    parts: &CoreParts,
    store: &mut Store<Ctx>,
    event: &[u8],
    output: Output<'_>,
    limits: &InvokeLimits,
    max_args: usize,
) -> Result<usize, Failure> {
    let (instance, memory) = instantiate(parts, store)?;
    let (alloc, on_event) = entry_points(parts, &instance, store)?;
    call(
        parts.abi, store, memory, None, &alloc, &on_event, event, output, limits, max_args,
    )
}

pub(super) type Slot = reuse::Slot<Warm>;

/// A warm instance for `parts`, if it is reset in place and there is one or room for
/// one; `None`: run the event in a fresh instance.
pub(super) fn take_warm(engine: &Engine, parts: &CoreParts) -> Option<Slot> {
    if !engine.inner.reuse || parts.plan.is_none() {
        return None;
    }
    parts.pool.slot(&engine.inner.warm, WARM_INSTANCES as usize)
}

/// One event in a warm instance (`take_warm`), which is reset and kept if the event
/// succeeded and dropped otherwise. Takes the reads port back from the store as the
/// fresh path does.
#[allow(clippy::too_many_arguments)]
pub(super) fn invoke_warm(
    engine: &Engine,
    parts: &CoreParts,
    slot: Slot,
    event: &[u8],
    output: Output<'_>,
    limits: &InvokeLimits,
    state: ReadState,
    reads: &mut Option<Box<dyn RedisReads>>,
) -> Result<usize, RuleError> {
    let max_args = engine.inner.limits.max_args;
    let mut warm = match slot {
        Slot::Idle(mut w) => {
            *w.store.data_mut() = engine.ctx(limits, false, state);
            engine.arm(&mut w.store);
            w
        }
        Slot::New(reservation) => {
            let store = engine.new_store(limits, false, state);
            match new_warm(parts, store, reservation) {
                Ok(w) => Box::new(w),
                Err((f, mut store)) => {
                    let e = engine.classify(f, &store, limits);
                    if let Some(port) = store.data_mut().reads.port.take() {
                        *reads = Some(port);
                    }
                    return Err(e);
                }
            }
        }
    };
    let w = &mut *warm;
    let r = call(
        parts.abi,
        &mut w.store,
        w.memory,
        w.map,
        // By reference: a clone of a typed function clones its registered type, two
        // atomic reference counts per event (2% of a warm event in `perf`).
        &w.alloc,
        &w.on_event,
        event,
        output,
        limits,
        max_args,
    );
    let r = r.map_err(|f| engine.classify(f, &w.store, limits));
    if let Some(port) = w.store.data_mut().reads.port.take() {
        *reads = Some(port);
    }
    if r.is_ok() && w.reset().is_ok() {
        parts.pool.put(warm);
    } else {
        parts.pool.discard(warm);
    }
    r
}

/// Instantiates `parts` in `store` and snapshots it as a warm instance; on failure the
/// store comes back for classifying the failure.
fn new_warm(
    parts: &CoreParts,
    mut store: Store<Ctx>,
    reservation: Reservation,
) -> Result<Warm, (Failure, Store<Ctx>)> {
    let Some(plan) = parts.plan.as_ref() else {
        return Err((RuleError::Abi("no reset plan".into()).into(), store));
    };
    let (instance, memory) = match instantiate(parts, &mut store) {
        Ok(x) => x,
        Err(f) => return Err((f, store)),
    };
    let (alloc, on_event) = match entry_points(parts, &instance, &mut store) {
        Ok(x) => x,
        Err(f) => return Err((f, store)),
    };
    Warm::new(
        store,
        Entry {
            instance,
            memory,
            alloc,
            on_event,
        },
        plan,
        reservation,
    )
}

/// Allocates in the guest, copies `event` in, calls `wasmrule_on_event` and decodes
/// the result into `output`.
#[allow(clippy::too_many_arguments)]
fn call(
    abi_version: u32,
    store: &mut Store<Ctx>,
    memory: Memory,
    map: Option<Memory>,
    alloc: &TypedFunc<i32, i32>,
    on_event: &TypedFunc<(i32, i32), i64>,
    event: &[u8],
    output: Output<'_>,
    limits: &InvokeLimits,
    max_args: usize,
) -> Result<usize, Failure> {
    let len =
        u32::try_from(event.len()).map_err(|_| RuleError::Abi("event larger than 4 GiB".into()))?;
    let ptr = alloc.call(&mut *store, len as i32)? as u32;
    if ptr == 0 && len > 0 {
        return Err(
            RuleError::Abi(format!("wasmrule_alloc({len}) returned 0 (out of memory?)")).into(),
        );
    }
    let dst = abi::guest_slice(memory.data(&*store), ptr, len, "wasmrule_alloc buffer")?;
    let (start, end) = (ptr as usize, ptr as usize + dst.len());
    memory.data_mut(&mut *store)[start..end].copy_from_slice(event);
    if let Some(map) = map {
        reuse::mark(map.data_mut(&mut *store), start, end);
    }

    let (optr, olen) = abi::unpack(on_event.call(&mut *store, (ptr as i32, len as i32))?);
    if olen as usize > limits.max_output_bytes {
        return Err(RuleError::OutputTooLarge {
            bytes: olen as usize,
            max: limits.max_output_bytes,
        }
        .into());
    }
    let buf = abi::guest_slice(memory.data(&*store), optr, olen, "result buffer")?;
    let output_limits = abi::OutputLimits {
        max_commands: limits.max_commands,
        max_args,
    };
    Ok(match abi_version {
        1 => abi::decode_result(buf, output_limits, output.out)?,
        _ => abi::decode_result_v2(buf, output_limits, output.out, output.actions)?,
    })
}
