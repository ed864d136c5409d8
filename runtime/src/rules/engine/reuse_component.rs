//! A component's instance kept across events and reset in place after each one, as
//! core modules' are (`reuse.rs`); the component was rewritten at load so that the host
//! can reach its state (`reuse_component_plan.rs`).
//!
//! After instantiation the accessor's `save` copies every core instance's mutable
//! globals and tables, and the host takes each memory's place (`base<k>`) and
//! snapshot (a lazy [`Image`]: a Python component's memory is tens of megabytes, of
//! which an event writes a few hundred kilobytes). After an event that succeeded, the
//! accessor's `reset` checks that no memory or table changed size and puts the globals
//! and tables back, and the host restores every page `PAGEMAP_SCAN` reports in each
//! memory. Anything else (a trap, a limit, a deadline, an error the rule returned
//! through the ABI, a size that changed, a failed restore) drops the instance.
//!
//! The component model's own state (resource handles and the like) is left as a call
//! that returned leaves it: the plan refuses components that could hold any.

use wasmtime::Store;
use wasmtime::component::{Instance, TypedFunc, WasmList};

use super::component::{self, ComponentParts, Handler};
use super::core::Output;
use super::host::ReadState;
use super::reuse::{self, Image, Reservation, restore_dirty};
use super::reuse_component_plan::{ACCESS, ComponentPlan};
use super::{Ctx, Deadline, Engine, Failure, InvokeLimits, RedisReads, RuleError};

/// Warm component instances the engine keeps at most, over all rules. Each holds a
/// pooled component instance with all its core instances, memories and tables.
pub(super) const WARM_COMPONENTS: u32 = 8;

/// A component instance, reset after every event it ran.
pub(super) struct WarmComponent {
    store: Store<Ctx>,
    handler: Handler,
    reset: TypedFunc<(), (u32,)>,
    memories: Vec<WarmMemory>,
    _slot: Reservation,
}

/// One linear memory of the instance: where it lies and what it held.
struct WarmMemory {
    base: *mut u8,
    len: usize,
    image: Image,
}

// SAFETY: `base` points into a linear memory of `store`, which the warm instance owns
// and moves with it; it is only used through `&mut self`, as the store is.
unsafe impl Send for WarmComponent {}

impl WarmComponent {
    /// Snapshots a just-made instance; on failure the store comes back.
    fn new(
        mut store: Store<Ctx>,
        instance: Instance,
        handler: Handler,
        plan: &ComponentPlan,
        slot: Reservation,
    ) -> Result<WarmComponent, (Failure, Store<Ctx>)> {
        match snapshot(&mut store, instance, plan) {
            Ok((reset, memories)) => Ok(WarmComponent {
                store,
                handler,
                reset,
                memories,
                _slot: slot,
            }),
            Err(f) => Err((f, store)),
        }
    }

    /// Restores the state after instantiation, or says why it cannot.
    fn reset(&mut self) -> Result<(), String> {
        #[cfg(test)]
        if test_hooks::SKIP_RESET.with(|s| s.get()) {
            return Ok(());
        }
        let (code,) = self
            .reset
            .call(&mut self.store, ())
            .map_err(|e| format!("reset: {e:#}"))?;
        match code {
            0 => {}
            1 => return Err("a memory grew".into()),
            _ => return Err("a table grew".into()),
        }
        for m in &mut self.memories {
            // SAFETY: `base..base + len` is a linear memory of `self.store` (`new`),
            // which has not changed size (`reset` above checked it) and, in the pooling
            // allocator, never moves; nothing else refers to it while `self` is
            // borrowed mutably.
            let memory = unsafe { std::slice::from_raw_parts_mut(m.base, m.len) };
            restore_dirty(memory, &mut m.image).map_err(|d| format!("{d:?}"))?;
        }
        Ok(())
    }
}

type Saved = (TypedFunc<(), (u32,)>, Vec<WarmMemory>);

