//! `wasmrule run`: load the config (file, environment, flags) and serve until Ctrl-C or
//! SIGTERM (`wasmrule::run`).

use std::path::PathBuf;
use std::process::ExitCode;

use wasmrule::{Config, Overrides};

use super::shared::{async_runtime_with, shutdown_signal};

#[derive(clap::Args)]
pub struct Args {
    /// TOML configuration file (docs/configuration.md).
    #[arg(long, env = "WASMRULE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.config.as_deref(), &args.overrides)?;
    let rt = async_runtime_with(config.runtime.io_threads)?;
    let served = rt.block_on(async {
        tracing::info!(
            mqtt = %source_name(&config),
            redis = %config.redis.display_url(),
            rules = %config.rules.dir.display(),
            workers = config.runtime.workers,
            io_threads = config.runtime.io_threads,
            "wasmrule starting"
        );
        wasmrule::run(config, shutdown_signal()).await
    });
    // `run` has written, acknowledged and stored all it will; a blocking task that
    // never ends (the embedded broker's session store keeps one) must not keep the
    // process alive, as dropping the runtime would.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    served?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Where events come from, for the start-up line.
fn source_name(config: &Config) -> String {
    match &config.broker {
        Some(b) => format!("embedded broker on {}", b.listen),
        None if config.mqtt.emqx_events => format!(
            "{}:{} (EMQX, client events from its system topics)",
            config.mqtt.host, config.mqtt.port
        ),
        None => format!("{}:{}", config.mqtt.host, config.mqtt.port),
    }
}
