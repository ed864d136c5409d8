//! Core-module rules (ABI v1 and v2, `abi.rs`): pre-linking, reading the manifest, and
//! one invocation: allocate in the guest, copy the event in, call, decode the result.

use wasmtime::{InstancePre, Module, ModuleExport, Store};

use super::{Ctx, Engine, Failure, InvokeLimits, LoadError, RuleError, abi};
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
}

/// Where one invocation's output goes.
pub(super) struct Output<'a> {
    pub(super) out: &'a mut Commands,
    pub(super) actions: &'a mut Vec<MqttAction>,
}

/// Checks `module` against the ABI and pre-links it.
pub(super) fn prepare(engine: &Engine, module: &Module) -> Result<CoreParts, LoadError> {
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
    let exports = Exports {
        memory: export(abi::EXPORT_MEMORY)?,
        manifest: export(abi::EXPORT_MANIFEST)?,
        alloc: export(abi::EXPORT_ALLOC)?,
        on_event: export(abi::EXPORT_ON_EVENT)?,
    };
    Ok(CoreParts { pre, exports, abi })
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
    let alloc = func(&instance, store, &parts.exports.alloc)?.typed::<i32, i32>(&*store)?;
    let on_event =
        func(&instance, store, &parts.exports.on_event)?.typed::<(i32, i32), i64>(&*store)?;

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
    Ok(match parts.abi {
        1 => abi::decode_result(buf, output_limits, output.out)?,
        _ => abi::decode_result_v2(buf, output_limits, output.out, output.actions)?,
    })
}
