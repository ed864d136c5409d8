//! `wasmrule simulate`: the EMQX demo's device simulator, and a load generator.
//!
//! Device mode (the default) connects N MQTT 5 devices that publish a reading
//! (`{"message":..,"clientId":..,"duration":..,"temp":..,"hum":..}`) to
//! `store-last-message/<clientid>` every interval, and now and then misbehave the way
//! the demo's devices do, so that every client event kind occurs on a broker that
//! reports them (the embedded broker with the demo ACL, `examples/demo/acl.toml`):
//!
//! | behaviour | what the broker reports |
//! |---|---|
//! | publish to `forbidden/<id>` | `client.check_authz_complete` deny, `message.dropped` `not_authorized` |
//! | subscribe to `$SYS/#` | `client.check_authz_complete` deny |
//! | publish to `message-drop-test/<id>`, which nobody subscribes to | `message.dropped` `no_subscribers` |
//! | QoS 1 publish with a 1 s expiry to a subscriber that is offline for longer | `delivery.dropped` `expired` |
//! | a frame above the broker's maximum packet size | `client.disconnected` `frame_too_large` |
//! | a publish to the wildcard topic `f/+` | `client.disconnected` (`topic_name_invalid` or `protocol_error`) |
//! | a QoS 2 publish where the broker allows QoS 1 | `client.disconnected` `qos_not_supported` |
//! | a client that falls silent past its keepalive | `client.disconnected` `keepalive_timeout` |
//! | a device that disconnects and comes back | `client.disconnected` `normal` |
//!
//! A `dashboard` client subscribes to `store-last-message/#`, so readings have a
//! subscriber and only the deliberate publishes above are dropped.
//!
//! Load mode (`--count N`) publishes N readings as fast as `--rate` allows and prints a
//! progress line each second and a summary at the end.

pub mod raw;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio_util::sync::CancellationToken;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Broker host and port.
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Devices (device mode) or publishing connections (load mode).
    pub devices: usize,
    /// Time between two readings of one device (device mode).
    pub interval: Duration,
    /// Probability that a device misbehaves at a tick (device mode); 0 turns it off.
    pub abnormal: f64,
    /// Readings to publish in all (load mode when set).
    pub count: Option<u64>,
    /// Readings per second in all (load mode); 0 is as fast as possible.
    pub rate: f64,
    /// QoS of the readings.
    pub qos: u8,
    /// Largest payload the broker accepts, for the oversized-frame case.
    pub max_packet_size: u32,
}

impl SimConfig {
    /// Defaults: 10 devices every second, misbehaving at 10% of ticks, QoS 1.
    pub fn new(host: &str, port: u16) -> Self {
        SimConfig {
            host: host.to_owned(),
            port,
            username: None,
            password: None,
            devices: 10,
            interval: Duration::from_secs(1),
            abnormal: 0.1,
            count: None,
            rate: 0.0,
            qos: 1,
            max_packet_size: 16 * 1024,
        }
    }
}

/// What the simulator did, for its summary and for the demo's screen.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Publishes handed to the client library.
    pub published: AtomicU64,
    /// Publishes written to the connection.
    pub written: AtomicU64,
    /// QoS 1/2 publishes the broker acknowledged.
    pub acked: AtomicU64,
    pub misbehaviours: AtomicU64,
    pub connect_errors: AtomicU64,
}

