//! Compiling, checking and invoking rules in wasmtime.
//!
//! One [`Engine`] per process holds the wasmtime engine (pooling allocator, epoch
//! interruption, stack cap) and an epoch ticker thread. [`Engine::compile`] turns module
//! bytes into a [`Rule`]: validated, checked against the ABI (`abi.rs`), pre-linked
//! (`InstancePre`) and with its manifest read. [`Rule::invoke`] runs one event in a fresh
//! instance under the configured limits, so no event can see another's state, and
//! decodes the commands.
//!
//! Beside it: `limits.rs` (what an invocation may use), `error.rs` (why a load or an
//! invocation failed), `deadline.rs` (the CPU-time deadline), `declared.rs` (declared
//! memories and tables against the limits), `abi.rs` and `component.rs` (the two rule
//! ABIs), `core.rs`, `stack.rs` and `cache.rs`.
//!
//! This module does not know about MQTT, Redis or files; `reload.rs` decides what to
//! compile and `dispatch.rs` what to invoke.

pub mod abi;
pub mod cache;
mod component;
mod core;
mod deadline;
mod declared;
mod error;
mod limits;
mod stack;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{
    InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};

use crate::commands::Commands;
pub use abi::{ABI_VERSION, Manifest};
pub use component::WORLD_VERSION as COMPONENT_WORLD_VERSION;
pub use deadline::{thread_cpu_time, wall_backstop};
pub use error::{LoadError, RuleError};
pub use limits::{InvokeLimits, Limits};
pub use stack::{GUEST_THREAD_STACK, MAX_WASM_STACK, on_guest_stack};

use deadline::{Deadline, TICK};

/// The least time a rule's start function and manifest get at load (off the event
/// path), whatever the per-event deadline.
pub const LOAD_DEADLINE: Duration = Duration::from_secs(1);
/// Core instances (and memories, tables) one component may hold.
const COMPONENT_CORE_INSTANCES: u32 = 64;
/// Memories and tables pooled per concurrent invocation: a few for components.
const COMPONENT_MEMORIES: u32 = 4;
/// Memory per pooled slot that is reset in place rather than returned to the kernel
/// (see `Engine::new`); covers a typical Rust rule's stack, data and heap.
const KEEP_RESIDENT: usize = 1 << 20;

