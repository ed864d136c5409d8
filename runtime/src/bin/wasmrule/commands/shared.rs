//! What several subcommands share: the async runtime and shutdown signal of `run`,
//! `demo` and `simulate`; the guest-stack thread, engine and rule loading of `check`,
//! `eval` and `test`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use wasmrule::engine::{Engine, Limits, Rule};

/// Runs an offline command (`check`, `eval`, `test`, which run guest code) on a thread
/// with the native stack the wasm stack cap is sized for (`engine/stack.rs`), not on
/// the main thread, whose stack is whatever `ulimit -s` says.
pub(super) fn on_guest_stack(
    f: impl FnOnce() -> anyhow::Result<ExitCode> + Send,
) -> anyhow::Result<ExitCode> {
    wasmrule::engine::on_guest_stack(f).context("cannot start a thread to run rules on")?
}

/// The async runtime for `run`, `demo` and `simulate`: two threads for I/O.
pub(super) fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // No guest code runs on these threads (rules run on worker threads, manifest
        // reads on threads of their own, engine/stack.rs), so this does not bound the
        // wasm stack cap.
        .thread_stack_size(4 << 20)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Completes on Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight messages");
}

/// The engine for `check`, `eval` and `test`: default limits (or the given deadline),
/// and the default cache so that a large component is compiled once, not on every run.
pub(super) fn offline_engine(timeout_ms: Option<u64>) -> anyhow::Result<Engine> {
    let mut limits = Limits::default();
    if let Some(ms) = timeout_ms {
        anyhow::ensure!(ms > 0, "--timeout-ms must be greater than 0");
        limits.timeout = std::time::Duration::from_millis(ms);
    }
    let engine = Engine::new(limits, 4)?;
    Ok(
        match wasmrule::default_cache_dir().map(|d| wasmrule::engine::cache::Cache::open(&d)) {
            Some(Ok(cache)) => engine.with_cache(cache),
            _ => engine,
        },
    )
}

/// Reads and compiles one rule file.
pub(super) fn load_rule(engine: &Engine, path: &Path) -> anyhow::Result<Rule> {
    let bytes = std::fs::read(path).context("cannot read file")?;
    Ok(engine.compile(&bytes)?)
}

/// Success when nothing failed.
pub(super) fn exit_code(failed: usize) -> ExitCode {
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
