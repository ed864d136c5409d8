//! Native stacks for guest code.
//!
//! wasmtime checks a guest's stack use against `max_wasm_stack`, counted from where the
//! host called into wasm; it does not know how much native stack the calling thread has
//! left. If the cap were above what is left, a deep recursion would run into the
//! thread's guard page and kill the process instead of failing with `stack`. So every
//! thread that runs guest code has [`GUEST_THREAD_STACK`] of native stack (worker
//! threads in `dispatch.rs`; manifest reads at load and the offline commands through
//! [`on_guest_stack`]), and the cap is at most a quarter of it ([`MAX_WASM_STACK`],
//! checked by `config.rs` and again by `Engine::new`), leaving the rest for the host
//! frames below and above the guest.
//!
//! This file does not set the cap (`config.rs`, `Limits`) or run rules (`mod.rs`).

/// Native stack of every thread that runs guest code.
pub const GUEST_THREAD_STACK: usize = 8 << 20;

/// Largest `max_wasm_stack` allowed: a quarter of [`GUEST_THREAD_STACK`]. It is also
/// wasmtime's own ceiling with this configuration (`max_wasm_stack` may not exceed the
/// async stack size, 2 MiB by default).
pub const MAX_WASM_STACK: usize = GUEST_THREAD_STACK / 4;

// Checked when compiling: the largest cap leaves three quarters of the thread's stack.
const _: () = assert!(MAX_WASM_STACK * 4 <= GUEST_THREAD_STACK);

/// Runs `f` on a new thread with [`GUEST_THREAD_STACK`] of native stack and waits for
/// it, so that guest code in `f` never depends on the caller's stack (a tokio blocking
/// thread has 2 MiB by default).
///
/// # Errors
///
/// When the thread cannot be spawned.
///
/// # Panics
///
/// Propagates a panic from `f`.
pub fn on_guest_stack<R: Send>(f: impl FnOnce() -> R + Send) -> std::io::Result<R> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("wasmrule-guest".into())
            .stack_size(GUEST_THREAD_STACK)
            .spawn_scoped(s, f)?;
        Ok(handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}
