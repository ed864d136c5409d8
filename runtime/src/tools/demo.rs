//! `wasmrule demo`: the EMQX "MQTT to Redis" demo in one command.
//!
//! Starts the embedded broker with the demo's ACL and limits, loads the demo's four
//! rules (`store-last-message`, `authz-stats`, `disconnect-reasons`,
//! `dropped-messages`), starts the device simulator against it, and writes to Redis: the
//! given URL, or a private `redis-server` started here (no persistence, a free loopback
//! port, stopped on exit). While it runs, the terminal shows the Redis hashes the rules
//! fill, message and rule rates, and rule outcomes: the terminal counterpart of the
//! demo's Grafana dashboard. The web console (`http_addr`, `/` there) shows the same
//! hashes as bars and pies: the demo hands them to it every second
//! (`Runtime::console`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Overrides};
use crate::ops::metrics::Metrics;
use crate::sink::redis::redact_url;
use crate::source::broker::{Acl, BrokerConfig};
use crate::tools::simulate::{SimConfig, SimStats};

/// The demo's rules, as `rules-wasm/build.sh` names them.
pub const DEMO_RULES: [&str; 4] = [
    "store-last-message",
    "authz-stats",
    "disconnect-reasons",
    "dropped-messages",
];

/// The demo's ACL (`examples/demo/acl.toml`).
pub const DEMO_ACL: &str = include_str!("../../../examples/demo/acl.toml");

/// The hashes the demo's rules write, in screen order.
pub const DEMO_HASHES: [&str; 6] = [
    "emqx_messages",
    "authz_source",
    "authz_result",
    "disconnected_reason",
    "message_dropped_reason",
    "emqx_message_dropped_count",
];

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Where the embedded broker listens.
    pub broker: SocketAddr,
    /// Redis to write to; `None` starts a private redis-server.
    pub redis_url: Option<String>,
    /// Folder holding the built demo rules.
    pub rules_from: PathBuf,
    pub devices: usize,
    pub interval: Duration,
    /// Stop by itself after this long (for scripts and tests).
    pub duration: Option<Duration>,
    /// Redraw the summary in place (a terminal); otherwise print it as lines.
    pub live: bool,
    /// Where the HTTP endpoint (web console, `/metrics`) listens; `None` for none.
    pub http_addr: Option<SocketAddr>,
}

