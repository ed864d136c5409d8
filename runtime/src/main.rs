//! The `wasmrule` command: parses flags, sets up logging, and calls the library.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use wasmrule::commands::Commands;
use wasmrule::config::{Config, Overrides};
use wasmrule::engine::{ABI_VERSION, Engine, Limits};

// Every event allocates a wasmtime Store and frees it; compiling rules allocates a lot
// and frees it. mimalloc is faster at the first and returns memory better after the
// second than glibc's allocator (docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wasmrule",
    version,
    about = "Run WebAssembly rules on MQTT messages and write the results to Redis"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to MQTT and Redis and serve the rules in a directory, reloading them as
    /// files change.
    Run(RunArgs),
    /// Validate rule modules and print what each declares.
    Check {
        /// Rule files (.wasm).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run a rule against a file of cases (event in, commands or error out); print a
    /// diff for each mismatch and exit non-zero if any case fails.
    Test {
        /// The rule (.wasm).
        rule: PathBuf,
        /// Case file (JSON, see docs/writing-rules.md).
        cases: PathBuf,
    },
    /// Create a rule project in ./NAME that builds with ./build.sh into NAME.wasm and
    /// passes `wasmrule test NAME.wasm cases.json`.
    New {
        /// Rule name: a-z, 0-9 and '-'.
        name: String,
        /// Language of the project.
        #[arg(long, value_enum, default_value = "rust")]
        lang: wasmrule::scaffold::Lang,
    },
    /// Run one rule on one event, offline, and print the commands it returns.
    Eval {
        /// The rule (.wasm).
        rule: PathBuf,
        /// Event JSON file, or `-` for standard input. Missing fields get defaults, so
        /// {"topic":"a/b","payload":"..."} is enough.
        #[arg(long)]
        event: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML configuration file (docs/configuration.md).
    #[arg(long, env = "WASMRULE_CONFIG")]
    config: Option<PathBuf>,
    /// MQTT broker, mqtt://[user[:password]@]host[:port].
    #[arg(long, env = "WASMRULE_MQTT_URL")]
    mqtt_url: Option<String>,
    /// Redis server, redis://host[:port][/db].
    #[arg(long, env = "WASMRULE_REDIS_URL")]
    redis_url: Option<String>,
    /// Directory of rule files, watched for changes.
    #[arg(long, env = "WASMRULE_RULES_DIR")]
    rules_dir: Option<PathBuf>,
    /// MQTT client id (default: wasmrule-<pid>).
    #[arg(long, env = "WASMRULE_CLIENT_ID")]
    client_id: Option<String>,
    /// QoS of wasmrule's subscriptions.
    #[arg(long, env = "WASMRULE_QOS")]
    qos: Option<u8>,
    /// Start a fresh MQTT session (the default when no client id is chosen).
    #[arg(long)]
    clean_session: bool,
    /// Health and metrics endpoint (GET /healthz, /readyz, /metrics), or `off`.
    #[arg(long, env = "WASMRULE_HTTP_ADDR")]
    http_addr: Option<String>,
}

fn main() -> ExitCode {
    disable_huge_pages();
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Check { files } => on_guest_stack(move || check(&files)),
        Command::Eval { rule, event } => on_guest_stack(move || eval(&rule, &event)),
        Command::Test { rule, cases } => on_guest_stack(move || test(&rule, &cases)),
        Command::New { name, lang } => {
            wasmrule::scaffold::create(Path::new("."), &name, lang).map(|()| {
                println!("created {name}/: cd {name} && ./build.sh && wasmrule test {name}.wasm cases.json");
                ExitCode::SUCCESS
            })
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an offline command (`check`, `eval`, `test`, which run guest code) on a thread
/// with the native stack the wasm stack cap is sized for (`engine/stack.rs`), not on
/// the main thread, whose stack is whatever `ulimit -s` says.
fn on_guest_stack(f: impl FnOnce() -> anyhow::Result<ExitCode> + Send) -> anyhow::Result<ExitCode> {
    wasmrule::engine::on_guest_stack(f).context("cannot start a thread to run rules on")?
}

/// Transparent huge pages make the allocator's and wasmtime's mostly-idle regions cost
/// 2 MiB of RSS each; wasmrule's memory is many small live objects, so opt out.
fn disable_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WASMRULE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        mqtt_url: args.mqtt_url,
        redis_url: args.redis_url,
        rules_dir: args.rules_dir,
        client_id: args.client_id,
        qos: args.qos,
        clean_session: args.clean_session.then_some(true),
        http_addr: args.http_addr,
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // No guest code runs on these threads (rules run on worker threads, manifest
        // reads on threads of their own, engine/stack.rs), so this does not bound the
        // wasm stack cap.
        .thread_stack_size(4 << 20)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        tracing::info!(
            mqtt = %format!("{}:{}", config.mqtt.host, config.mqtt.port),
            redis = %config.redis.url,
            rules = %config.rules.dir.display(),
            workers = config.runtime.workers,
            "wasmrule starting"
        );
        wasmrule::run(config, shutdown_signal()).await
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

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

/// The engine for `check`, `eval` and `test`: default limits, and the default cache so
/// that a large component is compiled once, not on every run.
fn offline_engine() -> anyhow::Result<Engine> {
    let engine = Engine::new(Limits::default(), 4)?;
    Ok(
        match wasmrule::config::default_cache_dir()
            .map(|d| wasmrule::engine::cache::Cache::open(&d))
        {
            Some(Ok(cache)) => engine.with_cache(cache),
            _ => engine,
        },
    )
}

fn check(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let engine = offline_engine()?;
    let mut failed = 0;
    for f in files {
        match load(&engine, f) {
            Ok(rule) => {
                let m = rule.manifest();
                println!("{}: ok", f.display());
                println!("  name:    {}", m.name);
                if let Some(v) = &m.version {
                    println!("  version: {v}");
                }
                match rule.kind_name() {
                    "component" => println!(
                        "  abi:     component wasmrule:rule@{}",
                        wasmrule::engine::COMPONENT_WORLD_VERSION
                    ),
                    _ => println!("  abi:     {ABI_VERSION}"),
                }
                println!("  filters: {}", m.filters.join(" "));
                if let Some(sdk) = &m.sdk {
                    println!("  sdk:     {sdk}");
                }
                println!("  size:    {} bytes", rule.size());
            }
            Err(e) => {
                eprintln!("error: {}: {e:#}", f.display());
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn load(engine: &Engine, path: &Path) -> anyhow::Result<wasmrule::engine::Rule> {
    let bytes = std::fs::read(path).context("cannot read file")?;
    Ok(engine.compile(&bytes)?)
}

fn test(rule_path: &Path, cases_path: &Path) -> anyhow::Result<ExitCode> {
    let engine = offline_engine()?;
    let rule = load(&engine, rule_path).with_context(|| format!("{}", rule_path.display()))?;
    let text = std::fs::read_to_string(cases_path)
        .with_context(|| format!("cannot read case file {}", cases_path.display()))?;
    let file = wasmrule::rule_test::parse(&text)
        .with_context(|| format!("case file {}", cases_path.display()))?;
    if let Some(name) = &file.rule
        && *name != rule.manifest().name
    {
        anyhow::bail!(
            "{} is rule {:?}, but the case file {} is for rule {name:?}",
            rule_path.display(),
            rule.manifest().name,
            cases_path.display()
        );
    }
    let results = wasmrule::rule_test::run(&rule, &file);
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for r in &results {
        match &r.failure {
            None => println!("ok    {}", r.name),
            Some(why) => println!("FAIL  {}\n{}", r.name, why.trim_end()),
        }
    }
    println!(
        "{}: {} passed, {failed} failed",
        rule_path.display(),
        results.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn eval(rule_path: &Path, event_path: &Path) -> anyhow::Result<ExitCode> {
    let engine = offline_engine()?;
    let rule = load(&engine, rule_path).with_context(|| format!("{}", rule_path.display()))?;
    let raw = if event_path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read the event from standard input")?;
        buf
    } else {
        std::fs::read(event_path)
            .with_context(|| format!("cannot read event file {}", event_path.display()))?
    };
    let event = wasmrule::event::complete_event(&raw, "wasmrule@eval")
        .with_context(|| format!("event {}", event_path.display()))?;
    let topic = serde_json::from_slice::<serde_json::Value>(&event)?["topic"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let filters = &rule.manifest().filters;
    if !filters.iter().any(|f| wasmrule::topic::matches(f, &topic)) {
        eprintln!(
            "note: topic {topic:?} matches none of the rule's filters ({}); a running \
             wasmrule would not call it. Running it anyway.",
            filters.join(" ")
        );
    }
    let mut out = Commands::new();
    match rule.invoke(&event, &mut out) {
        Ok(_) => {
            for c in out.iter() {
                println!("{c}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "error: rule {} failed ({}): {e}",
                rule.manifest().name,
                e.kind()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
