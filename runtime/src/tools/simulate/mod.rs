//! `wasmrule simulate`: the EMQX demo's device simulator (`devices.rs`) and a load
//! generator (`load.rs`). This file holds what both use: the configuration, the counts,
//! the readings and the event-loop driver; `raw.rs` writes the malformed packets.

mod devices;
mod load;
pub mod raw;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio_util::sync::CancellationToken;

pub use devices::devices;
pub use load::{LoadSummary, load};

/// The maximum packet size assumed for a broker that does not announce one: the
/// default of the embedded broker (`[broker] max_packet_size`) and of EMQX.
pub const DEFAULT_BROKER_MAX_PACKET_SIZE: u32 = 1 << 20;

/// Largest packet the simulator's clients accept from the broker: MQTT's own maximum.
/// The client library's default (10 KiB) would drop the dashboard's connection on the
/// first large reading anyone publishes, and with it the dashboard's subscription.
const MAX_INCOMING_PACKET: u32 = 268_435_455;

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
    /// The broker's maximum packet size, for the oversized-frame case, when the broker
    /// does not announce it (MQTT 5 CONNACK, Maximum Packet Size; the embedded broker
    /// and EMQX do).
    pub max_packet_size: u32,
}

impl SimConfig {
    /// Defaults: 10 devices every second, misbehaving at 10% of ticks, QoS 1, a broker
    /// whose maximum packet size is 1 MiB unless it says otherwise (the embedded
    /// broker's and EMQX's default).
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
            max_packet_size: DEFAULT_BROKER_MAX_PACKET_SIZE,
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
    /// Publishes the dashboard received (readings have this subscriber).
    pub received: AtomicU64,
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
    o.set_keep_alive(Duration::from_secs(30))
        // rumqttc sizes its table of publishes in flight by this bound up front
        // (65,536 entries, 13 MB, per simulated device by default).
        .set_outgoing_inflight_upper_limit(1000)
        .set_max_packet_size(Some(MAX_INCOMING_PACKET));
    if let Some(u) = &cfg.username {
        o.set_credentials(u, cfg.password.as_deref().unwrap_or(""));
    }
    o
}

/// A subscription a client makes each time it connects: with a clean start, the broker
/// forgets it when the connection ends, and the client library does not renew it.
struct Subscription {
    client: AsyncClient,
    filter: &'static str,
    qos: QoS,
}

/// Polls `client`'s event loop until cancelled, counting acknowledgements and received
/// publishes, (re)subscribing on each CONNACK; reconnects after a short pause when the
/// connection fails, and logs why (these clients do not misbehave: the raw ones do).
async fn drive(
    client: &str,
    mut el: EventLoop,
    stats: Arc<SimStats>,
    stop: CancellationToken,
    subscription: Option<Subscription>,
) {
    loop {
        let ev = tokio::select! {
            ev = el.poll() => ev,
            () = stop.cancelled() => return,
        };
        match ev {
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                SimStats::add(&stats.acked, 1);
            }
            Ok(Event::Incoming(Packet::Publish(_))) => SimStats::add(&stats.received, 1),
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(s) = &subscription {
                    // Not `subscribe().await`: this loop is what drains the request
                    // channel, so it must not wait for room in it.
                    if let Err(e) = s.client.try_subscribe(s.filter, s.qos) {
                        tracing::warn!(client, "simulate: {client} cannot subscribe: {e}");
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => SimStats::add(&stats.written, 1),
            Ok(_) => {}
            Err(e) => {
                SimStats::add(&stats.connect_errors, 1);
                tracing::warn!(
                    client,
                    "simulate: connection of {client} failed: {e}; reconnecting"
                );
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}
