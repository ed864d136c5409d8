//! Device mode (the default) of `wasmrule simulate`: connects N MQTT 5 devices that publish a reading
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

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio_util::sync::CancellationToken;

use super::{Rng, SimConfig, SimStats, Subscription, drive, options, qos, raw, reading};

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

    // Readings have a subscriber: the dashboard, subscribed on every (re)connect.
    let (dash, el) = AsyncClient::new(options(&cfg, "dashboard"), 100);
    let subscription = Subscription {
        client: dash,
        filter: "store-last-message/#",
        qos: QoS::AtMostOnce,
    };
    let (s, t) = (stats.clone(), stop.clone());
    tasks.spawn(async move { drive("dashboard", el, s, t, Some(subscription)).await });
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
                let driver = {
                    let (id, stats, stop) = (id.clone(), stats.clone(), conn_stop.clone());
                    tokio::spawn(async move { drive(&id, el, stats, stop, None).await })
                };
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
            // Above the limit the broker announced, or the one it is assumed to have.
            let assumed = cfg.max_packet_size;
            raw_case(&addr, &raw_id, move |announced| {
                raw::oversized_publish(announced.unwrap_or(assumed))
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

/// A raw connection that sends one bad packet, made from the maximum packet size the
/// broker announced (if it did), and waits for the broker to close it.
async fn raw_case(
    addr: &str,
    client_id: &str,
    bad: impl FnOnce(Option<u32>) -> Vec<u8> + Send + 'static,
) {
    let (addr, client_id) = (addr.to_owned(), client_id.to_owned());
    tokio::spawn(async move {
        if let Ok(mut c) = raw::RawClient::connect(&addr, &client_id, 30).await
            && c.send(&bad(c.max_packet_size)).await.is_ok()
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
        let driver = {
            let (stats, stop) = (stats.clone(), conn_stop.clone());
            tokio::spawn(async move { drive("expiry-sink", el, stats, stop, None).await })
        };
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
