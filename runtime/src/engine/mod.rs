//! Compiling, checking and invoking rules in wasmtime.
//!
//! One [`Engine`] per process holds the wasmtime engine (pooling allocator, epoch
//! interruption, stack cap) and an epoch ticker thread. [`Engine::compile`] turns module
//! bytes into a [`Rule`]: validated, checked against the ABI (`abi.rs`), pre-linked
//! (`InstancePre`) and with its manifest read. [`Rule::invoke`] runs one event in a fresh
//! instance under the configured limits, so no event can see another's state, and
//! decodes the commands.
//!
//! This module does not know about MQTT, Redis or files; `reload.rs` decides what to
//! compile and `dispatch.rs` what to invoke.

pub mod abi;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{
    InstanceAllocationStrategy, InstancePre, Linker, Module, ModuleExport, PoolingAllocationConfig,
    ResourceLimiter, Store, Trap,
};

use crate::commands::Commands;
pub use abi::{ABI_VERSION, Manifest};

/// Length of one epoch tick: the resolution of the CPU deadline.
const TICK: Duration = Duration::from_millis(1);
/// Memory per pooled slot that is reset in place rather than returned to the kernel
/// (see `Engine::new`); covers a typical Rust rule's stack, data and heap.
const KEEP_RESIDENT: usize = 1 << 20;

/// Per-invocation limits. Defaults are in `config.rs` and `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget of one invocation (epoch deadline, 1 ms resolution).
    pub timeout: Duration,
    /// Largest linear memory a rule may grow to, in bytes.
    pub max_memory: usize,
    /// Largest table, in elements.
    pub max_table_elements: usize,
    /// Largest wasm call stack, in bytes.
    pub max_wasm_stack: usize,
    /// Most commands one invocation may return.
    pub max_commands: usize,
    /// Most arguments (name included) in one command.
    pub max_args: usize,
    /// Largest result buffer, in bytes.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(10),
            max_memory: 32 << 20,
            max_table_elements: 10_000,
            max_wasm_stack: 512 << 10,
            max_commands: 1_000,
            max_args: 1_024,
            max_output_bytes: 1 << 20,
        }
    }
}

/// Limits one invocation runs under (a tenant's), at most the engine's [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeLimits {
    pub timeout: Duration,
    pub max_memory: usize,
    pub max_commands: usize,
    pub max_output_bytes: usize,
}

impl From<&Limits> for InvokeLimits {
    fn from(l: &Limits) -> Self {
        InvokeLimits {
            timeout: l.timeout,
            max_memory: l.max_memory,
            max_commands: l.max_commands,
            max_output_bytes: l.max_output_bytes,
        }
    }
}

/// Why a module could not be loaded as a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly module (the file does not start with the `\\0asm` header)")]
    NotWasm,
    #[error(
        "is WebAssembly text, not binary; assemble it first (`wat2wasm rule.wat -o rule.wasm`)"
    )]
    WasmText,
    #[error("is a WebAssembly component; this runtime loads core modules (docs/abi.md)")]
    Component,
    #[error("invalid WebAssembly (truncated, half-written or corrupt?): {0}")]
    Invalid(String),
    #[error("not a wasmrule rule: it exports no `wasmrule_abi_version_N` marker (see docs/abi.md)")]
    NotARule,
    #[error(
        "built for rule ABI version {found}, but this wasmrule supports version {supported}; \
         rebuild the rule with an SDK for ABI v{supported} (docs/abi.md)"
    )]
    AbiVersion { found: String, supported: u32 },
    #[error(
        "imports `{module}::{name}`, but rules may import nothing (no WASI: build for \
         wasm32-unknown-unknown or with --stub-wasi)"
    )]
    Import { module: String, name: String },
    #[error("missing export `{0}` (docs/abi.md lists the required exports)")]
    MissingExport(&'static str),
    #[error("ABI violation: {0}")]
    Abi(String),
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("failed while reading its manifest: {0}")]
    Start(RuleError),
}

