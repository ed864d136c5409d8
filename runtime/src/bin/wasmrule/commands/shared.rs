//! What several subcommands share: the async runtime and shutdown signal of `run`,
//! `demo` and `simulate`; the guest-stack thread, engine and rule loading of `check`,
//! `eval` and `test`, and the tenant flags of `eval` and `test`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use wasmrule::engine::{Engine, Limits, Rule};
use wasmrule::offline::Serving;

/// Runs an offline command (`check`, `eval`, `test`, which run guest code) on a thread
/// with the native stack the wasm stack cap is sized for (`engine/stack.rs`), not on
/// the main thread, whose stack is whatever `ulimit -s` says.
pub(super) fn on_guest_stack(
    f: impl FnOnce() -> anyhow::Result<ExitCode> + Send,
) -> anyhow::Result<ExitCode> {
    wasmrule::engine::on_guest_stack(f).context("cannot start a thread to run rules on")?
}

/// The async runtime for `run` (`runtime.io_threads` threads), and for `demo`,
/// `simulate` and the other commands (two).
pub(super) fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    async_runtime_with(2)
}

/// The async runtime with `threads` threads for I/O.
pub(super) fn async_runtime_with(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
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

/// Whom `eval` and `test` run the rule as: the flags they share.
#[derive(clap::Args)]
pub(super) struct ServingArgs {
    /// Run the rule as this tenant's rules are served (its command allow-list, key
    /// prefix, topics and limits; default: the default tenant, rules directly in the
    /// rules directory).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// The config file whose `[limits]` and `[tenants.NAME]` apply (default: none, the
    /// defaults), as `wasmrule run --config FILE` reads it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Deadline per event in milliseconds (default: the tenant's, 10 ms unless
    /// configured). Raise it to test behaviour on a busy machine, where wall time is
    /// not the rule's own.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
}

impl ServingArgs {
    /// The tenant, from the config file if one is given.
    pub(super) fn serving(&self) -> anyhow::Result<Serving> {
        let mut serving = Serving::load(self.tenant.as_deref(), self.config.as_deref())?;
        if let Some(ms) = self.timeout_ms {
            anyhow::ensure!(ms > 0, "--timeout-ms must be greater than 0");
            serving.set_timeout(std::time::Duration::from_millis(ms));
        }
        Ok(serving)
    }
}

/// The engine for `check`, `eval` and `test`: `limits` (the config's, or the defaults),
/// and the default cache so that a large component is compiled once, not on every run.
pub(super) fn offline_engine(limits: Limits) -> anyhow::Result<Engine> {
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
