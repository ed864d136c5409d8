//! Compiling, checking and invoking rules in wasmtime.
//!
//! One [`Engine`] per process holds the wasmtime engine (pooling allocator, epoch
//! interruption, stack cap) and an epoch ticker thread. [`Engine::compile`] turns module
//! bytes into a [`Rule`]: validated, checked against the ABI (`abi.rs`), pre-linked
//! (`InstancePre`) and with its manifest read. [`Rule::invoke`] runs one event under the
//! configured limits in an instance that is fresh or reset to its state right after
//! instantiation (core modules, `reuse.rs`), so no event can see another's state, and
//! decodes the commands.
//!
//! Beside it: `limits.rs` (what an invocation may use), `error.rs` (why a load or an
//! invocation failed), `deadline.rs` (the CPU-time deadline), `declared.rs` (declared
//! memories and tables against the limits), `abi.rs` and `component.rs` (the two rule
//! ABIs), `core.rs`, `reuse.rs` and `reuse_plan.rs` (warm core instances and their reset),
//! `stack.rs` and `cache.rs`.
//!
//! This module does not know about MQTT, Redis or files; `reload.rs` decides what to
//! compile and `dispatch.rs` what to invoke.

pub mod abi;
pub mod cache;
mod component;
mod component_v2;
mod core;
mod deadline;
mod declared;
mod error;
mod host;
mod limits;
mod reuse;
mod reuse_component;
mod reuse_component_plan;
mod reuse_marks;
mod reuse_plan;
mod stack;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};

use wasmtime::{
    InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};

use crate::actions::MqttAction;
use crate::commands::Commands;
pub use abi::{ABI_VERSION, Manifest};
pub use component::WORLD_VERSION as COMPONENT_WORLD_VERSION;
pub use deadline::{thread_cpu_time, wall_backstop};
pub use error::{LoadError, RuleError};
pub use host::{ReadBudget, ReadCode, RedisReads, Reply};
pub use limits::{InvokeLimits, Limits};
pub use stack::{GUEST_THREAD_STACK, MAX_WASM_STACK, on_guest_stack};