/// Why one invocation failed. It affects only that event and that rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule reported an error: {0}")]
    Rule(String),
    #[error("timed out: ran past its {0:?} deadline")]
    Timeout(Duration),
    #[error("ran out of fuel")]
    OutOfFuel,
    #[error("memory limit: tried to grow linear memory to {desired} bytes, limit is {limit}")]
    Memory { desired: usize, limit: usize },
    #[error("wasm stack exhausted (limit {0} bytes)")]
    Stack(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("output too large: {bytes} bytes, limit is {max}")]
    OutputTooLarge { bytes: usize, max: usize },
    #[error("returned {count} commands, limit is {max}")]
    TooManyCommands { count: usize, max: usize },
    #[error("ABI violation: {0}")]
    Abi(String),
    #[error("could not instantiate: {0}")]
    Instantiate(String),
}

impl RuleError {
    /// A short stable name for counting and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleError::Rule(_) => "rule_error",
            RuleError::Timeout(_) => "timeout",
            RuleError::OutOfFuel => "out_of_fuel",
            RuleError::Memory { .. } => "memory",
            RuleError::Stack(_) => "stack",
            RuleError::Trap(_) => "trap",
            RuleError::OutputTooLarge { .. } => "output_too_large",
            RuleError::TooManyCommands { .. } => "too_many_commands",
            RuleError::Abi(_) => "abi",
            RuleError::Instantiate(_) => "instantiate",
        }
    }
}

/// The wasmtime engine and the limits every rule runs under. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    wasmtime: wasmtime::Engine,
    linker: Linker<Ctx>,
    limits: Limits,
    defaults: InvokeLimits,
    // Fuel per invocation instead of the epoch deadline (measured in benches only; see
    // docs/security.md for why the runtime uses the deadline).
    fuel: Option<u64>,
}

impl Engine {
    /// Builds the engine and starts its epoch ticker. `max_instances` bounds how many
    /// invocations may run at the same time (one per worker thread, plus loads).
    ///
    /// # Errors
    ///
    /// When wasmtime rejects the configuration (for example, this CPU is unsupported).
    pub fn new(limits: Limits, max_instances: u32) -> anyhow::Result<Engine> {
        Self::build(limits, max_instances, None)
    }

    /// An engine that bounds CPU with `fuel` units per invocation instead of the epoch
    /// deadline: for measuring the two against each other.
    ///
    /// # Errors
    ///
    /// As [`Engine::new`].
    pub fn with_fuel(limits: Limits, max_instances: u32, fuel: u64) -> anyhow::Result<Engine> {
        Self::build(limits, max_instances, Some(fuel))
    }

    fn build(limits: Limits, max_instances: u32, fuel: Option<u64>) -> anyhow::Result<Engine> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(max_instances)
            .total_memories(max_instances)
            .total_tables(max_instances)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(limits.max_memory)
            .table_elements(limits.max_table_elements)
            // Reset a used slot by restoring only the pages the guest dirtied (Linux
            // PAGEMAP_SCAN) instead of unmapping them: no madvise, hence no TLB
            // shootdown across cores per event, and no page faults on the next one.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut cfg = wasmtime::Config::new();
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(fuel.is_none())
            .consume_fuel(fuel.is_some())
            .max_wasm_stack(limits.max_wasm_stack)
            .wasm_multi_memory(false)
            .wasm_memory64(false)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            // Native-to-wasm address maps only improve trap backtraces; without them a
            // loaded rule takes less memory.
            .generate_address_map(false);
        let wasmtime = wasmtime::Engine::new(&cfg)?;
        if fuel.is_none() {
            spawn_ticker(&wasmtime)?;
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                linker: Linker::new(&wasmtime),
                wasmtime,
                defaults: InvokeLimits::from(&limits),
                limits,
                fuel,
            }),
        })
    }

    /// The limits rules run under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Compiles and checks a rule module and reads its manifest. Slow (milliseconds to
    /// seconds): never call it on the event path.
    ///
    /// # Errors
    ///
    /// A [`LoadError`] saying why the bytes are not a usable rule.
    pub fn compile(&self, bytes: &[u8]) -> Result<Rule, LoadError> {
        sniff(bytes)?;
        let module = Module::from_binary(&self.inner.wasmtime, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        abi::check_module(&module)?;
        let pre = self
            .inner
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
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
        let mut rule = Rule {
            engine: self.clone(),
            pre,
            exports,
            manifest: Manifest {
                name: String::new(),
                version: None,
                filters: Vec::new(),
                sdk: None,
            },
            size: bytes.len(),
        };
        let raw = rule.read_manifest().map_err(LoadError::Start)?;
        rule.manifest = abi::parse_manifest(&raw)?;
        Ok(rule)
    }
}