/// The wasmtime engine and the limits every rule runs under. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    wasmtime: wasmtime::Engine,
    linker: Linker<Ctx>,
    component_linker: wasmtime::component::Linker<Ctx>,
    cache: Option<cache::Cache>,
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
        if limits.max_wasm_stack > MAX_WASM_STACK {
            anyhow::bail!(
                "wasm stack cap of {} KiB is above {} KiB, a quarter of the native stack \
                 of the threads that run rules",
                limits.max_wasm_stack >> 10,
                MAX_WASM_STACK >> 10
            );
        }
        let mut pool = PoolingAllocationConfig::new();
        // A component (Python, JavaScript) holds several core instances, each with its
        // memory and table: room for that many per concurrent invocation.
        pool.total_component_instances(max_instances)
            .max_core_instances_per_component(COMPONENT_CORE_INSTANCES)
            .max_memories_per_component(COMPONENT_CORE_INSTANCES)
            .max_tables_per_component(COMPONENT_CORE_INSTANCES)
            .total_core_instances(max_instances * COMPONENT_CORE_INSTANCES)
            .total_memories(max_instances * COMPONENT_MEMORIES)
            .total_tables(max_instances * COMPONENT_MEMORIES)
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
            .wasm_multi_memory(true)
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
                component_linker: wasmtime::component::Linker::new(&wasmtime),
                cache: None,
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

    /// Uses `cache` for compiled code: a restart, or an identical file dropped in again,
    /// loads from it instead of compiling.
    pub fn with_cache(self, cache: cache::Cache) -> Engine {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| Inner {
            wasmtime: arc.wasmtime.clone(),
            linker: Linker::new(&arc.wasmtime),
            component_linker: wasmtime::component::Linker::new(&arc.wasmtime),
            cache: None,
            limits: arc.limits.clone(),
            defaults: arc.defaults.clone(),
            fuel: arc.fuel,
        });
        Engine {
            inner: Arc::new(Inner {
                cache: Some(cache),
                ..inner
            }),
        }
    }

    /// Compiles (or loads from the cache) and checks a rule, core module or component,
    /// and reads its manifest. Slow (milliseconds to seconds): never call it on the
    /// event path.
    ///
    /// # Errors
    ///
    /// A [`LoadError`] saying why the bytes are not a usable rule.
    pub fn compile(&self, bytes: &[u8]) -> Result<Rule, LoadError> {
        let kind = sniff(bytes)?;
        declared::check(bytes, &self.inner.limits)?;
        let w = &self.inner.wasmtime;
        let tag = match kind {
            Kind::Module => "module",
            Kind::Component => "component",
        };
        let key = self.inner.cache.as_ref().map(|c| c.key(w, tag, bytes));
        let cached = match (&self.inner.cache, &key) {
            (Some(c), Some(k)) => c.get(k),
            _ => None,
        };
        let from_cache = cached.is_some();
        let compiled = match (kind, cached) {
            // SAFETY: `Cache::get` only returns bytes this runtime serialized itself
            // with this engine configuration, verified by an HMAC (see cache.rs).
            (Kind::Module, Some(c)) => unsafe { Module::deserialize(w, &c) }.map(Compiled::Module),
            (Kind::Component, Some(c)) => {
                unsafe { wasmtime::component::Component::deserialize(w, &c) }
                    .map(Compiled::Component)
            }
            (Kind::Module, None) => Module::from_binary(w, bytes).map(Compiled::Module),
            (Kind::Component, None) => {
                wasmtime::component::Component::from_binary(w, bytes).map(Compiled::Component)
            }
        }
        .map_err(compile_error)?;
        if let (Some(c), Some(k), false) = (&self.inner.cache, &key, from_cache) {
            let serialized = match &compiled {
                Compiled::Module(m) => m.serialize(),
                Compiled::Component(c) => c.serialize(),
            };
            if let Ok(bytes) = serialized {
                c.put(k, &bytes);
            }
        }
        // The manifest read runs guest code (the start function, the manifest export):
        // on a thread whose stack is known to be big enough, whatever thread compiles.
        let (kind, manifest) = on_guest_stack(|| self.prepare(compiled))
            .map_err(|e| LoadError::Thread(e.to_string()))??;
        Ok(Rule {
            engine: self.clone(),
            kind,
            manifest,
            size: bytes.len(),
            from_cache,
        })
    }

    fn prepare(&self, compiled: Compiled) -> Result<(RuleKind, Manifest), LoadError> {
        Ok(match compiled {
            Compiled::Module(m) => {
                let parts = core::prepare(self, &m)?;
                let raw = self.read_core_manifest(&parts).map_err(LoadError::Start)?;
                (RuleKind::Core(parts), abi::parse_manifest(&raw)?)
            }
            Compiled::Component(c) => {
                let parts = component::prepare(self, &c)?;
                let manifest = self
                    .read_component_manifest(&parts)
                    .map_err(LoadError::Start)?;
                (RuleKind::Component(parts), manifest)
            }
        })
    }

    /// Limits for the instance that reads a manifest at load: the event limits, with at
    /// least [`LOAD_DEADLINE`] of time, since a component's language runtime (CPython,
    /// QuickJS) initialises there and a first instantiation faults its pages in.
    fn load_limits(&self) -> InvokeLimits {
        let mut limits = self.inner.defaults.clone();
        limits.timeout = limits.timeout.max(LOAD_DEADLINE);
        limits
    }

    fn read_core_manifest(&self, parts: &core::CoreParts) -> Result<Vec<u8>, RuleError> {
        let limits = self.load_limits();
        retry_stalled(|| {
            let mut store = self.new_store(&limits, false);
            let r = core::read_manifest(parts, &mut store);
            r.map_err(|f| self.classify(f, &store, &limits))
        })
    }

    fn read_component_manifest(
        &self,
        parts: &component::ComponentParts,
    ) -> Result<Manifest, RuleError> {
        let limits = self.load_limits();
        retry_stalled(|| {
            let mut store = self.new_store(&limits, true);
            let r = component::read_manifest(parts, &mut store);
            r.map_err(|f| self.classify(f, &store, &limits))
        })
    }

    fn new_store(&self, limits: &InvokeLimits, component: bool) -> Store<Ctx> {
        let inner = &self.inner;
        let mut store = Store::new(
            &inner.wasmtime,
            Ctx {
                max_memory: limits.max_memory.min(inner.limits.max_memory),
                max_table_elements: inner.limits.max_table_elements,
                max_instances: if component {
                    COMPONENT_CORE_INSTANCES as usize
                } else {
                    1
                },
                memory_refused: None,
                deadline: Deadline::new(limits.timeout),
            },
        );
        store.limiter(|ctx| ctx);
        if let Some(fuel) = inner.fuel {
            // Only fails when fuel is not enabled, which `with_fuel` guarantees it is.
            let _ = store.set_fuel(fuel);
            return store;
        }
        // The first check at the next tick; only an invocation that lasts that long
        // reads a clock (`deadline.rs`).
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            Ok(deadline::at_deadline(&mut ctx.data_mut().deadline))
        });
        store
    }

    fn classify(&self, failure: Failure, store: &Store<Ctx>, limits: &InvokeLimits) -> RuleError {
        let e = match failure {
            Failure::Rule(r) => return r,
            Failure::Wasm(e) => e,
        };
        if let Some(s) = store.data().deadline.stalled {
            return RuleError::Stalled {
                wall: s.wall,
                cpu: s.cpu,
            };
        }
        if let Some(desired) = store.data().memory_refused {
            return RuleError::Memory {
                desired,
                limit: store.data().max_memory,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => RuleError::Timeout(limits.timeout),
            Some(Trap::OutOfFuel) => RuleError::OutOfFuel,
            Some(Trap::StackOverflow) => RuleError::Stack(self.inner.limits.max_wasm_stack),
            Some(t) => RuleError::Trap(t.to_string()),
            None => RuleError::Trap(format!("{e:#}")),
        }
    }
}

