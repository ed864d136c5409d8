//! The embedded broker's sessions on disk (`broker.session_dir`): a device's persistent
//! session, and the QoS 1 messages queued for it while it is offline, survive a restart
//! of wasmrule. The `wasmrule` binary is the broker; a real Redis beside it; loopback
//! ports of the test's own.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use support::*;

/// A client with a persistent session (clean session off) on the broker at `port`.
fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false).set_inflight(100);
    AsyncClient::new(o, 1000)
}

/// Polls until `want` arrives (an error is a reconnect); panics after `tries` errors.
async fn until(eventloop: &mut EventLoop, want: impl Fn(&Packet) -> bool) {
    for _ in 0..200 {
        match eventloop.poll().await {
            Ok(Event::Incoming(p)) if want(&p) => return,
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("the broker never answered");
}

/// A subscriber subscribes with a persistent session and goes offline; 2,000 QoS 1
/// messages are published to it, and wasmrule is restarted (SIGTERM, start again)
/// halfway through the stream. When the subscriber comes back it receives every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_for_an_offline_session_survive_a_restart() {
    const N: usize = 2_000;
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let config = dir.path().join("wasmrule.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nsession_dir = {:?}\nmax_mqueue_len = 10000\n\
             [runtime]\nhttp_addr = \"off\"\nshutdown_timeout_secs = 10\n",
            dir.path().join("sessions").display().to_string()
        ),
    )
    .unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "--config",
        config.to_str().unwrap(),
        "--embedded-broker",
        &format!("127.0.0.1:{port}"),
        "--redis-url",
        &redis.url(),
        "--rules-dir",
        rules.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut wasmrule = WasmruleProcess::start(&args, &dir.path().join("wasmrule.log"));

    // The subscriber: subscribes, then leaves (its session stays).
    let (sub, mut sub_loop) = client("sub-1", port);
    sub.subscribe("cmd/#", QoS::AtLeastOnce).await.unwrap();
    until(&mut sub_loop, |p| matches!(p, Packet::SubAck(_))).await;
    sub.disconnect().await.unwrap();
    loop {
        match sub_loop.poll().await {
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop((sub, sub_loop));

    // The stream, with a restart halfway.
    let (publisher, mut pub_loop) = client("pub-1", port);
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let polling = tokio::spawn({
        let acked = acked.clone();
        async move {
            loop {
                match pub_loop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    });
    for i in 0..N {
        if i == N / 2 {
            let status = wasmrule.terminate(Duration::from_secs(20));
            assert!(status.success(), "{status}\n{}", wasmrule.log());
            wasmrule.restart();
        }
        publisher
            .publish(format!("cmd/{i}"), QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // The subscriber stays offline until the broker has acknowledged the whole stream
    // (a message acknowledged before the restart may be acknowledged again after it,
    // so this is at least every message).
    for _ in 0..1200 {
        if acked.load(std::sync::atomic::Ordering::Relaxed) >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        acked.load(std::sync::atomic::Ordering::Relaxed) >= N,
        "the broker did not acknowledge the stream:\n{}",
        wasmrule.log()
    );
    // The subscriber comes back and gets them all.
    let (sub, mut sub_loop) = client("sub-1", port);
    let mut got = BTreeSet::new();
    let mut errors = 0;
    while got.len() < N {
        match tokio::time::timeout(Duration::from_secs(30), sub_loop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let n: usize = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
                got.insert(n);
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                errors += 1;
                assert!(errors < 100, "cannot reconnect:\n{}", wasmrule.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                let missing: Vec<usize> = (0..N).filter(|n| !got.contains(n)).collect();
                panic!(
                    "{} of {N} messages after the restart; missing {:?}...\n{}",
                    got.len(),
                    &missing[..missing.len().min(20)],
                    wasmrule.log()
                );
            }
        }
    }
    eprintln!("{} of {N} messages delivered after the restart", got.len());
    polling.abort();
    drop(sub);
}
