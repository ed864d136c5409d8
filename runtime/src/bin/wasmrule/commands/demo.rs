//! `wasmrule demo`: the EMQX demo in one command (`wasmrule::demo`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use wasmrule::{Config, Overrides};

use super::shared::{async_runtime, shutdown_signal};

#[derive(clap::Args)]
pub struct Args {
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
    /// Where the web console and /metrics listen ("off" for nowhere).
    #[arg(long, default_value = wasmrule::DEFAULT_HTTP_ADDR)]
    http_addr: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
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
    let http_addr = match args.http_addr.as_str() {
        "off" => None,
        a => Some(a.parse().map_err(|_| {
            anyhow::anyhow!("--http-addr: {a:?} is not an address like 127.0.0.1:9464")
        })?),
    };
    let cfg = wasmrule::demo::DemoConfig {
        http_addr,
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