/// Times a manifest read that the host starved ([`RuleError::Stalled`]) is tried again
/// before the load gives up with that error.
const LOAD_STALL_RETRIES: usize = 3;

/// Runs `f` again while it fails as stalled (the host's failure, not the module's), at
/// most [`LOAD_STALL_RETRIES`] more times.
fn retry_stalled<T>(mut f: impl FnMut() -> Result<T, RuleError>) -> Result<T, RuleError> {
    let mut tries = 0;
    loop {
        match f() {
            Err(RuleError::Stalled { .. }) if tries < LOAD_STALL_RETRIES => tries += 1,
            r => return r,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Module,
    Component,
}

enum Compiled {
    Module(Module),
    Component(wasmtime::component::Component),
}

/// A module wasmtime refuses: invalid, or (for what `declared.rs` does not see) beyond
/// the pooling allocator's limits, which is not the module's fault.
fn compile_error(e: wasmtime::Error) -> LoadError {
    let message = format!("{e:#}");
    if message.contains("pooling allocator") || message.contains("exceeds the limit") {
        LoadError::OverLimits(message)
    } else {
        LoadError::Invalid(message)
    }
}

/// Tells binary wasm from text, components and other files before compiling.
fn sniff(bytes: &[u8]) -> Result<Kind, LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Ok(Kind::Module),
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(Kind::Component),
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

enum RuleKind {
    Core(core::CoreParts),
    Component(component::ComponentParts),
}

/// A compiled, checked rule, ready to be invoked from any thread.
pub struct Rule {
    engine: Engine,
    kind: RuleKind,
    manifest: Manifest,
    size: usize,
    from_cache: bool,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("manifest", &self.manifest)
            .field("kind", &self.kind_name())
            .field("size", &self.size)
            .finish()
    }
}

/// Store data: the resource limiter, which also remembers why it refused growth, and
/// the invocation's CPU deadline.
struct Ctx {
    max_memory: usize,
    max_table_elements: usize,
    max_instances: usize,
    memory_refused: Option<usize>,
    deadline: Deadline,
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
        self.max_instances
    }

    fn tables(&self) -> usize {
        self.max_instances
    }

    fn memories(&self) -> usize {
        self.max_instances
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

    /// `module` (core ABI v1) or `component` (WIT world `wasmrule:rule@1.0.0`).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RuleKind::Core(_) => "module",
            RuleKind::Component(_) => "component",
        }
    }

    /// Whether the compiled code came from the cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
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
        let engine = &self.engine;
        let max_args = engine.inner.limits.max_args;
        match &self.kind {
            RuleKind::Core(parts) => {
                let mut store = engine.new_store(limits, false);
                let r = core::invoke(parts, &mut store, event, out, limits, max_args);
                r.map_err(|f| engine.classify(f, &store, limits))
            }
            RuleKind::Component(parts) => {
                let mut store = engine.new_store(limits, true);
                let r = component::invoke(parts, &mut store, event, out, limits, max_args);
                r.map_err(|f| engine.classify(f, &store, limits))
            }
        }
    }
}

#[cfg(test)]
mod tests;
