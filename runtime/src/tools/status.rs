//! `wasmrule status`: reads `/api/status` (`ops/status.rs`) of a running wasmrule twice,
//! a second apart, and prints a terminal summary: connections, totals and rates, each
//! tenant, each rule (state, rate, outcomes, mean invocation time, last error, its
//! canary's diff rate and last difference), the files that did not load.
//!
//! Does not compute anything the endpoint does not say, beyond the rates.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde_json::Value;

/// The time between the two readings the rates come from.
const RATE_OVER: Duration = Duration::from_secs(1);

/// The summary of the instance whose HTTP endpoint is `addr`.
///
/// # Errors
///
/// When the endpoint does not answer, or not with wasmrule's status.
pub async fn summary(addr: SocketAddr) -> anyhow::Result<String> {
    let first = fetch(addr, "/api/status").await?;
    tokio::time::sleep(RATE_OVER).await;
    let now = fetch(addr, "/api/status").await?;
    Ok(render(addr, &first, &now))
}

/// `GET path` on `addr`, as JSON, over hyper's HTTP/1.1 client.
async fn fetch(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to wasmrule's HTTP endpoint at {addr}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("GET {path} on {addr}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    drop(sender);
    conn.abort();
    anyhow::ensure!(status.is_success(), "GET {path} on {addr}: {status}");
    serde_json::from_slice(&body).with_context(|| format!("GET {path} on {addr}: not JSON"))
}

fn render(addr: SocketAddr, before: &Value, now: &Value) -> String {
    let dt = (now["uptime_seconds"].as_f64().unwrap_or(0.0)
        - before["uptime_seconds"].as_f64().unwrap_or(0.0))
    .max(1e-3);
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let rate = |a: &Value, b: &Value, k: &str| ((num(b, k) - num(a, k)) / dt).max(0.0);
    let up = |b: bool| if b { "connected" } else { "DISCONNECTED" };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "wasmrule at {addr}: up {:.0} s, MQTT {}, Redis {}",
        num(now, "uptime_seconds"),
        up(now["mqtt_connected"].as_bool().unwrap_or(false)),
        up(now["redis_connected"].as_bool().unwrap_or(false)),
    );
    let (t0, t) = (&before["totals"], &now["totals"]);
    let total = |k: &str| format!("{} ({:.1}/s)", num(t, k), rate(t0, t, k));
    let _ = writeln!(
        s,
        "messages {}, rule runs {}, failed runs {}, commands written {}, refused {}, dead letters {}, shed {}",
        total("messages_received"),
        total("invocations"),
        total("invocation_errors"),
        total("commands_written"),
        num(t, "command_errors"),
        num(t, "dead_letters"),
        num(t, "events_shed"),
    );
    for tenant in now["tenants"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "tenant {}: {} rules, CPU share {}%, quarantined {}, shed {}, dead letters {}, CPU {:.3} s",
            tenant["tenant"].as_str().unwrap_or_default(),
            num(tenant, "rules"),
            num(tenant, "cpu_share_percent"),
            num(tenant, "quarantined"),
            num(tenant, "shed"),
            num(tenant, "dead_letters"),
            num(tenant, "cpu_seconds"),
        );
    }
    let _ = writeln!(
        s,
        "\n{:<32} {:<10} {:<9} {:<11} {:>10} {:>9} {:>8} {:>9} {:>9}  last error",
        "RULE", "TENANT", "VERSION", "STATE", "MATCHED/S", "OK", "FAILED", "COMMANDS", "MEAN"
    );
    let rules_before = before["rules"].as_array().cloned().unwrap_or_default();
    for r in now["rules"].as_array().into_iter().flatten() {
        let prev = rules_before.iter().find(|p| p["id"] == r["id"]);
        let matched = prev.map_or(0.0, |p| rate(p, r, "matched"));
        let runs = num(r, "invocations");
        let mean = if runs > 0.0 {
            format!("{:.1}us", 1e6 * num(r, "invocation_seconds") / runs)
        } else {
            "-".into()
        };
        let last = match &r["last_error"] {
            Value::Array(e) => format!(
                "{}: {}",
                e.first().and_then(Value::as_str).unwrap_or_default(),
                e.get(1).and_then(Value::as_str).unwrap_or_default()
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{:<32} {:<10} {:<9} {:<11} {:>10.1} {:>9} {:>8} {:>9} {:>9}  {last}",
            r["id"].as_str().unwrap_or_default(),
            r["tenant"].as_str().unwrap_or_default(),
            r["version"].as_str().unwrap_or_default(),
            r["state"].as_str().unwrap_or_default(),
            matched,
            num(r, "ok"),
            num(r, "failed"),
            num(r, "commands"),
            mean,
        );
        if let Some(c) = r["canary"].as_object() {
            let _ = writeln!(s, "  {}", canary_line(c));
        }
    }
    for c in now["idle_canaries"].as_array().into_iter().flatten() {
        if let Some(c) = c.as_object() {
            let rule = c.get("rule").and_then(Value::as_str).unwrap_or_default();
            let _ = writeln!(s, "{rule}: {}", canary_line(c));
        }
    }
    for (id, e) in now["load_errors"].as_object().into_iter().flatten() {
        let _ = writeln!(s, "not loaded: {id}: {}", e.as_str().unwrap_or_default());
    }
    s
}