/// Tells binary wasm from text, components and other files before compiling.
fn sniff(bytes: &[u8]) -> Result<(), LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Err(LoadError::Component),
        Some([0, b'a', b's', b'm', ..]) => Err(LoadError::Invalid(
            "unknown WebAssembly binary version".into(),
        )),
        _ if bytes.starts_with(b"\0asm") => Err(LoadError::Invalid(
            "file ends inside the WebAssembly header".into(),
        )),
        _ => {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]);
            if head.trim_start().starts_with("(module") {
                Err(LoadError::WasmText)
            } else {
                Err(LoadError::NotWasm)
            }
        }
    }
}

/// Advances the engine's epoch every [`TICK`] until the engine is dropped.
fn spawn_ticker(engine: &wasmtime::Engine) -> anyhow::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmrule-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })?;
    Ok(())
}

struct Exports {
    memory: ModuleExport,
    manifest: ModuleExport,
    alloc: ModuleExport,
    on_event: ModuleExport,
}

/// A compiled, checked rule, ready to be invoked from any thread.
pub struct Rule {
    engine: Engine,
    pre: InstancePre<Ctx>,
    exports: Exports,
    manifest: Manifest,
    size: usize,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("manifest", &self.manifest)
            .field("size", &self.size)
            .finish()
    }
}

/// Store data: the resource limiter, which also remembers why it refused growth.
struct Ctx {
    max_memory: usize,
    max_table_elements: usize,
    memory_refused: Option<usize>,
}

impl ResourceLimiter for Ctx {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_refused = Some(desired);
            // Trap rather than return -1 from memory.grow: a rule that cannot get memory
            // cannot produce a meaningful result, and the typed error says why.
            wasmtime::bail!("memory limit exceeded");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.max_table_elements)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// A failure inside an invocation, before it is classified.
enum Failure {
    Wasm(wasmtime::Error),
    Rule(RuleError),
}

impl From<wasmtime::Error> for Failure {
    fn from(e: wasmtime::Error) -> Self {
        Failure::Wasm(e)
    }
}

impl From<RuleError> for Failure {
    fn from(e: RuleError) -> Self {
        Failure::Rule(e)
    }
}

impl Rule {
    /// What the rule declared about itself.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Size of the module file in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs the rule on one event (JSON bytes) in a fresh instance and appends the
    /// commands it returns to `out`. On error nothing is appended.
    ///
    /// # Errors
    ///
    /// A [`RuleError`] for a trap, a limit, an ABI violation or an error the rule
    /// reported.
    pub fn invoke(&self, event: &[u8], out: &mut Commands) -> Result<usize, RuleError> {
        self.invoke_with(event, out, &self.engine.inner.defaults)
    }

    /// [`Rule::invoke`] under `limits` (a tenant's) instead of the engine's defaults.
    /// Memory beyond the engine's cap is never granted.
    ///
    /// # Errors
    ///
    /// As [`Rule::invoke`].
    pub fn invoke_with(
        &self,
        event: &[u8],
        out: &mut Commands,
        limits: &InvokeLimits,
    ) -> Result<usize, RuleError> {
        let mut store = self.new_store(limits);
        let r = self.invoke_in(&mut store, event, out, limits);
        r.map_err(|f| self.classify(f, &store, limits))
    }