use deadline::{Deadline, TICK};
use host::ReadState;

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
/// Warm core instances (`reuse.rs`) the engine keeps at most, over all rules: each holds
/// a pooled instance, memory and table slot beyond those for concurrent invocations.
/// Past it, rules run in fresh instances.
pub const WARM_INSTANCES: u32 = 512;

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
    /// Whether core instances are kept and reset in place (`reuse.rs`).
    reuse: bool,
    /// Live warm instances, engine-wide; at most [`WARM_INSTANCES`].
    warm: Arc<AtomicUsize>,
    /// Live warm component instances, engine-wide; at most
    /// [`reuse_component::WARM_COMPONENTS`].
    warm_components: Arc<AtomicUsize>,
    /// The compiled code of every rule alive, by a hash of its bytes: a rule whose
    /// bytes are those of a rule already loaded (the same rule in several tenants'
    /// directories, a file written again unchanged) shares that code instead of holding
    /// a copy of its own (a core module's is about 200 KB, a Python component's tens of
    /// MB). Only the code is shared: each rule has its own instances, manifest read and
    /// warm pool.
    live_code: Arc<Mutex<HashMap<[u8; 32], Weak<Compiled>>>>,
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
        let pagemap = if swap_active() {
            wasmtime::Enabled::No
        } else {
            wasmtime::Enabled::Auto
        };
        let cfg = wasmtime_config(&limits, max_instances, fuel, pagemap);
        let wasmtime = wasmtime::Engine::new(&cfg)?;
        if fuel.is_none() {
            spawn_ticker(&wasmtime)?;
        }
        Ok(Engine {
            inner: Arc::new(Inner {
                linker: core_linker(&wasmtime)?,
                component_linker: component_linker(&wasmtime)?,
                cache: None,
                wasmtime,
                defaults: InvokeLimits::from(&limits),
                limits,
                fuel,
                reuse: reuse::available(),
                warm: Arc::new(AtomicUsize::new(0)),
                warm_components: Arc::new(AtomicUsize::new(0)),
                live_code: Arc::default(),
            }),
        })
    }

    /// The same engine (without a compiled-code cache), but every core-module event
    /// runs in a fresh instance instead of a warm one reset in place: for comparing the
    /// two (benches, fuzzing). Rules compiled before keep the engine they were
    /// compiled with.
    pub fn fresh_instances(self) -> Engine {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| arc.copy());
        Engine {
            inner: Arc::new(Inner {
                reuse: false,
                ..inner
            }),
        }
    }

    /// Whether core-module events run in warm instances reset in place (`reuse.rs`):
    /// false on kernels without `PAGEMAP_SCAN` and after [`Engine::fresh_instances`].
    pub fn reuses_instances(&self) -> bool {
        self.inner.reuse
    }

    /// The limits rules run under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Uses `cache` for compiled code: a restart, or an identical file dropped in again,
    /// loads from it instead of compiling.
    pub fn with_cache(self, cache: cache::Cache) -> Engine {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| arc.copy());
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
        // Core modules are compiled with the exports their reset needs (`reuse_plan.rs`),
        // components with their accessor (`reuse_component_plan.rs`); the tag keeps
        // cache entries of code compiled before that apart.
        let tag = match kind {
            Kind::Module => "module+reset-exports-2+marks-1",
            Kind::Component => "component+reset-access-1",
        };
        // A component's rewrite reads all its code (a tenth of a second for Python's):
        // only done to compile it; compiled code tells itself whether it has the
        // accessor (`reuse_component_plan::plan_of`).
        let instrumented = match kind {
            Kind::Module => Some(reuse_plan::instrument(bytes)),
            Kind::Component => None,
        };
        let code_key: [u8; 32] = Sha256::new()
            .chain_update(tag)
            .chain_update([0])
            .chain_update(bytes)
            .finalize()
            .into();
        if let Some(code) = self.live_code(&code_key) {
            return self.finish(code, instrumented, bytes.len(), true);
        }
        let key = self.inner.cache.as_ref().map(|c| c.key(w, tag, bytes));
        let cached = match (&self.inner.cache, &key) {
            (Some(c), Some(k)) => c.get(k),
            _ => None,
        };
        let from_cache = cached.is_some();
        let mut cacheable = true;
        let mut compiled = match cached {
            Some(entry) => load_entry(w, kind, entry),
            None => match &instrumented {
                Some(i) => compile_module(w, i).map(Compiled::Module),
                None => compile_component(w, bytes, &mut cacheable),
            },
        }
        .map_err(compile_error)?;
        if let (Some(c), Some(k), false, true) = (&self.inner.cache, &key, from_cache, cacheable) {
            let serialized = match &compiled {
                Compiled::Module(m) => m.serialize(),
                Compiled::Component(c) => c.serialize(),
            };
            // Serve from the entry just written, mapped, rather than from the compiler's
            // copy in anonymous memory (cache.rs: what mapping saves).
            if let Some(entry) = serialized.ok().and_then(|bytes| c.put(k, &bytes)) {
                match map_entry(w, kind, &entry) {
                    Ok(mapped) => compiled = mapped,
                    // `noexec` cache directory: keep the compiler's copy.
                    Err(e) => tracing::debug!("cache entry just written not mapped: {e:#}"),
                }
            }
        }
        if !from_cache {
            release_compiler_memory();
        }
        let code = Arc::new(compiled);
        self.inner
            .live_code
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(code_key, Arc::downgrade(&code));
        self.finish(code, instrumented, bytes.len(), from_cache)
    }

    /// The compiled code of a live rule with the key `key`, if there is one (and
    /// forgets the keys of code no rule holds any more).
    fn live_code(&self, key: &[u8; 32]) -> Option<Arc<Compiled>> {
        let mut live = self
            .inner
            .live_code
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        live.retain(|_, code| code.strong_count() > 0);
        live.get(key).and_then(Weak::upgrade)
    }

    /// Pre-links `code` and reads the rule's manifest: the part of a load that is the
    /// rule's own even when its code is shared.
    /// `instrumented`: a core module's rewrite, which holds its reset plan (a
    /// component's plan is read from its compiled code).
    fn finish(
        &self,
        code: Arc<Compiled>,
        instrumented: Option<reuse_plan::Instrumented>,
        size: usize,
        from_cache: bool,
    ) -> Result<Rule, LoadError> {
        // The manifest read runs guest code (the start function, the manifest export):
        // on a thread whose stack is known to be big enough, whatever thread compiles.
        let (kind, manifest) = on_guest_stack(|| self.prepare(&code, instrumented))
            .map_err(|e| LoadError::Thread(e.to_string()))??;
        Ok(Rule {
            engine: self.clone(),
            kind,
            manifest,
            size,
            from_cache,
            code,
        })
    }

    fn prepare(
        &self,
        compiled: &Compiled,
        instrumented: Option<reuse_plan::Instrumented>,
    ) -> Result<(RuleKind, Manifest), LoadError> {
        Ok(match compiled {
            Compiled::Module(m) => {
                let plan = instrumented.and_then(|i| i.plan.ok());
                let parts = core::prepare(self, m, plan)?;
                let raw = self.read_core_manifest(&parts).map_err(LoadError::Start)?;
                (RuleKind::Core(parts), abi::parse_manifest(&raw)?)
            }
            Compiled::Component(c) => {
                let plan = reuse_component_plan::plan_of(&self.inner.wasmtime, c);
                let parts = component::prepare(self, c, plan)?;
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
            let mut store = self.new_store(&limits, false, ReadState::default());
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
            let mut store = self.new_store(&limits, true, ReadState::default());
            let r = component::read_manifest(parts, &mut store);
            r.map_err(|f| self.classify(f, &store, &limits))
        })
    }

    /// The store data of one invocation.
    fn ctx(&self, limits: &InvokeLimits, component: bool, reads: ReadState) -> Ctx {
        let inner = &self.inner;
        Ctx {
            max_memory: limits.max_memory.min(inner.limits.max_memory),
            max_table_elements: inner.limits.max_table_elements,
            max_instances: if component {
                COMPONENT_CORE_INSTANCES as usize
            } else {
                1
            },
            // A core module's memory and the map of its writes (`reuse_marks.rs`).
            max_memories: if component {
                COMPONENT_CORE_INSTANCES as usize
            } else {
                2
            },
            memory_refused: None,
            deadline: Deadline::new(limits.timeout),
            reads,
        }
    }

    fn new_store(&self, limits: &InvokeLimits, component: bool, reads: ReadState) -> Store<Ctx> {
        let mut store = Store::new(&self.inner.wasmtime, self.ctx(limits, component, reads));
        store.limiter(|ctx| ctx);
        if self.inner.fuel.is_none() {
            store.epoch_deadline_callback(|mut ctx| {
                Ok(deadline::at_deadline(&mut ctx.data_mut().deadline))
            });
        }
        self.arm(&mut store);
        store
    }

    /// Gives `store` a whole invocation's fuel, or its first epoch deadline; done again
    /// before each event a warm store runs.
    fn arm(&self, store: &mut Store<Ctx>) {
        if let Some(fuel) = self.inner.fuel {
            // Only fails when fuel is not enabled, which `with_fuel` guarantees it is.
            let _ = store.set_fuel(fuel);
            return;
        }
        // The first check at the next tick; only an invocation that lasts that long
        // reads a clock (`deadline.rs`).
        store.set_epoch_deadline(1);
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

impl Inner {
    /// A copy sharing the wasmtime engine, without the cache.
    fn copy(&self) -> Inner {
        Inner {
            wasmtime: self.wasmtime.clone(),
            linker: self.linker.clone(),
            component_linker: self.component_linker.clone(),
            cache: None,
            limits: self.limits.clone(),
            defaults: self.defaults.clone(),
            fuel: self.fuel,
            reuse: self.reuse,
            warm: self.warm.clone(),
            warm_components: self.warm_components.clone(),
            live_code: self.live_code.clone(),
        }
    }
}

/// Gives the memory cranelift freed back to the system, on every thread of the rayon
/// pool the compilation ran on (wasmtime's parallel compilation; `reload.rs` gives each
/// compilation a pool of its own) and this one. mimalloc purges freed pages only when a
/// thread calls into it again, and those threads go idle or exit, leaving their heaps
/// behind: 100 distinct rules loaded one by one took 103 MB RSS, 82 MB with this
/// (docs/performance.md, section 2). Harmless under another global allocator: mimalloc
/// then has nothing of its own to purge.
fn release_compiler_memory() {
    // SAFETY: mi_collect only walks and purges the calling thread's own heap.
    rayon::broadcast(|_| unsafe { libmimalloc_sys::mi_collect(true) });
    // SAFETY: as above, for this thread.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// wasmtime's configuration (see `Engine::build`).
fn wasmtime_config(
    limits: &Limits,
    max_instances: u32,
    fuel: Option<u64>,
    pagemap: wasmtime::Enabled,
) -> wasmtime::Config {
    let pool = pooling(limits, max_instances, pagemap);
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
    // WASMRULE_PERF_MAP=1: name the rules' compiled functions in /tmp/perf-<pid>.map,
    // so that `perf report` shows which function of a rule the time goes to.
    if std::env::var_os("WASMRULE_PERF_MAP").is_some_and(|v| v == "1") {
        cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    cfg
}

/// The pooling allocator's configuration for `max_instances` concurrent invocations
/// (and the warm instances) under `limits`.
fn pooling(
    limits: &Limits,
    max_instances: u32,
    pagemap: wasmtime::Enabled,
) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    // A component (Python, JavaScript) holds several core instances, each with its
    // memory and table: room for that many per concurrent invocation.
    // Plus one instance, memory and table for each warm core instance, and as much as
    // a concurrent invocation's for each warm component instance.
    let components = max_instances + reuse_component::WARM_COMPONENTS;
    pool.total_component_instances(components)
        .max_core_instances_per_component(COMPONENT_CORE_INSTANCES)
        .max_memories_per_component(COMPONENT_CORE_INSTANCES)
        .max_tables_per_component(COMPONENT_CORE_INSTANCES)
        .total_core_instances(components * COMPONENT_CORE_INSTANCES + WARM_INSTANCES)
        // Two memories per warm core instance: its own and the map of its writes
        // (`reuse_marks.rs`).
        .total_memories(components * COMPONENT_MEMORIES + 2 * WARM_INSTANCES)
        .total_tables(components * COMPONENT_MEMORIES + WARM_INSTANCES)
        .max_memories_per_module(2)
        .max_tables_per_module(1)
        .max_memory_size(limits.max_memory)
        .table_elements(limits.max_table_elements)
        // Reset a used slot by restoring only the pages the guest dirtied (Linux
        // PAGEMAP_SCAN) instead of unmapping them: no madvise, hence no TLB
        // shootdown across cores per event, and no page faults on the next one.
        // Not with swap on: wasmtime 48's scan skips a dirty page that is swapped
        // out, and the slot's next instance would read it (docs/security.md).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(pagemap);
    pool
}

/// Whether the kernel has a swap area on (`/proc/swaps` lists one, or cannot be read):
/// then wasmtime's own `PAGEMAP_SCAN` reset is off (see `Engine::build`).
fn swap_active() -> bool {
    match std::fs::read_to_string("/proc/swaps") {
        Ok(s) => s.lines().skip(1).any(|l| !l.trim().is_empty()),
        Err(_) => true,
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

/// Compiles a core module with its reset's exports and, when it is reset in place, with
/// marks on its writes (`reuse_marks.rs`); without the marks if they cannot be added or
/// their code does not compile (`core::prepare` then resets it without).
fn compile_module(
    engine: &wasmtime::Engine,
    i: &reuse_plan::Instrumented,
) -> wasmtime::Result<Module> {
    if i.plan.is_ok()
        && let Some(marked) = reuse_marks::mark_writes(&i.bytes)
    {
        match Module::from_binary(engine, &marked) {
            Ok(m) => return Ok(m),
            Err(e) => tracing::debug!("module with write marks did not compile: {e:#}"),
        }
    }
    Module::from_binary(engine, &i.bytes)
}

/// Compiles a component rewritten for its reset (`reuse_component_plan.rs`), or as it
/// came when it cannot be reset in place; `cacheable` is cleared when the rewrite failed
/// to compile and the bytes as they came were compiled instead.
fn compile_component(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    cacheable: &mut bool,
) -> wasmtime::Result<Compiled> {
    use wasmtime::component::Component;
    let i = reuse_component_plan::instrument(bytes);
    let c = match &i.plan {
        Ok(_) => match Component::from_binary(engine, &i.bytes) {
            Ok(c) => Ok(c),
            Err(e) => {
                // The rewrite's fault, not the rule's: the rule runs in fresh instances.
                tracing::warn!("component rewritten for its reset does not compile: {e:#}");
                *cacheable = false;
                Component::from_binary(engine, bytes)
            }
        },
        Err(why) => {
            tracing::debug!("component instances not reset in place: {why}");
            Component::from_binary(engine, bytes)
        }
    }?;
    // Only the rewrite may add the accessor: a component with one of its own would
    // have its `reset` trusted to isolate events.
    if i.plan.is_err() && reuse_component_plan::plan_of(engine, &c).is_some() {
        return Err(wasmtime::Error::msg(format!(
            "the component exports `{}`, a name reserved for the runtime",
            reuse_component_plan::ACCESS
        )));
    }
    Ok(Compiled::Component(c))
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

/// Loads a verified cache entry by mapping its file: compiled code and memory images
/// are then file pages, resident only where used (cache.rs). Where the file cannot be
/// mapped executable (a cache directory on a filesystem mounted `noexec`), the entry
/// is read into memory instead, as before entries were mapped.
fn load_entry(
    w: &wasmtime::Engine,
    kind: Kind,
    mut entry: cache::Entry,
) -> wasmtime::Result<Compiled> {
    match map_entry(w, kind, &entry) {
        Ok(mapped) => return Ok(mapped),
        Err(e) => tracing::debug!("cache entry not mapped, read instead: {e:#}"),
    }
    let bytes = entry.read_artifact()?;
    // SAFETY: as in `map_entry`, for the same verified file's bytes.
    unsafe {
        match kind {
            Kind::Module => Module::deserialize(w, &bytes).map(Compiled::Module),
            Kind::Component => {
                wasmtime::component::Component::deserialize(w, &bytes).map(Compiled::Component)
            }
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Makes `map_entry` fail on this thread, as on a `noexec` filesystem.
    pub(super) static REFUSE_MAP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn map_entry(w: &wasmtime::Engine, kind: Kind, entry: &cache::Entry) -> wasmtime::Result<Compiled> {
    #[cfg(test)]
    if REFUSE_MAP.get() {
        return Err(wasmtime::format_err!("mapping refused by the test"));
    }
    // SAFETY: an entry is an artifact this runtime serialized itself with this engine's
    // configuration (the key covers it), verified by its HMAC through the same open
    // file that is mapped; the runtime never writes an entry's file in place (entries
    // are replaced by rename), so the mapping keeps the verified contents.
    unsafe {
        match kind {
            Kind::Module => {
                Module::deserialize_open_file(w, entry.try_clone_file()?).map(Compiled::Module)
            }
            Kind::Component => match entry.reopenable_path() {
                Some(path) => wasmtime::component::Component::deserialize_file(w, &path)
                    .map(Compiled::Component),
                None => Err(wasmtime::format_err!("no /proc/self/fd path to map")),
            },
        }
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

/// The linker for core modules: the v2 host functions (`host.rs`); v1 modules import
/// nothing, so the same linker serves both.
fn core_linker(engine: &wasmtime::Engine) -> anyhow::Result<Linker<Ctx>> {
    let mut linker = Linker::new(engine);
    host::define(&mut linker)?;
    Ok(linker)
}

/// The linker for components: the v2 world's `redis` import (`component_v2.rs`); v1
/// components import nothing.
fn component_linker(engine: &wasmtime::Engine) -> anyhow::Result<wasmtime::component::Linker<Ctx>> {
    let mut linker = wasmtime::component::Linker::new(engine);
    component_v2::define(&mut linker)?;
    Ok(linker)
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
    /// Holds the compiled code alive for others to share (`Inner::live_code`).
    code: Arc<Compiled>,
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

/// Store data: the resource limiter, which also remembers why it refused growth, the
/// invocation's CPU deadline and, for v2 rules, its reads.
struct Ctx {
    max_memory: usize,
    max_table_elements: usize,
    max_instances: usize,
    max_memories: usize,
    memory_refused: Option<usize>,
    deadline: Deadline,
    reads: ReadState,
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
        self.max_memories
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

    /// `module` (a core module, ABI v1 or v2) or `component` (WIT world
    /// `wasmrule:rule@1.0.0`).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RuleKind::Core(_) => "module",
            RuleKind::Component(_) => "component",
        }
    }

    /// The ABI version the rule was built for (1 or 2; a component's world version).
    pub fn abi(&self) -> u32 {
        match &self.kind {
            RuleKind::Core(parts) => parts.abi,
            RuleKind::Component(parts) => parts.abi(),
        }
    }

    /// Whether the rule was loaded without compiling: from the cache, or sharing the
    /// code of a live rule with the same bytes.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// The address of this rule's compiled image (tests: whether it is a file's mapping).
    #[cfg(test)]
    pub(crate) fn image_start(&self) -> usize {
        match &*self.code {
            Compiled::Module(m) => m.image_range().start as usize,
            Compiled::Component(c) => c.image_range().start as usize,
        }
    }

    /// Whether this rule and `other` run the same compiled code (`Inner::live_code`).
    pub fn shares_code_with(&self, other: &Rule) -> bool {
        Arc::ptr_eq(&self.code, &other.code)
    }

    /// Events that ran in a warm instance which was then reset in place, and warm
    /// instances dropped after an event (a failure, memory or a table that grew).
    /// `(0, 0)` for rules that run fresh per event.
    pub fn reuse_counts(&self) -> (usize, usize) {
        match &self.kind {
            RuleKind::Core(parts) => parts.reuse_counts(),
            RuleKind::Component(parts) => parts.pool.counts(),
        }
    }

    /// Whether this rule's module marks the chunks it writes (`reuse_marks.rs`), so that
    /// its reset restores those instead of asking the kernel.
    #[cfg(test)]
    pub(crate) fn marks_writes(&self) -> bool {
        match &self.kind {
            RuleKind::Core(parts) => parts.marks_writes(),
            RuleKind::Component(_) => false,
        }
    }

    /// Whether this rule's instances can be reset in place (a core module without
    /// segment drops, `reuse_plan.rs`; a component without resources or nested state,
    /// `reuse_component_plan.rs`); whether they are also depends on the engine
    /// ([`Engine::reuses_instances`]).
    pub fn resettable(&self) -> bool {
        match &self.kind {
            RuleKind::Core(parts) => parts.resettable(),
            RuleKind::Component(parts) => parts.plan.is_some(),
        }
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
    /// Memory beyond the engine's cap is never granted. A v2 rule's reads are
    /// `unavailable` here, and MQTT actions in its result are an `abi` error: only
    /// [`Rule::invoke_actions`] takes them.
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
        let mut actions = Vec::new();
        let mark = out.mark();
        let n = self.invoke_actions(event, out, &mut actions, limits, &mut None)?;
        if !actions.is_empty() {
            out.truncate(mark);
            return Err(RuleError::Abi(format!(
                "returned {} MQTT actions, which this caller does not take",
                actions.len()
            )));
        }
        Ok(n)
    }

    /// Runs the rule on one event under `limits`: Redis commands are appended to `out`,
    /// MQTT actions (ABI v2) to `actions`; on error neither gets anything. A v2 rule's
    /// reads go to `reads` (taken for the invocation and put back after; `None`: every
    /// read is `unavailable`). Returns the number of actions of both kinds.
    ///
    /// # Errors
    ///
    /// As [`Rule::invoke`].
    pub fn invoke_actions(
        &self,
        event: &[u8],
        out: &mut Commands,
        actions: &mut Vec<MqttAction>,
        limits: &InvokeLimits,
        reads: &mut Option<Box<dyn RedisReads>>,
    ) -> Result<usize, RuleError> {
        let engine = &self.engine;
        let max_args = engine.inner.limits.max_args;
        match &self.kind {
            RuleKind::Core(parts) => {
                let state = if parts.abi >= 2 {
                    ReadState::new(reads.take(), engine.inner.limits.reads)
                } else {
                    ReadState::default()
                };
                if let Some(slot) = core::take_warm(engine, parts) {
                    let output = core::Output { out, actions };
                    return core::invoke_warm(
                        engine, parts, slot, event, output, limits, state, reads,
                    );
                }
                let mut store = engine.new_store(limits, false, state);
                let output = core::Output { out, actions };
                let r = core::invoke(parts, &mut store, event, output, limits, max_args);
                let r = r.map_err(|f| engine.classify(f, &store, limits));
                if let Some(port) = store.data_mut().reads.port.take() {
                    *reads = Some(port);
                }
                r
            }
            RuleKind::Component(parts) => {
                let state = if parts.abi() >= 2 {
                    ReadState::new(reads.take(), engine.inner.limits.reads)
                } else {
                    ReadState::default()
                };
                if let Some(slot) = reuse_component::take_warm(engine, parts) {
                    let output = core::Output { out, actions };
                    return reuse_component::invoke_warm(
                        engine, parts, slot, event, output, limits, state, reads,
                    );
                }
                let mut store = engine.new_store(limits, true, state);
                let output = core::Output { out, actions };
                let r = component::invoke(parts, &mut store, event, output, limits, max_args);
                let r = r.map_err(|f| engine.classify(f, &store, limits));
                if let Some(port) = store.data_mut().reads.port.take() {
                    *reads = Some(port);
                }
                r
            }
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_reuse;
#[cfg(test)]
mod tests_reuse_component;
#[cfg(test)]
mod tests_v2;