impl SimStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A small xorshift generator: the simulation needs variety, not cryptography.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Self {
        let t = crate::event::now_ms() ^ (std::process::id() as u64) << 32;
        Rng((t ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// The demo's reading.
fn reading(client_id: &str, started: Instant, rng: &mut Rng) -> String {
    format!(
        r#"{{"message":"this is a stored message","clientId":"{client_id}","duration":"{}s","temp":{:.2},"hum":{:.2}}}"#,
        started.elapsed().as_secs(),
        15.0 + rng.unit() * 30.0,
        20.0 + rng.unit() * 60.0
    )
}

fn options(cfg: &SimConfig, client_id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, &cfg.host, cfg.port);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some(u) = &cfg.username {
        o.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
    }
    o
}

/// Polls an event loop until cancelled, counting acknowledgements; reconnects after a
/// short pause when the broker closes the connection.
async fn drive(mut el: EventLoop, stats: Arc<SimStats>, stop: CancellationToken) {
    loop {
        let ev = tokio::select! {
            ev = el.poll() => ev,
            () = stop.cancelled() => return,
        };
        match ev {
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                SimStats::add(&stats.acked, 1);
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => SimStats::add(&stats.written, 1),
            Ok(_) => {}
            Err(_) => {
                SimStats::add(&stats.connect_errors, 1);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Runs device mode until `stop` is cancelled.
///
/// # Errors
///
/// Never for broker trouble (devices reconnect); only for an invalid configuration.
pub async fn devices(
    cfg: SimConfig,
    stats: Arc<SimStats>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(cfg.devices > 0, "--devices must be at least 1");
    let cfg = Arc::new(cfg);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();

    // Readings have a subscriber: the dashboard.
    let (dash, el) = AsyncClient::new(options(&cfg, "dashboard"), 100);
    tasks.spawn(drive(el, stats.clone(), stop.clone()));
    dash.subscribe("store-last-message/#", QoS::AtMostOnce)
        .await
        .context("dashboard subscribe")?;
    tasks.spawn(expiry_sink(cfg.clone(), stats.clone(), stop.clone()));

    for i in 0..cfg.devices {
        let (cfg, stats, stop) = (cfg.clone(), stats.clone(), stop.clone());
        tasks.spawn(async move {
            let id = format!("dev-{}", i + 1);
            let mut rng = Rng::seeded(i as u64);
            // Spread the devices over the interval.
            let offset = cfg.interval.mul_f64(i as f64 / cfg.devices as f64);
            tokio::select! {
                () = tokio::time::sleep(offset) => {}
                () = stop.cancelled() => return,
            }
            'connection: loop {
                let (client, el) = AsyncClient::new(options(&cfg, &id), 100);
                let conn_stop = stop.child_token();
                let driver = tokio::spawn(drive(el, stats.clone(), conn_stop.clone()));
                let mut tick = tokio::time::interval(cfg.interval);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        () = stop.cancelled() => {
                            let _ = client.disconnect().await;
                            conn_stop.cancel();
                            let _ = driver.await;
                            return;
                        }
                    }
                    let body = reading(&id, started, &mut rng);
                    let topic = format!("store-last-message/{id}");
                    if client
                        .publish(topic, qos(cfg.qos), false, body)
                        .await
                        .is_ok()
                    {
                        SimStats::add(&stats.published, 1);
                    }
                    if cfg.abnormal > 0.0 && rng.unit() < cfg.abnormal {
                        SimStats::add(&stats.misbehaviours, 1);
                        if misbehave(&cfg, &id, &client, &mut rng).await {
                            // The device disconnects cleanly and comes back.
                            let _ = client.disconnect().await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            conn_stop.cancel();
                            let _ = driver.await;
                            continue 'connection;
                        }
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// One abnormal behaviour, picked at random; returns true when the device should
/// disconnect cleanly and reconnect.
async fn misbehave(cfg: &SimConfig, id: &str, client: &AsyncClient, rng: &mut Rng) -> bool {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let raw_id = format!("{id}-x{}", rng.below(1000));
    match rng.below(9) {
        0 => {
            let _ = client
                .publish(format!("forbidden/{id}"), QoS::AtLeastOnce, false, "denied")
                .await;
        }
        1 => {
            let _ = client.subscribe("$SYS/#", QoS::AtMostOnce).await;
        }
        2 => {
            let _ = client
                .publish(
                    format!("message-drop-test/{id}"),
                    QoS::AtMostOnce,
                    false,
                    "nobody listens",
                )
                .await;
        }
        3 => {
            let props = PublishProperties {
                message_expiry_interval: Some(1),
                ..Default::default()
            };
            let _ = client
                .publish_with_properties(
                    format!("expire-test/{id}"),
                    QoS::AtLeastOnce,
                    false,
                    "soon stale",
                    props,
                )
                .await;
        }
        4 => {
            raw_case(&addr, &raw_id, |_| {
                raw::publish(
                    "store-last-message/oversized",
                    &vec![b'x'; cfg.max_packet_size as usize + 1024],
                    0,
                )
            })
            .await
        }
        5 => raw_case(&addr, &raw_id, |_| raw::publish("f/+", b"{}", 0)).await,
        6 => {
            raw_case(&addr, &raw_id, |_| {
                raw::publish("store-last-message/qos2", b"{}", 2)
            })
            .await
        }
        7 => {
            // Connect with a 1 s keepalive and say nothing more.
            let addr = addr.clone();
            tokio::spawn(async move {
                if let Ok(mut c) = raw::RawClient::connect(&addr, &raw_id, 1).await {
                    c.until_closed(Duration::from_secs(5)).await;
                }
            });
        }
        _ => return true,
    }
    false
}

/// A raw connection that sends one bad packet and waits for the broker to close it.
async fn raw_case(addr: &str, client_id: &str, bad: impl FnOnce(()) -> Vec<u8>) {
    let bytes = bad(());
    let (addr, client_id) = (addr.to_owned(), client_id.to_owned());
    tokio::spawn(async move {
        if let Ok(mut c) = raw::RawClient::connect(&addr, &client_id, 30).await
            && c.send(&bytes).await.is_ok()
            && !c.until_closed(Duration::from_secs(5)).await
        {
            let _ = c.send(&raw::disconnect()).await;
        }
    });
}

/// A subscriber to `expire-test/#` that keeps its session and is offline most of the
/// time, so short-lived messages expire before it can take them.
async fn expiry_sink(cfg: Arc<SimConfig>, stats: Arc<SimStats>, stop: CancellationToken) {
    loop {
        let mut o = options(&cfg, "expiry-sink");
        o.set_clean_start(false)
            .set_session_expiry_interval(Some(600));
        let (client, el) = AsyncClient::new(o, 10);
        let conn_stop = stop.child_token();
        let driver = tokio::spawn(drive(el, stats.clone(), conn_stop.clone()));
        let _ = client.subscribe("expire-test/#", QoS::AtLeastOnce).await;
        let online = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            () = online => {}
            () = stop.cancelled() => {}
        }
        let _ = client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn_stop.cancel();
        let _ = driver.await;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(4)) => {}
            () = stop.cancelled() => return,
        }
    }
}

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
        let mut o = options(&cfg, &id);
        o.set_outgoing_inflight_upper_limit(1000);
        let (client, el) = AsyncClient::new(o, 10_000);
        let el = connected(el, &cfg).await?;
        drivers.push(tokio::spawn(drive(el, stats.clone(), stop.clone())));
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
