//! The HTTP endpoint, on axum (hyper): `GET /healthz` (the process is alive),
//! `GET /readyz` (connected to both the broker and Redis, with the state as JSON either
//! way), `GET /metrics` (Prometheus, `exposition.rs`), `GET /api/status` (JSON,
//! `status.rs`), `GET /api/demo` (the demo's Redis hashes, `null` outside
//! `wasmrule demo`), `GET /api/history` (the totals of the last five minutes, one
//! reading a second, so that the console's charts start with the recent past) and
//! `GET /`, the web console (`console.html`, compiled into the binary).
//!
//! It listens on loopback by default; put it behind whatever the platform uses for
//! probes. Does not own what it reports.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::exposition::{CONTENT_TYPE, Exposition};
use super::metrics::Metrics;
use super::status::Status;
use crate::rules::ruleset::Rules;

/// The web console: one page, its script and styles inline, no external resources.
const CONSOLE: &str = include_str!("console.html");

/// Readings of the totals kept for `/api/history`: five minutes at one a second.
const HISTORY: usize = 300;

/// What the console shows beyond the runtime's current state: the demo's view (set by
/// `wasmrule demo`) and the recent totals.
#[derive(Debug, Default)]
pub struct Console {
    demo: Mutex<Option<serde_json::Value>>,
    history: Mutex<VecDeque<serde_json::Value>>,
}

impl Console {
    /// Replaces the demo's view (its Redis hashes, as the demo last read them).
    pub fn set_demo(&self, view: serde_json::Value) {
        *self.demo.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
    }

    fn record(&self, reading: serde_json::Value) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(reading);
    }

    fn history(&self) -> serde_json::Value {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::Value::Array(h.iter().cloned().collect())
    }

    fn demo(&self) -> serde_json::Value {
        self.demo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or(serde_json::Value::Null)
    }
}

struct AppState {
    metrics: Arc<Metrics>,
    rules: Arc<Rules>,
    exposition: Exposition,
    console: Arc<Console>,
    started: Instant,
}

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
    console: Arc<Console>,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for /healthz: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "health, metrics and console endpoint listening");
    let (app, state) = router(metrics, rules, console);
    let task = tokio::spawn(async move {
        let sampler = tokio::spawn(sample(state, shutdown.clone()));
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!("HTTP endpoint stopped: {e}");
        }
        let _ = sampler.await;
    });
    Ok((local, task))
}

/// Keeps a reading of the totals every second for `/api/history`.
async fn sample(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let totals = Status::totals(&state.metrics);
        let mut reading = serde_json::to_value(totals).unwrap_or_default();
        if let Some(r) = reading.as_object_mut() {
            r.insert(
                "uptime_seconds".into(),
                state.started.elapsed().as_secs_f64().into(),
            );
        }
        state.console.record(reading);
    }
}

fn router(
    metrics: Arc<Metrics>,
    rules: Arc<Rules>,
    console: Arc<Console>,
) -> (Router, Arc<AppState>) {
    let state = Arc::new(AppState {
        exposition: Exposition::new(metrics.clone(), rules.clone()),
        metrics,
        rules,
        console,
        started: Instant::now(),
    });
    let app = Router::new()
        .route("/", get(console_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/status", get(status))
        .route("/api/demo", get(demo))
        .route("/api/history", get(history))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "try /, /healthz, /readyz, /metrics or /api/status\n",
            )
        })
        .with_state(state.clone());
    (app, state)
}

async fn console_page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        CONSOLE,
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let mqtt = Metrics::is(&s.metrics.mqtt_connected);
    let redis = Metrics::is(&s.metrics.redis_connected);
    let body = serde_json::json!({
        "ready": mqtt && redis,
        "mqtt": if mqtt { "connected" } else { "disconnected" },
        "redis": if redis { "connected" } else { "disconnected" },
        "rules": s.rules.snapshot().len(),
    })
    .to_string()
        + "\n";
    let status = if mqtt && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        s.exposition.encode(),
    )
        .into_response()
}

/// `/api/status?wait_ms=N`: answers after N ms (at most 5 s), so that a poller's
/// cadence is the server's clock, whatever the client's (headless Chromium's virtual
/// time runs ahead while no request is pending).
#[derive(serde::Deserialize)]
struct StatusQuery {
    wait_ms: Option<u64>,
}

async fn status(State(s): State<Arc<AppState>>, Query(q): Query<StatusQuery>) -> Response {
    if let Some(ms) = q.wait_ms {
        tokio::time::sleep(Duration::from_millis(ms.min(5000))).await;
    }
    axum::Json(Status::read(&s.metrics, &s.rules, s.started)).into_response()
}

async fn history(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(s.console.history()).into_response()
}

async fn demo(State(s): State<Arc<AppState>>) -> Response {
    axum::Json(s.console.demo()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(app: &Router, method: &str, path: &str) -> (StatusCode, String) {
        use tower::ServiceExt;
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes() {
        let m = Arc::new(Metrics::default());
        let (app, state) = router(m.clone(), Arc::new(Rules::new()), Arc::default());
        assert_eq!(get(&app, "GET", "/healthz").await.0, StatusCode::OK);
        let (status, body) = get(&app, "GET", "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""mqtt":"disconnected""#), "{body}");
        Metrics::set(&m.mqtt_connected, true);
        Metrics::set(&m.redis_connected, true);
        assert_eq!(get(&app, "GET", "/readyz").await.0, StatusCode::OK);
        let (_, text) = get(&app, "GET", "/metrics").await;
        assert!(text.contains("\nwasmrule_redis_connected 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let (_, page) = get(&app, "GET", "/").await;
        assert!(page.contains("<title>wasmrule</title>"), "{page}");
        let (_, status) = get(&app, "GET", "/api/status").await;
        assert!(status.contains(r#""rules":[]"#), "{status}");
        assert_eq!(get(&app, "GET", "/api/demo").await.1, "null");
        assert_eq!(get(&app, "GET", "/api/history").await.1, "[]");
        for i in 0..HISTORY + 1 {
            state.console.record(serde_json::json!(i));
        }
        let (_, history) = get(&app, "GET", "/api/history").await;
        assert!(
            history.starts_with("[1,2,") && history.ends_with(",300]"),
            "{history}"
        );
        assert_eq!(
            get(&app, "POST", "/healthz").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(get(&app, "GET", "/x").await.0, StatusCode::NOT_FOUND);
    }

    /// Every process-wide counter is exported under its name with its own value.
    #[test]
    fn every_counter_is_exported() {
        let m = Arc::new(Metrics::default());
        for (i, (_, _, counter)) in super::super::metrics::COUNTERS.iter().enumerate() {
            Metrics::store(counter(&m), 1000 + i as u64);
        }
        let text = Exposition::new(m, Arc::new(Rules::new())).encode();
        for (i, (name, _, _)) in super::super::metrics::COUNTERS.iter().enumerate() {
            assert!(
                text.contains(&format!("\nwasmrule_{name}_total {}\n", 1000 + i)),
                "{name}\n{text}"
            );
        }
    }
}
