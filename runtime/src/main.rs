//! The `wasmrule` command: parses flags, sets up logging, and calls the library.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use wasmrule::Commands;
use wasmrule::engine::{ABI_VERSION, Engine, Limits};
use wasmrule::{Config, Overrides};

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
        /// Deadline per event in milliseconds (default: the runtime's, 10 ms). Raise it
        /// to test behaviour on a busy machine, where wall time is not the rule's own.
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u64>,
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
    /// The EMQX "MQTT to Redis" demo in one command: embedded broker, the demo's rules,
    /// simulated devices, and a live summary of what lands in Redis.
    Demo(DemoArgs),
    /// Simulate the EMQX demo's devices (readings and misbehaviour), or generate load
    /// with --count.
    Simulate(SimArgs),
    /// Run one rule on one event, offline, and print the commands it returns.
    Eval {
        /// The rule (.wasm).
        rule: PathBuf,
        /// Event JSON file, or `-` for standard input. Missing fields get defaults, so
        /// {"topic":"a/b","payload":"..."} is enough.
        #[arg(long)]
        event: PathBuf,
        /// Deadline in milliseconds (default: the runtime's, 10 ms).
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u64>,
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
    /// Run an MQTT broker inside wasmrule on this address (e.g. 127.0.0.1:1883) instead
    /// of connecting to one; rules then also see client events (docs/events.md).
    #[arg(long, env = "WASMRULE_EMBEDDED_BROKER", value_name = "ADDR")]
    embedded_broker: Option<String>,
    /// ACL file of the embedded broker (docs/broker.md).
    #[arg(long, env = "WASMRULE_ACL", value_name = "FILE")]
    acl: Option<PathBuf>,
    /// The broker is EMQX: turn its client-event topics ($SYS/brokers/+/clients/...,
    /// $event/...) into the events rules ask for with $events/... (docs/events.md).
    #[arg(long, env = "WASMRULE_EMQX_EVENTS")]
    emqx_events: bool,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Where the embedded broker listens (devices and your own MQTT clients connect
    /// here).
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Redis to write to; without it a private redis-server is started (and stopped at
    /// the end).
    #[arg(long, env = "WASMRULE_REDIS_URL")]
    redis_url: Option<String>,
    /// Folder with the built demo rules (rules-wasm/build.sh rust).
    #[arg(long, default_value = "rules-wasm/dist")]
    rules_from: PathBuf,
    /// Simulated devices.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Milliseconds between two readings of one device.
    #[arg(long, default_value_t = 1000)]
    interval: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
}

#[derive(clap::Args)]
struct SimArgs {
    /// MQTT broker, mqtt://[user[:password]@]host[:port].
    #[arg(
        long,
        env = "WASMRULE_MQTT_URL",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    mqtt_url: String,
    /// Devices (device mode) or publishing connections (load mode).
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Milliseconds between two readings of one device.
    #[arg(long, default_value_t = 1000)]
    interval: u64,
    /// Probability that a device misbehaves at a tick (0 turns misbehaviour off).
    #[arg(long, default_value_t = 0.1)]
    abnormal: f64,
    /// Load mode: publish this many readings, report the rate and exit.
    #[arg(long)]
    count: Option<u64>,
    /// Load mode: readings per second in all; 0 is as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// QoS of the readings.
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// The broker's maximum packet size, for the oversized-frame misbehaviour.
    #[arg(long, default_value_t = 16384)]
    max_packet_size: u32,
}

fn main() -> ExitCode {
    disable_huge_pages();
    let cli = Cli::parse();
    // The demo and the simulator misbehave on purpose; the client library's and the
    // broker's warnings about it would only bury the screen.
    init_logging(match cli.command {
        Command::Demo(_) | Command::Simulate(_) => "warn,rumqttc=error,rmqtt=error",
        _ => "info",
    });
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Simulate(args) => simulate(args),
        Command::Demo(args) => demo(args),
        Command::Check { files } => on_guest_stack(move || check(&files)),
        Command::Eval {
            rule,
            event,
            timeout_ms,
        } => on_guest_stack(move || eval(&rule, &event, timeout_ms)),
        Command::Test {
            rule,
            cases,
            timeout_ms,
        } => on_guest_stack(move || test(&rule, &cases, timeout_ms)),
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

fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WASMRULE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
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
        embedded_broker: args.embedded_broker,
        acl_file: args.acl,
        emqx_events: args.emqx_events.then_some(true),
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    let rt = async_runtime()?;
    rt.block_on(async {
        let mqtt = match &config.broker {
            Some(b) => format!("embedded broker on {}", b.listen),
            None if config.mqtt.emqx_events => format!(
                "{}:{} (EMQX, client events from its system topics)",
                config.mqtt.host, config.mqtt.port
            ),
            None => format!("{}:{}", config.mqtt.host, config.mqtt.port),
        };
        tracing::info!(
            %mqtt,
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

fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let broker = args.broker.parse().map_err(|_| {
        anyhow::anyhow!(
            "--broker: {:?} is not an address like 127.0.0.1:1883",
            args.broker
        )
    })?;
    if let Some(url) = &args.redis_url {
        Config::with_overrides(&Overrides {
            redis_url: Some(url.clone()),
            ..Overrides::default()
        })
        .context("--redis-url")?;
    }
    let cfg = wasmrule::demo::DemoConfig {
        broker,
        redis_url: args.redis_url,
        rules_from: args.rules_from,
        devices: args.devices.max(1),
        interval: std::time::Duration::from_millis(args.interval.max(1)),
        duration: args.duration.map(std::time::Duration::from_secs),
        live: std::io::IsTerminal::is_terminal(&std::io::stdout()),
    };
    let rt = async_runtime()?;
    rt.block_on(wasmrule::demo::run(cfg, shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

fn simulate(args: SimArgs) -> anyhow::Result<ExitCode> {
    use wasmrule::simulate::{SimConfig, SimStats};
    let (host, port, username, password) =
        wasmrule::parse_mqtt_url(&args.mqtt_url).context("--mqtt-url")?;
    anyhow::ensure!(args.qos <= 2, "--qos: {} is not 0, 1 or 2", args.qos);
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.abnormal),
        "--abnormal: {} is not between 0 and 1",
        args.abnormal
    );
    anyhow::ensure!(args.rate >= 0.0, "--rate: must not be negative");
    let mut cfg = SimConfig::new(&host, port);
    cfg.username = username;
    cfg.password = password;
    cfg.devices = args.devices;
    cfg.interval = std::time::Duration::from_millis(args.interval.max(1));
    cfg.abnormal = args.abnormal;
    cfg.count = args.count;
    cfg.rate = args.rate;
    cfg.qos = args.qos;
    cfg.max_packet_size = args.max_packet_size;
    let rt = async_runtime()?;
    rt.block_on(async {
        if cfg.count.is_some() {
            let s = wasmrule::simulate::load(cfg, true).await?;
            println!(
                "published {} messages (QoS {}) in {:.2} s: {:.0} msg/s{}",
                s.sent,
                args.qos,
                s.elapsed.as_secs_f64(),
                s.rate(),
                if args.qos > 0 {
                    format!(", {} acknowledged", s.acked)
                } else {
                    String::new()
                }
            );
            return Ok(ExitCode::SUCCESS);
        }
        let stats = std::sync::Arc::new(SimStats::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let sim = tokio::spawn(wasmrule::simulate::devices(
            cfg,
            stats.clone(),
            stop.clone(),
        ));
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        tick.tick().await;
        let signal = shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                _ = tick.tick() => eprintln!(
                    "published {}, misbehaved {}, connection errors {}",
                    SimStats::get(&stats.published),
                    SimStats::get(&stats.misbehaviours),
                    SimStats::get(&stats.connect_errors)
                ),
            }
        }
        stop.cancel();
        sim.await.context("simulator task")??;
        Ok(ExitCode::SUCCESS)
    })
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

fn check(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let engine = offline_engine(None)?;
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

fn test(rule_path: &Path, cases_path: &Path, timeout_ms: Option<u64>) -> anyhow::Result<ExitCode> {
    let engine = offline_engine(timeout_ms)?;
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

fn eval(rule_path: &Path, event_path: &Path, timeout_ms: Option<u64>) -> anyhow::Result<ExitCode> {
    let engine = offline_engine(timeout_ms)?;
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
    let event = wasmrule::complete_event(&raw, "wasmrule@eval")
        .with_context(|| format!("event {}", event_path.display()))?;
    let topic = serde_json::from_slice::<serde_json::Value>(&event)?["topic"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let filters = &rule.manifest().filters;
    if !filters.iter().any(|f| wasmrule::topic_matches(f, &topic)) {
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