/// A canary's state, version, comparison and last difference, on one line.
fn canary_line(c: &serde_json::Map<String, Value>) -> String {
    let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
    let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
    let failed: u64 = c
        .get("failures")
        .and_then(Value::as_object)
        .map_or(0, |f| f.values().filter_map(Value::as_u64).sum());
    let mut line = format!(
        "canary {} {}: {} compared, {} diffs ({:.1}%), {failed} failed",
        text("version"),
        text("state"),
        n("events"),
        n("diffs"),
        c.get("diff_rate_percent")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
    );
    let last = c
        .get("samples")
        .and_then(Value::as_array)
        .and_then(|s| s.last());
    if let Some(d) = last {
        let lines = |k: &str| {
            d[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = write!(
            line,
            "; last: {}: live `{}`, canary `{}`",
            d["topic"].as_str().unwrap_or_default(),
            lines("live"),
            lines("canary")
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rates_tenants_and_rules() {
        let status = |received: u64, matched: u64, up: f64| {
            serde_json::json!({
                "uptime_seconds": up, "mqtt_connected": true, "redis_connected": false,
                "totals": {"messages_received": received, "invocations": 0, "invocation_errors": 0,
                    "commands_written": 0, "command_errors": 0, "dead_letters": 0, "events_shed": 0},
                "tenants": [{"tenant": "acme", "rules": 1, "cpu_share_percent": 50, "quarantined": 0,
                    "shed": 0, "dead_letters": 0, "cpu_seconds": 0.5}],
                "rules": [{"id": "acme/r", "tenant": "acme", "version": "1.0", "state": "serving",
                    "matched": matched, "ok": 1, "failed": 1, "commands": 2, "invocations": 2,
                    "invocation_seconds": 0.00001, "last_error": ["trap", "unreachable"]}],
                "load_errors": {"acme/bad": "not wasm"},
            })
        };
        let text = render(
            "127.0.0.1:9464".parse().unwrap(),
            &status(10, 5, 1.0),
            &status(30, 25, 2.0),
        );
        assert!(
            text.contains("MQTT connected, Redis DISCONNECTED"),
            "{text}"
        );
        assert!(text.contains("messages 30 (20.0/s)"), "{text}");
        assert!(
            text.contains("tenant acme: 1 rules, CPU share 50%"),
            "{text}"
        );
        assert!(text.contains("acme/r"), "{text}");
        assert!(text.contains("20.0"), "{text}");
        assert!(text.contains("5.0us"), "{text}");
        assert!(text.contains("trap: unreachable"), "{text}");
        assert!(text.contains("not loaded: acme/bad: not wasm"), "{text}");
    }

    #[test]
    fn renders_a_canary_under_its_rule() {
        let c = serde_json::json!({
            "rule": "r", "version": "2", "state": "comparing", "events": 200, "diffs": 20,
            "diff_rate_percent": 10.0, "failures": {"trap": 1},
            "samples": [{"topic": "t/d", "event_id": "1", "live": ["HSET h d 21.37"],
                "canary": ["HSET h d 21.4"]}],
        });
        let line = canary_line(c.as_object().unwrap());
        assert_eq!(
            line,
            "canary 2 comparing: 200 compared, 20 diffs (10.0%), 1 failed; last: t/d: \
             live `HSET h d 21.37`, canary `HSET h d 21.4`"
        );
    }
}
