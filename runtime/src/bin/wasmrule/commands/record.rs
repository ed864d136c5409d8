//! `wasmrule record --mqtt-url URL --out DIR [--topic FILTER]...`: capture a broker's
//! messages into a recording without running rules, to replay them later
//! (`wasmrule::capture`, docs/replay.md).

use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use wasmrule::record::config::RecordConfig;
use wasmrule::{Config, Overrides};

use super::shared::{async_runtime, shutdown_signal};

#[derive(clap::Args)]
pub struct Args {
    /// The broker, mqtt://[user[:password]@]host[:port] or mqtts:// (TLS files from
    /// --config's [mqtt] section).
    #[arg(long, env = "WASMRULE_MQTT_URL")]
    mqtt_url: Option<String>,
    /// TOML configuration file: its [mqtt] section (TLS, protocol, credentials) and
    /// its [record] bounds apply.
    #[arg(long, env = "WASMRULE_CONFIG")]
    config: Option<PathBuf>,
    /// The recording directory (created if missing; a recording there is continued).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A topic filter to record; repeat for more. Default: `#`.
    #[arg(long = "topic", value_name = "FILTER")]
    topics: Vec<String>,
    /// Stop after this many messages (default: until Ctrl-C or SIGTERM).
    #[arg(long)]
    count: Option<u64>,
    /// Bytes the recording keeps; its oldest segments go first.
    #[arg(long)]
    max_bytes: Option<u64>,
    /// Bytes per segment file.
    #[arg(long)]
    segment_bytes: Option<u64>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let overrides = Overrides {
        mqtt_url: args.mqtt_url.clone(),
        record: Some(args.out.clone()),
        ..Overrides::default()
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    let mut record = config
        .record
        .clone()
        .unwrap_or_else(|| RecordConfig::new(&args.out));
    record.max_bytes = args.max_bytes.unwrap_or(record.max_bytes);
    record.segment_bytes = args.segment_bytes.unwrap_or(record.segment_bytes);
    let filters = if args.topics.is_empty() {
        vec!["#".to_owned()]
    } else {
        args.topics.clone()
    };
    for f in &filters {
        wasmrule::validate_filter(f).map_err(|e| anyhow::anyhow!("--topic {f:?}: {e}"))?;
    }
    let rt = async_runtime()?;
    let captured = rt.block_on(async {
        let token = CancellationToken::new();
        let stop = token.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
        wasmrule::capture::record_broker(
            config.mqtt.clone(),
            filters,
            &record,
            &config.runtime.node,
            args.count,
            token,
        )
        .await
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    eprintln!(
        "recorded {} events ({} bytes) into {}{}",
        captured.events,
        captured.bytes,
        record.dir.display(),
        if captured.lost > 0 {
            format!("; {} lost (the disk could not keep up)", captured.lost)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