    fn new_store(&self, limits: &InvokeLimits) -> Store<Ctx> {
        let inner = &self.engine.inner;
        let mut store = Store::new(
            &inner.wasmtime,
            Ctx {
                max_memory: limits.max_memory.min(inner.limits.max_memory),
                max_table_elements: inner.limits.max_table_elements,
                memory_refused: None,
            },
        );
        store.limiter(|ctx| ctx);
        if let Some(fuel) = inner.fuel {
            // Only fails when fuel is not enabled, which `with_fuel` guarantees it is.
            let _ = store.set_fuel(fuel);
            return store;
        }
        // Whole ticks, plus one: the current tick may be about to end.
        let ticks = limits.timeout.as_micros().div_ceil(TICK.as_micros()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    fn invoke_in(
        &self,
        store: &mut Store<Ctx>,
        event: &[u8],
        out: &mut Commands,
        limits: &InvokeLimits,
    ) -> Result<usize, Failure> {
        let instance = self
            .pre
            .instantiate(&mut *store)
            .map_err(|e| RuleError::Instantiate(format!("{e:#}")))?;
        let memory = instance
            .get_module_export(&mut *store, &self.exports.memory)
            .and_then(|e| e.into_memory())
            .ok_or_else(|| RuleError::Abi("`memory` export missing at run time".into()))?;
        let func = |store: &mut Store<Ctx>, export: &ModuleExport| {
            instance
                .get_module_export(&mut *store, export)
                .and_then(|e| e.into_func())
                .ok_or_else(|| RuleError::Abi("function export missing at run time".into()))
        };
        let alloc = func(store, &self.exports.alloc)?.typed::<i32, i32>(&*store)?;
        let on_event = func(store, &self.exports.on_event)?.typed::<(i32, i32), i64>(&*store)?;

        let len = u32::try_from(event.len())
            .map_err(|_| RuleError::Abi("event larger than 4 GiB".into()))?;
        let ptr = alloc.call(&mut *store, len as i32)? as u32;
        if ptr == 0 && len > 0 {
            return Err(RuleError::Abi(format!(
                "wasmrule_alloc({len}) returned 0 (out of memory?)"
            ))
            .into());
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
            max_args: self.engine.inner.limits.max_args,
        };
        Ok(abi::decode_result(buf, output_limits, out)?)
    }

    /// Instantiates the rule once (its start function runs, under the same limits) and
    /// copies out the manifest.
    fn read_manifest(&self) -> Result<Vec<u8>, RuleError> {
        let limits = self.engine.inner.defaults.clone();
        let mut store = self.new_store(&limits);
        let r = (|| -> Result<Vec<u8>, Failure> {
            let instance = self
                .pre
                .instantiate(&mut store)
                .map_err(|e| RuleError::Instantiate(format!("{e:#}")))?;
            let memory = instance
                .get_module_export(&mut store, &self.exports.memory)
                .and_then(|e| e.into_memory())
                .ok_or_else(|| RuleError::Abi("`memory` export missing".into()))?;
            let f = instance
                .get_module_export(&mut store, &self.exports.manifest)
                .and_then(|e| e.into_func())
                .ok_or_else(|| RuleError::Abi("`wasmrule_manifest` export missing".into()))?
                .typed::<(), i64>(&store)?;
            let (ptr, len) = abi::unpack(f.call(&mut store, ())?);
            if len as usize > abi::MAX_MANIFEST {
                return Err(RuleError::OutputTooLarge {
                    bytes: len as usize,
                    max: abi::MAX_MANIFEST,
                }
                .into());
            }
            Ok(abi::guest_slice(memory.data(&store), ptr, len, "manifest")?.to_vec())
        })();
        r.map_err(|f| self.classify(f, &store, &limits))
    }

    fn classify(&self, failure: Failure, store: &Store<Ctx>, limits: &InvokeLimits) -> RuleError {
        let e = match failure {
            Failure::Rule(r) => return r,
            Failure::Wasm(e) => e,
        };
        if let Some(desired) = store.data().memory_refused {
            return RuleError::Memory {
                desired,
                limit: store.data().max_memory,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => RuleError::Timeout(limits.timeout),
            Some(Trap::OutOfFuel) => RuleError::OutOfFuel,
            Some(Trap::StackOverflow) => RuleError::Stack(self.engine.inner.limits.max_wasm_stack),
            Some(t) => RuleError::Trap(t.to_string()),
            None => RuleError::Trap(format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests;
