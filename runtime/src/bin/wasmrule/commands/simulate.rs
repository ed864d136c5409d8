//! `wasmrule simulate`: the demo's devices against any broker, or with `--count` a load
//! generator that reports its rate (`wasmrule::simulate`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use wasmrule::simulate::{SimConfig, SimStats};

use super::shared::{async_runtime, shutdown_signal};

#[derive(clap::Args)]
pub struct Args {
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
    /// The broker's maximum packet size in bytes, for the oversized-frame misbehaviour,
    /// used only when the broker does not announce its own in CONNACK (the embedded
    /// broker and EMQX do; mosquitto announces one only when `max_packet_size` is set).
    /// Default: 1 MiB, the embedded broker's and EMQX's default.
    #[arg(long, value_name = "BYTES", default_value_t = wasmrule::simulate::DEFAULT_BROKER_MAX_PACKET_SIZE)]
    max_packet_size: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = sim_config(&args)?;
    let rt = async_runtime()?;
    rt.block_on(async {
        if cfg.count.is_some() {
            load(cfg, args.qos).await
        } else {
            devices(cfg).await
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The flags, checked.
fn sim_config(args: &Args) -> anyhow::Result<SimConfig> {
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
    cfg.interval = Duration::from_millis(args.interval.max(1));
    cfg.abnormal = args.abnormal;
    cfg.count = args.count;
    cfg.rate = args.rate;
    cfg.qos = args.qos;
    cfg.max_packet_size = args.max_packet_size;
    Ok(cfg)
}

/// Load mode: publish `--count` readings and print the rate.
async fn load(cfg: SimConfig, qos: u8) -> anyhow::Result<()> {
    let s = wasmrule::simulate::load(cfg, true).await?;
    println!(
        "published {} messages (QoS {}) in {:.2} s: {:.0} msg/s{}",
        s.sent,
        qos,
        s.elapsed.as_secs_f64(),
        s.rate(),
        if qos > 0 {
            format!(", {} acknowledged", s.acked)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Device mode: simulate until Ctrl-C, printing counts every 5 s.
async fn devices(cfg: SimConfig) -> anyhow::Result<()> {
    let stats = Arc::new(SimStats::default());
    let stop = CancellationToken::new();
    let sim = tokio::spawn(wasmrule::simulate::devices(
        cfg,
        stats.clone(),
        stop.clone(),
    ));
    let mut tick = tokio::time::interval(Duration::from_secs(5));
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
    Ok(())
}