/// A private redis-server, stopped when dropped.
struct PrivateRedis {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

async fn start_redis() -> anyhow::Result<PrivateRedis> {
    let Some(binary) = on_path("redis-server") else {
        bail!(
            "no redis-server on PATH: install it (Debian/Ubuntu: sudo apt-get install -y \
             redis-server), or pass --redis-url redis://HOST:PORT"
        );
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port for redis-server")?
        .port();
    let dir = tempfile::tempdir().context("cannot create a directory for redis-server")?;
    let child = std::process::Command::new(&binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let redis = PrivateRedis {
        child,
        _dir: dir,
        url: format!("redis://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("redis-server did not start listening on port {port} within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(redis)
}

fn copy_rules(from: &Path, to: &Path) -> anyhow::Result<()> {
    for rule in DEMO_RULES {
        let src = from.join(format!("{rule}.wasm"));
        if !src.is_file() {
            bail!(
                "the demo rule {} is missing: build the rules first (rules-wasm/build.sh rust), \
                 or point --rules-from at a folder that has them",
                src.display()
            );
        }
        std::fs::copy(&src, to.join(format!("{rule}.wasm")))
            .with_context(|| format!("cannot copy {}", src.display()))?;
    }
    Ok(())
}

/// Runs the demo until `shutdown` completes (or `duration` passes).
///
/// # Errors
///
/// When a demo rule is missing, Redis cannot be started or reached, or the broker
/// address is taken.
pub async fn run(
    cfg: DemoConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let redis_guard;
    let redis_url = match &cfg.redis_url {
        Some(url) => url.clone(),
        None => {
            redis_guard = start_redis().await?;
            redis_guard.url.clone()
        }
    };
    let work = tempfile::tempdir().context("cannot create the demo's rules directory")?;
    let rules_dir = work.path().join("rules");
    std::fs::create_dir(&rules_dir)?;
    copy_rules(&cfg.rules_from, &rules_dir)?;

    let config = demo_config(&cfg, &redis_url, &rules_dir)?;
    let runtime = crate::Runtime::start(config).await?;
    let addr = runtime.broker_addr.context("the broker did not start")?;
    if let Some(http) = runtime.http_addr {
        // Before the first screen: in live mode it stays above it in the scrollback.
        println!("web console: http://{http}/   metrics: http://{http}/metrics");
    }

    let sim = devices_config(&cfg, addr);
    let stats = Arc::new(SimStats::default());
    let stop = CancellationToken::new();
    let simulator = tokio::spawn(crate::tools::simulate::devices(
        sim,
        stats.clone(),
        stop.clone(),
    ));

    let client = redis::Client::open(redis_url.as_str())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to {}", redact_url(&redis_url)))?;
    let screen = Screen {
        started: Instant::now(),
        broker: addr,
        redis_url: redis_url.clone(),
        devices: cfg.devices,
        live: cfg.live,
        console: runtime.http_addr,
    };
    let mut last = Snapshot::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let until = async {
        match cfg.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, until);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut until => break,
            _ = tick.tick() => {
                let now = Snapshot::take(&runtime.metrics, &stats);
                let hashes = read_hashes(&mut conn).await;
                runtime.console.set_demo(console_view(&hashes, &stats));
                screen.draw(&now, &last, &hashes);
                last = now;
            }
        }
    }
    stop.cancel();
    let _ = simulator.await;
    runtime.stop().await;
    if cfg.live {
        println!(
            "\nstopped; the demo's Redis {}",
            match cfg.redis_url {
                Some(_) => "keeps its data",
                None => "was private and is gone",
            }
        );
    }
    Ok(())
}

/// What the web console shows of the demo: its hashes (each a list of `[field,
/// value]`, in screen order) and what the simulator did.
fn console_view(hashes: &[(&str, Vec<(String, String)>)], stats: &SimStats) -> serde_json::Value {
    let hashes: serde_json::Map<String, serde_json::Value> = hashes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
        .collect();
    serde_json::json!({
        "hashes": hashes,
        "published": SimStats::get(&stats.published),
        "misbehaved": SimStats::get(&stats.misbehaviours),
    })
}

/// The runtime's config for the demo: the embedded broker with the demo's ACL and
/// limits, the demo's rules and Redis, the HTTP endpoint if asked for.
fn demo_config(cfg: &DemoConfig, redis_url: &str, rules_dir: &Path) -> anyhow::Result<Config> {
    let mut broker = BrokerConfig::new(cfg.broker);
    broker.acl = Acl::from_toml(DEMO_ACL).context("the demo ACL")?;
    broker.max_packet_size = 16 * 1024;
    broker.max_qos = 1;
    let mut config = Config::with_overrides(&Overrides {
        redis_url: Some(redis_url.to_owned()),
        rules_dir: Some(rules_dir.to_owned()),
        http_addr: Some(
            cfg.http_addr
                .map_or_else(|| "off".into(), |a| a.to_string()),
        ),
        ..Overrides::default()
    })?;
    config.broker = Some(broker);
    Ok(config)
}

/// The simulated devices, against the demo's broker at `addr`, misbehaving often.
fn devices_config(cfg: &DemoConfig, addr: SocketAddr) -> SimConfig {
    let mut sim = SimConfig::new(&addr.ip().to_string(), addr.port());
    sim.devices = cfg.devices;
    sim.interval = cfg.interval;
    sim.abnormal = 0.2;
    sim.max_packet_size = 16 * 1024;
    sim
}

/// Reads the demo's hashes; a hash that cannot be read shows as empty.
pub async fn read_hashes(
    conn: &mut redis::aio::MultiplexedConnection,
) -> Vec<(&'static str, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for key in DEMO_HASHES {
        let mut v: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap_or_default();
        // Counters biggest first; the temperatures by device.
        if key == "emqx_messages" {
            v.sort_by_key(|(k, _)| natural(k));
        } else {
            v.sort_by_key(|(_, n)| std::cmp::Reverse(n.parse::<i64>().unwrap_or(0)));
        }
        out.push((key, v));
    }
    out
}

/// `dev-10` after `dev-9`.
fn natural(s: &str) -> (String, u64) {
    let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = s.split_at(s.len() - digits);
    (head.to_owned(), tail.parse().unwrap_or(0))
}

#[derive(Debug, Default, Clone, Copy)]
struct Snapshot {
    published: u64,
    misbehaved: u64,
    received: u64,
    invocations: u64,
    failures: u64,
    written: u64,
}

impl Snapshot {
    fn take(m: &Metrics, s: &SimStats) -> Self {
        Snapshot {
            published: SimStats::get(&s.published),
            misbehaved: SimStats::get(&s.misbehaviours),
            received: Metrics::get(&m.messages_received),
            invocations: Metrics::get(&m.invocations),
            failures: Metrics::get(&m.invocation_errors),
            written: Metrics::get(&m.commands_written),
        }
    }
}

struct Screen {
    started: Instant,
    broker: SocketAddr,
    redis_url: String,
    devices: usize,
    live: bool,
    console: Option<SocketAddr>,
}

impl Screen {
    fn draw(&self, now: &Snapshot, last: &Snapshot, hashes: &[(&str, Vec<(String, String)>)]) {
        use std::fmt::Write as _;
        let mut s = String::new();
        if self.live {
            // Home and clear: redraw in place.
            s.push_str("\x1b[H\x1b[2J");
        }
        let _ = writeln!(
            s,
            "wasmrule demo | broker {} | {} | {} devices | {}s | Ctrl-C stops",
            self.broker,
            self.redis_url,
            self.devices,
            self.started.elapsed().as_secs()
        );
        if let Some(c) = self.console {
            let _ = writeln!(s, "web console http://{c}/");
        }
        let _ = writeln!(
            s,
            "published {} (+{}/s), misbehaved {} | events {} (+{}/s) | rule runs {} (+{}/s), failed {} | Redis commands {} (+{}/s)",
            now.published,
            now.published - last.published,
            now.misbehaved,
            now.received,
            now.received.saturating_sub(last.received),
            now.invocations,
            now.invocations.saturating_sub(last.invocations),
            now.failures,
            now.written,
            now.written.saturating_sub(last.written),
        );
        if !self.live {
            // Lines mode: one line per hash, for logs and scripts.
            for (key, entries) in hashes {
                let items: Vec<String> = entries.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(s, "{key}: {}", items.join(" "));
            }
            print!("{s}");
            return;
        }
        // Live mode fits a 30-line terminal: the readings packed four to a line, then
        // the counter hashes two side by side, their five biggest fields each.
        for (key, entries) in hashes.iter().filter(|(k, _)| *k == "emqx_messages") {
            let _ = writeln!(s, "\n{key} ({} devices)", entries.len());
            for row in entries.chunks(4).take(4) {
                let cells: Vec<String> =
                    row.iter().map(|(k, v)| format!("{k:>10} {v:<8}")).collect();
                let _ = writeln!(s, " {}", cells.join(" "));
            }
        }
        let counters: Vec<_> = hashes
            .iter()
            .filter(|(k, _)| *k != "emqx_messages")
            .collect();
        for pair in counters.chunks(2) {
            let column = |i: usize| -> Vec<String> {
                let Some((key, entries)) = pair.get(i) else {
                    return Vec::new();
                };
                let mut lines = vec![format!("{key} ({})", entries.len())];
                lines.extend(
                    entries
                        .iter()
                        .take(5)
                        .map(|(k, v)| format!("  {k:<28} {v:>6}")),
                );
                lines
            };
            let (left, right) = (column(0), column(1));
            let _ = writeln!(s);
            for i in 0..left.len().max(right.len()) {
                let l = left.get(i).map_or("", String::as_str);
                let r = right.get(i).map_or("", String::as_str);
                let _ = writeln!(s, "{l:<40}{r}");
            }
        }
        print!("{s}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
}
