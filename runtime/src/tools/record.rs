//! `wasmrule record`: capture a broker's traffic into a recording without running any
//! rule (`source/mqtt/capture.rs` -> `record/`), to replay through rules later. Each
//! message is encoded as the event a rule would get (`event.rs`), so that a replay
//! sees what a served rule would have seen.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use crate::event::EventEncoder;
use crate::record::config::RecordConfig;
use crate::record::format::{Encoder, frame};
use crate::record::writer::{RecordStats, Recorder};
use crate::source::mqtt::MqttConfig;
use crate::source::mqtt::capture::capture;

/// What a capture wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Captured {
    pub events: u64,
    pub lost: u64,
    pub bytes: u64,
}

/// Records every message on `filters` until `shutdown`, or until `count` were taken.
///
/// # Errors
///
/// When the recording directory cannot be opened.
pub async fn record_broker(
    mqtt: MqttConfig,
    filters: Vec<String>,
    record: &RecordConfig,
    node: &str,
    count: Option<u64>,
    shutdown: CancellationToken,
) -> anyhow::Result<Captured> {
    let stats = Arc::new(RecordStats::default());
    let (recorder, thread) = Recorder::start(record, stats.clone())?;
    let encoder = EventEncoder::new(node);
    let mut event = Vec::new();
    let mut taken = 0u64;
    let stop = shutdown.clone();
    capture(mqtt, filters, shutdown, |m| {
        encoder.publish_event(&m, &mut event);
        let mut payload = Vec::with_capacity(event.len() + m.topic.len() + 32);
        let mut e = Encoder(&mut payload);
        e.event(m.received_at, &m.topic, &event);
        e.invocations(0);
        let mut chunk = Vec::with_capacity(payload.len() + 8);
        frame(&payload, &mut chunk);
        recorder.send(chunk, 1);
        taken += 1;
        if count.is_some_and(|n| taken >= n) {
            stop.cancel();
        }
    })
    .await;
    drop(recorder);
    tokio::task::spawn_blocking(move || thread.join()).await?;
    Ok(Captured {
        events: stats.events.load(Ordering::Relaxed),
        lost: stats.lost.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
    })
}