/// Runs the accessor's `save`, finds each memory and snapshots it.
fn snapshot(
    store: &mut Store<Ctx>,
    instance: Instance,
    plan: &ComponentPlan,
) -> Result<Saved, Failure> {
    let abi = |what: String| Failure::from(RuleError::Abi(format!("component reset: {what}")));
    let access = instance
        .get_export_index(&mut *store, None, ACCESS)
        .ok_or_else(|| abi(format!("export `{ACCESS}` missing")))?;
    let func = |store: &mut Store<Ctx>, name: &str| {
        instance
            .get_export_index(&mut *store, Some(&access), name)
            .ok_or_else(|| abi(format!("`{ACCESS}` has no `{name}`")))
    };
    let save = func(store, "save")?;
    let save: TypedFunc<(), ()> = instance
        .get_typed_func(&mut *store, save)
        .map_err(|e| abi(format!("{e:#}")))?;
    save.call(&mut *store, ())?;
    let reset = func(store, "reset")?;
    let reset: TypedFunc<(), (u32,)> = instance
        .get_typed_func(&mut *store, reset)
        .map_err(|e| abi(format!("{e:#}")))?;
    let mut memories = Vec::with_capacity(plan.memories);
    for k in 0..plan.memories {
        let pages = func(store, &format!("pages{k}"))?;
        let pages: TypedFunc<(), (u32,)> = instance
            .get_typed_func(&mut *store, pages)
            .map_err(|e| abi(format!("{e:#}")))?;
        // A memory of no pages has nothing to restore; `reset` keeps it at none.
        if pages.call(&mut *store, ())?.0 == 0 {
            continue;
        }
        let base = func(store, &format!("base{k}"))?;
        let base: TypedFunc<(), (WasmList<u8>,)> = instance
            .get_typed_func(&mut *store, base)
            .map_err(|e| abi(format!("{e:#}")))?;
        let (list,) = base.call(&mut *store, ())?;
        let (ptr, len) = {
            let all = list.as_le_slice(&*store);
            (all.as_ptr().cast_mut(), all.len())
        };
        // SAFETY: as in `WarmComponent::reset`: memory `k` of this instance, whole.
        let memory = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let image = Image::settle(memory, None, true)
            .map_err(|e| abi(format!("snapshot of memory {k}: {e}")))?;
        memories.push(WarmMemory {
            base: ptr,
            len,
            image,
        });
    }
    Ok((reset, memories))
}

pub(super) type Slot = reuse::Slot<WarmComponent>;

/// A warm instance for `parts`, if it is reset in place and there is one or room for
/// one; `None`: run the event in a fresh instance.
pub(super) fn take_warm(engine: &Engine, parts: &ComponentParts) -> Option<Slot> {
    if !engine.inner.reuse || parts.plan.is_none() {
        return None;
    }
    parts
        .pool
        .slot(&engine.inner.warm_components, WARM_COMPONENTS as usize)
}

/// One event in a warm instance (`take_warm`), which is reset and kept if the event
/// succeeded and dropped otherwise. Takes the reads port back from the store as the
/// fresh path does.
#[allow(clippy::too_many_arguments)]
pub(super) fn invoke_warm(
    engine: &Engine,
    parts: &ComponentParts,
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
            *w.store.data_mut() = engine.ctx(limits, true, state);
            engine.arm(&mut w.store);
            w
        }
        Slot::New(reservation) => {
            let mut store = engine.new_store(limits, true, state);
            let made = parts.instantiate(&mut store);
            let made = match (made, parts.plan.as_ref()) {
                (Ok((instance, handler)), Some(plan)) => {
                    WarmComponent::new(store, instance, handler, plan, reservation)
                }
                (Ok(_), None) => Err((no_plan(), store)),
                // As a fresh instance would have failed.
                (Err(f), _) => {
                    let e = engine.classify(f, &store, limits);
                    if let Some(port) = store.data_mut().reads.port.take() {
                        *reads = Some(port);
                    }
                    return Err(e);
                }
            };
            match made {
                Ok(w) => {
                    let mut w = Box::new(w);
                    // The instance and its snapshot are the host's cost, not the
                    // event's: the event gets a whole deadline of its own.
                    w.store.data_mut().deadline = Deadline::new(limits.timeout);
                    engine.arm(&mut w.store);
                    w
                }
                Err((f, mut used)) => {
                    // The snapshot's failure, not the event's: the event runs in a fresh
                    // instance, and the failure counts against reusing this rule.
                    let why = match &f {
                        Failure::Wasm(e) => format!("{e:#}"),
                        Failure::Rule(e) => e.to_string(),
                    };
                    tracing::debug!("component instance not snapshotted: {why}");
                    parts.pool.note_discard();
                    let state = std::mem::take(&mut used.data_mut().reads);
                    drop(used);
                    let mut store = engine.new_store(limits, true, state);
                    let r = component::invoke(parts, &mut store, event, output, limits, max_args);
                    let r = r.map_err(|f| engine.classify(f, &store, limits));
                    if let Some(port) = store.data_mut().reads.port.take() {
                        *reads = Some(port);
                    }
                    return r;
                }
            }
        }
    };
    let w = &mut *warm;
    let r = component::call(&w.handler, &mut w.store, event, output, limits, max_args);
    let r = r.map_err(|f| engine.classify(f, &w.store, limits));
    if let Some(port) = w.store.data_mut().reads.port.take() {
        *reads = Some(port);
    }
    match r.is_ok().then(|| warm.reset()) {
        Some(Ok(())) => parts.pool.put(warm),
        Some(Err(why)) => {
            tracing::debug!("component instance not reset, dropped: {why}");
            parts.pool.discard(warm);
        }
        None => parts.pool.discard(warm),
    }
    r
}

fn no_plan() -> Failure {
    RuleError::Abi("no reset plan".into()).into()
}

#[cfg(test)]
pub(super) mod test_hooks {
    use std::cell::Cell;

    thread_local! {
        /// Puts warm component instances back without resetting them: for showing
        /// that the isolation tests see the traces the reset removes.
        pub(in super::super) static SKIP_RESET: Cell<bool> = const { Cell::new(false) };
    }
}
