//! The subcommands: one file each under `commands/`, holding its flags (a clap `Args`
//! struct) and its `run`. What two of them share (the async runtime, the shutdown
//! signal, the offline engine) is here.

mod check;
mod demo;
mod eval;
mod new;
mod run;
mod simulate;
mod test;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use wasmrule::engine::{Engine, Limits, Rule};

#[derive(Subcommand)]
pub enum Command {
    /// Connect to MQTT and Redis and serve the rules in a directory, reloading them as
    /// files change.
    Run(run::Args),
    /// Validate rule modules and print what each declares.
    Check(check::Args),
    /// Run a rule against a file of cases (event in, commands or error out); print a
    /// diff for each mismatch and exit non-zero if any case fails.
    Test(test::Args),
    /// Create a rule project in ./NAME that builds with ./build.sh into NAME.wasm and
    /// passes `wasmrule test NAME.wasm cases.json`.
    New(new::Args),
    /// The EMQX "MQTT to Redis" demo in one command: embedded broker, the demo's rules,
    /// simulated devices, and a live summary of what lands in Redis.
    Demo(demo::Args),
    /// Simulate the EMQX demo's devices (readings and misbehaviour), or generate load
    /// with --count.
    Simulate(simulate::Args),
    /// Run one rule on one event, offline, and print the commands it returns.
    Eval(eval::Args),
}

impl Command {
    /// The log filter unless `WASMRULE_LOG` or `RUST_LOG` says otherwise. The demo and
    /// the simulator misbehave on purpose; the client library's and the broker's
    /// warnings about it would only bury the screen.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Demo(_) | Command::Simulate(_) => "warn,rumqttc=error,rmqtt=error",
            _ => "info",
        }
    }

    /// Runs the subcommand; the exit code says whether what it checked passed.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Run(args) => run::run(args),
            Command::Simulate(args) => simulate::run(args),
            Command::Demo(args) => demo::run(args),
            Command::Check(args) => on_guest_stack(move || check::run(&args)),
            Command::Eval(args) => on_guest_stack(move || eval::run(&args)),
            Command::Test(args) => on_guest_stack(move || test::run(&args)),
            Command::New(args) => new::run(&args),
        }
    }
}

/// Runs an offline command (`check`, `eval`, `test`, which run guest code) on a thread
/// with the native stack the wasm stack cap is sized for (`engine/stack.rs`), not on
/// the main thread, whose stack is whatever `ulimit -s` says.
fn on_guest_stack(f: impl FnOnce() -> anyhow::Result<ExitCode> + Send) -> anyhow::Result<ExitCode> {
    wasmrule::engine::on_guest_stack(f).context("cannot start a thread to run rules on")?
}

/// The async runtime for `run`, `demo` and `simulate`: two threads for I/O.
fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
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
async fn shutdown_signal() {
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
fn offline_engine(timeout_ms: Option<u64>) -> anyhow::Result<Engine> {
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
fn load_rule(engine: &Engine, path: &Path) -> anyhow::Result<Rule> {
    let bytes = std::fs::read(path).context("cannot read file")?;
    Ok(engine.compile(&bytes)?)
}

/// Success when nothing failed.
fn exit_code(failed: usize) -> ExitCode {
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
