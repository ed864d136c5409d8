//! The health and metrics endpoint: `GET /healthz` (the process is alive), `GET /readyz`
//! (connected to both the broker and Redis, with the state as JSON either way) and
//! `GET /metrics` (Prometheus text).
//!
//! A deliberately small HTTP/1.1 responder: one request per connection, GET only, a
//! bounded request head. It listens on loopback by default; put it behind whatever
//! the platform uses for probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ops::metrics::{Metrics, RuleInfo};
use crate::rules::ruleset::Rules;

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` and serves until `shutdown`. Returns the bound address (useful with
/// port 0) once listening.
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    rules: Arc<Rules>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for /healthz: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "health and metrics endpoint listening");
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!("accept: {e}");
                        continue;
                    }
                },
            };
            let metrics = metrics.clone();
            let rules = rules.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(READ_TIMEOUT, respond(stream, &metrics, &rules)).await;
            });
        }
    });
    Ok((local, task))
}

async fn respond(
    mut stream: tokio::net::TcpStream,
    metrics: &Metrics,
    rules: &Rules,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, content_type, body) = route(method, path, metrics, rules);
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn route(
    method: &[u8],
    path: &[u8],
    metrics: &Metrics,
    rules: &Rules,
) -> (&'static str, &'static str, String) {
    if method != b"GET" {
        return ("405 Method Not Allowed", "text/plain", "GET only\n".into());
    }
    let mqtt = Metrics::is(&metrics.mqtt_connected);
    let redis = Metrics::is(&metrics.redis_connected);
    match path {
        b"/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        b"/readyz" => {
            let body = serde_json::json!({
                "ready": mqtt && redis,
                "mqtt": if mqtt { "connected" } else { "disconnected" },
                "redis": if redis { "connected" } else { "disconnected" },
                "rules": rules.snapshot().len(),
            })
            .to_string()
                + "\n";
            let status = if mqtt && redis {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", body)
        }
        b"/metrics" => ("200 OK", "text/plain; version=0.0.4", {
            let serving = rules.snapshot();
            let info: Vec<RuleInfo<'_>> = serving
                .iter()
                .map(|r| RuleInfo {
                    tenant: &r.tenant,
                    rule: &r.id,
                    version: r.version(),
                    generation: r.generation,
                })
                .collect();
            metrics.prometheus(&info)
        }),
        _ => (
            "404 Not Found",
            "text/plain",
            "try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::default();
        let r = Rules::new();
        assert_eq!(route(b"GET", b"/healthz", &m, &r).0, "200 OK");
        let (status, _, body) = route(b"GET", b"/readyz", &m, &r);
        assert_eq!(status, "503 Service Unavailable");
        assert!(body.contains(r#""mqtt":"disconnected""#), "{body}");
        Metrics::set(&m.mqtt_connected, true);
        Metrics::set(&m.redis_connected, true);
        assert_eq!(route(b"GET", b"/readyz", &m, &r).0, "200 OK");
        assert!(
            route(b"GET", b"/metrics", &m, &r)
                .2
                .contains("wasmrule_redis_connected 1")
        );
        assert_eq!(
            route(b"POST", b"/healthz", &m, &r).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"GET", b"/x", &m, &r).0, "404 Not Found");
    }
}
