//! Seeing wasmrule run, end to end: `wasmrule demo` as its own process (embedded broker,
//! the four demo rules, the simulator) writing to a private redis-server, with its HTTP
//! endpoint on a free loopback port; a real Prometheus scraping it (Debian package
//! `prometheus`), headless Chromium (Debian package `chromium`) loading its console, and
//! `wasmrule status` reading it. Plus `--log-format json` on a failing rule.
//!
//! Every wait is a deadline on a condition, never an assertion about time.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` every 200 ms until it returns `Some`; panics with `what` (and the last
/// thing `check` said) after `WAIT`.
fn until<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("gave up waiting for {what}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `GET path` on `127.0.0.1:port`: the status code and body.
fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `wasmrule demo` with its own Redis and free ports, its output in files.
struct Demo {
    _proc: ChildGuard,
    redis: Redis,
    http: u16,
    dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let redis = Redis::start();
        let dir = tempfile::tempdir().unwrap();
        let http = free_port();
        let rules_from = dist("store-last-message");
        let child = Command::new(wasmrule_bin())
            .args(["demo", "--broker", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--redis-url", &redis.url()])
            .arg("--rules-from")
            .arg(rules_from.parent().unwrap())
            .args(["--devices", "10", "--interval", "100"])
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .spawn()
            .expect("cannot start wasmrule demo");
        let demo = Demo {
            _proc: ChildGuard(child),
            redis,
            http,
            dir,
        };
        // Serving all four rules, and every demo hash filled.
        until("the demo's rules and hashes", || {
            let (_, metrics) = get(demo.http, "/metrics")?;
            for rule in wasmrule::demo::DEMO_RULES {
                if !metrics.contains(&format!(
                    "wasmrule_rule_ok_total{{tenant=\"default\",rule=\"{rule}\""
                )) {
                    return Err(format!("no rule_ok series for {rule}"));
                }
            }
            for key in wasmrule::demo::DEMO_HASHES {
                if demo.redis.hgetall(key).is_empty() {
                    return Err(format!("{key} is empty"));
                }
            }
            Ok(())
        });
        demo
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }
}

fn dashboard(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/grafana")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel's targets (rows hold none, or their own panels).
fn targets(dash: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut panels: Vec<&Value> = dash["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap_or_default().to_owned(),
                t.clone(),
            ));
        }
    }
    out
}

/// Import-ready: the datasource is a template variable every panel and target uses.
fn check_datasource_variable(dash: &Value, plugin: &str) {
    let var = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == plugin)
        .unwrap_or_else(|| panic!("no datasource variable for {plugin}"));
    let uid = format!("${{{}}}", var["name"].as_str().unwrap());
    for (title, t) in targets(dash) {
        assert_eq!(t["datasource"]["uid"], uid.as_str(), "{title}");
        assert_eq!(t["datasource"]["type"], plugin, "{title}");
    }
}

/// A private Prometheus scraping `target` every second.
struct Prometheus {
    _proc: ChildGuard,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: wasmrule\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(find("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start prometheus");
        Prometheus {
            _proc: ChildGuard(child),
            port,
            _dir: dir,
        }
    }

    /// An instant query's result vector, or why there is none.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (code, body) = get(self.port, &format!("/api/v1/query?query={}", encode(expr)))?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if code != 200 || v["status"] != "success" {
            return Err(format!("{code}: {body}"));
        }
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if result.is_empty() {
            return Err(format!("no data for {expr}"));
        }
        Ok(result)
    }
}

/// A program on PATH or in /usr/sbin, /usr/bin (Debian's packages).
fn find(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found: ./test.sh installs it (tests/install-tools.sh)")
        })
}

