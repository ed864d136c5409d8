//! Load mode (`--count N`) of `wasmrule simulate`: publishes N readings as fast as `--rate` allows and prints a
//! progress line each second and a summary at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio_util::sync::CancellationToken;

use super::{Rng, SimConfig, SimStats, drive, options, qos, reading};

/// The result of load mode.
#[derive(Debug, Clone, Copy)]
pub struct LoadSummary {
    pub sent: u64,
    pub acked: u64,
    pub elapsed: Duration,
}

impl LoadSummary {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Polls a new connection until its CONNACK, so that an unreachable broker is an
/// error, not a hang.
async fn connected(mut el: EventLoop, cfg: &SimConfig) -> anyhow::Result<EventLoop> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(el),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("cannot connect to {}:{}: {e}", cfg.host, cfg.port),
            Err(_) => anyhow::bail!("no CONNACK from {}:{} within 5 s", cfg.host, cfg.port),
        }
    }
}

/// One load connection's share of the readings.
struct Publisher {
    client: AsyncClient,
    /// Client id, put in each reading.
    id: String,
    topic: String,
    rng: Rng,
    qos: QoS,
    /// Readings to publish.
    share: u64,
    /// Readings per second on this connection; 0 is as fast as possible.
    rate: f64,
    stats: Arc<SimStats>,
}

impl Publisher {
    /// Publishes the share (paced by the rate), then hands the client back for the
    /// disconnect.
    async fn run(mut self, started: Instant) -> AsyncClient {
        let t0 = Instant::now();
        for n in 0..self.share {
            if self.rate > 0.0 {
                let due = t0 + Duration::from_secs_f64(n as f64 / self.rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let body = reading(&self.id, started, &mut self.rng);
            if self
                .client
                .publish(self.topic.as_str(), self.qos, false, body)
                .await
                .is_err()
            {
                break;
            }
            SimStats::add(&self.stats.published, 1);
        }
        self.client
    }
}

/// Prints the published count once a second, until aborted.
async fn print_progress(stats: Arc<SimStats>, count: u64) {
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = SimStats::get(&stats.published);
        eprintln!("published {now}/{count} ({}/s)", now - last);
        last = now;
    }
}

/// Runs load mode: `cfg.count` readings over `cfg.devices` connections at `cfg.rate`
/// in all, printing progress to stderr each second when `progress` is set.
///
/// # Errors
///
/// When the broker cannot be reached.
pub async fn load(cfg: SimConfig, progress: bool) -> anyhow::Result<LoadSummary> {
    let count = cfg.count.unwrap_or(0);
    let conns = cfg.devices.max(1) as u64;
    let stats = Arc::new(SimStats::default());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut publishers = tokio::task::JoinSet::new();
    let mut drivers = Vec::new();
    for c in 0..conns {
        let share = count / conns + u64::from(c < count % conns);
        let id = format!("load-{c}");
        let (client, el) = AsyncClient::new(options(&cfg, &id), 10_000);
        let el = connected(el, &cfg).await?;
        drivers.push({
            let (id, stats, stop) = (id.clone(), stats.clone(), stop.clone());
            tokio::spawn(async move { drive(&id, el, stats, stop, None).await })
        });
        let publisher = Publisher {
            client,
            topic: format!("store-last-message/{id}"),
            rng: Rng::seeded(c),
            id,
            qos: qos(cfg.qos),
            share,
            rate: cfg.rate / conns as f64,
            stats: stats.clone(),
        };
        publishers.spawn(publisher.run(started));
    }
    let ticker = progress.then(|| tokio::spawn(print_progress(stats.clone(), count)));
    let mut clients = Vec::new();
    while let Some(r) = publishers.join_next().await {
        clients.push(r.context("publisher task")?);
    }
    // Done when everything is on the wire (QoS 0) or acknowledged (QoS 1/2).
    let done = if cfg.qos > 0 {
        &stats.acked
    } else {
        &stats.written
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while SimStats::get(done) < SimStats::get(&stats.published) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    for c in &clients {
        let _ = c.disconnect().await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    for d in drivers {
        let _ = d.await;
    }
    if let Some(t) = ticker {
        t.abort();
    }
    Ok(LoadSummary {
        sent: SimStats::get(&stats.published),
        acked: SimStats::get(&stats.acked),
        elapsed,
    })
}