/// `/metrics` during the demo has per-rule series for all four rules, labelled tenant,
/// rule, version, and histograms with buckets; a real Prometheus scraping it answers
/// every PromQL expression of examples/grafana/wasmrule.json with data; every panel of
/// examples/grafana/redis-demo.json has data in the demo's Redis; `wasmrule status`
/// summarises it; the demo printed its console's URL.
#[test]
fn the_demo_has_per_rule_metrics_dashboards_with_data_and_a_status() {
    let demo = Demo::start();
    assert!(
        demo.stdout()
            .contains(&format!("web console: http://127.0.0.1:{}/", demo.http)),
        "{}",
        demo.stdout()
    );

    let (code, metrics) = get(demo.http, "/metrics").unwrap();
    assert_eq!(code, 200);
    for rule in wasmrule::demo::DEMO_RULES {
        let labels = format!("tenant=\"default\",rule=\"{rule}\",version=\"");
        for series in [
            "wasmrule_rule_matched_total",
            "wasmrule_rule_ok_total",
            "wasmrule_rule_commands_total",
            "wasmrule_rule_invocation_seconds_count",
        ] {
            assert!(
                metrics.contains(&format!("{series}{{{labels}")),
                "{series} of {rule}:\n{metrics}"
            );
        }
        assert!(
            metrics.lines().any(|l| l
                .starts_with("wasmrule_rule_invocation_seconds_bucket{le=\"+Inf\",")
                && l.contains(&labels)),
            "buckets of {rule}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("wasmrule_message_latency_seconds_bucket{le=\"0.001\"} ")
            && metrics.contains("wasmrule_message_latency_seconds_bucket{le=\"+Inf\"} "),
        "{metrics}"
    );

    // The Prometheus dashboard, through a real Prometheus.
    let dash = dashboard("wasmrule.json");
    check_datasource_variable(&dash, "prometheus");
    let prometheus = Prometheus::start(demo.http);
    until("Prometheus to have scraped the demo a few times", || {
        prometheus
            .query("count_over_time(wasmrule_rules[1m]) >= 3")
            .map(|_| ())
    });
    let exprs: Vec<(String, String)> = targets(&dash)
        .into_iter()
        .map(|(title, t)| {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no expr"));
            // Grafana's own variables, as Grafana fills them in for a 1 s scrape interval.
            (title, expr.replace("$__rate_interval", "1m"))
        })
        .collect();
    assert!(exprs.len() > 20, "{exprs:?}");
    for (title, expr) in &exprs {
        let result = until(&format!("data for panel {title:?}: {expr}"), || {
            prometheus.query(expr)
        });
        println!("{title}: {expr}: {} series", result.len());
    }

    // The seed's Redis dashboard, against the demo's Redis.
    let dash = dashboard("redis-demo.json");
    check_datasource_variable(&dash, "redis-datasource");
    let panels = targets(&dash);
    assert_eq!(panels.len(), 6, "{panels:?}");
    let mut conn = demo.redis.conn();
    for (title, t) in panels {
        let command = t["command"].as_str().unwrap().to_ascii_uppercase();
        let key = t["keyName"].as_str().unwrap();
        let reply: Vec<(String, String)> = redis::cmd(&command).arg(key).query(&mut conn).unwrap();
        assert!(
            !reply.is_empty(),
            "panel {title:?}: {command} {key} is empty"
        );
        println!("{title}: {command} {key}: {} fields", reply.len());
    }

    // `wasmrule status`: a terminal summary read from the same endpoint.
    let out = Command::new(wasmrule_bin())
        .args(["status", "--http-addr", &format!("127.0.0.1:{}", demo.http)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rule in wasmrule::demo::DEMO_RULES {
        assert!(text.contains(rule), "{rule}:\n{text}");
    }
    assert!(
        text.contains("MQTT connected") && text.contains("Redis connected"),
        "{text}"
    );
    assert!(text.contains("tenant default"), "{text}");
}

/// The console at `/`, in headless Chromium while the demo runs: no script errors, the
/// four demo rules listed, the message-rate chart drawing new points, the demo's
/// hashes shown. The screenshot is kept (its path is printed).
#[test]
fn the_console_in_headless_chromium_shows_the_rules_and_a_live_chart() {
    let demo = Demo::start();
    let chromium = find("chromium");
    let url = format!("http://127.0.0.1:{}/?poll=250", demo.http);
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1400,1500",
                // The page's 100 ms pauses between polls run on this virtual clock (2 s
                // are 20 polls); the server answers each after the 250 ms of `?poll`,
                // real time, so that messages flow in between.
                "--virtual-time-budget=2000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("cannot run chromium");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dom = until("the console to show the rules and a moving chart", || {
        let (dom, stderr) = run(&["--dump-dom"]);
        if let Some(l) = stderr
            .lines()
            .find(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        {
            panic!("console error: {l}\n{stderr}");
        }
        let rows = wasmrule::demo::DEMO_RULES
            .iter()
            .filter(|r| dom.contains(&format!("data-rule=\"{r}\"")))
            .count();
        let updates: u32 = dom
            .split("id=\"rates\" data-updates=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if rows == 4 && updates >= 2 && dom.contains("Last temperature by device") {
            Ok(dom)
        } else {
            Err(format!("{rows} rules, {updates} chart updates"))
        }
    });
    assert!(dom.contains("data-errors=\"0\""), "{dom}");
    assert!(dom.contains("data-tenant=\"default\""), "{dom}");
    assert!(dom.contains("dev-"), "the demo's devices:\n{dom}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&shot);
    let (_, stderr) = run(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{stderr}"));
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("console screenshot: {}", shot.display());
}

/// `--log-format json`: one JSON object a line, and a rule's failure carries tenant,
/// rule, version and topic as fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_tenant_rule_version_and_topic() {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let tenant = dir.path().join("rules/acme");
    std::fs::create_dir_all(&tenant).unwrap();
    std::fs::write(
        tenant.join("trap.wasm"),
        trap_rule("trap", "3.1.4", "acme/#"),
    )
    .unwrap();
    let log = dir.path().join("log");
    let args: Vec<String> = [
        "--log-format",
        "json",
        "--mqtt-url",
        &mqtt.url(),
        "--redis-url",
        &redis.url(),
        "--rules-dir",
        &dir.path().join("rules").display().to_string(),
        "--http-addr",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let wasmrule = WasmruleProcess::start(&args, &log);
    let publisher = Publisher::connect(&mqtt).await;
    let line = eventually(WAIT, "a JSON log line of the rule's failure", || {
        futures_now(publisher.publish("acme/dev-1", "{}"));
        wasmrule.log().lines().find_map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            (v["kind"] == "trap").then_some(v)
        })
    })
    .await;
    assert_eq!(line["tenant"], "acme", "{line}");
    assert_eq!(line["rule"], "acme/trap", "{line}");
    assert_eq!(line["version"], "3.1.4", "{line}");
    assert_eq!(line["topic"], "acme/dev-1", "{line}");
    assert_eq!(line["level"], "WARN", "{line}");
    assert!(line["message"].as_str().is_some(), "{line}");
}

/// Runs a future that does not wait (a publish handed to the client) to completion.
fn futures_now<F: std::future::Future>(f: F) -> F::Output {
    futures_util::FutureExt::now_or_never(f).expect("publish waits")
}

/// Cardinality is bounded by what is loaded: a rule's series appear with it, a new
/// version's replace the old one's, and a removed rule's are gone from `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_s_series_live_as_long_as_its_version_serves() {
    let redis = Redis::start();
    let mqtt = Mosquitto::start();
    let rules = tempfile::tempdir().unwrap();
    let mut cfg = config(&redis, &mqtt, rules.path());
    cfg.runtime.http_addr = Some("127.0.0.1:0".parse().unwrap());
    let rt = wasmrule::Runtime::start(cfg).await.unwrap();
    let port = rt.http_addr.expect("endpoint bound").port();
    let series = |version: &str| {
        format!(
            "wasmrule_rule_matched_total{{tenant=\"default\",rule=\"r\",version=\"{version}\"}}"
        )
    };
    let scrape = || get(port, "/metrics").map(|(_, m)| m).unwrap_or_default();
    let replace = |version: &str| {
        // Written aside and renamed in: the watcher sees one complete file.
        let tmp = rules.path().join("r.tmp");
        std::fs::write(&tmp, trap_rule("r", version, "x/#")).unwrap();
        std::fs::rename(&tmp, rules.path().join("r.wasm")).unwrap();
    };
    replace("1.0.0");
    eventually(WAIT, "version 1.0.0's series", || {
        scrape().contains(&series("1.0.0")).then_some(())
    })
    .await;
    replace("2.0.0");
    eventually(WAIT, "2.0.0's series instead of 1.0.0's", || {
        let m = scrape();
        (m.contains(&series("2.0.0")) && !m.contains(&series("1.0.0"))).then_some(())
    })
    .await;
    std::fs::remove_file(rules.path().join("r.wasm")).unwrap();
    eventually(WAIT, "no series of the removed rule", || {
        let m = scrape();
        (!m.contains("rule=\"r\"") && m.contains("wasmrule_rules 0\n")).then_some(())
    })
    .await;
    rt.stop().await;
}
