//! Test harness: private `redis-server` and `mosquitto` processes on free loopback ports,
//! an MQTT publisher, a Redis client, and the built rule modules.
//!
//! Every server is started by the test that uses it and killed when its handle drops.
//! Nothing here ever talks to a default port or to anything but 127.0.0.1.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wasmrule::{Config, MqttProtocol, Overrides};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Finds a server binary on PATH or in the sbin directories Debian installs to.
fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/usr/local/sbin".into()]);
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` not found on PATH or in /usr/sbin: ./test.sh installs it (tests/install-tools.sh)"
    );
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during startup: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 10 s");
}

/// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`, ...) to a process.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{signal} {pid} failed");
}

/// A private redis-server.
pub struct Redis {
    pub port: u16,
    child: Child,
    aof: bool,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Without persistence.
    pub fn start() -> Redis {
        Self::start_with(false)
    }

    /// With `aof`, an append-only file fsynced on every write (`appendfsync always`):
    /// nothing Redis confirmed is lost when it is killed.
    pub fn start_with(aof: bool) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(port, aof, dir.path());
        Redis {
            port,
            child,
            aof,
            dir,
        }
    }

    fn spawn(port: u16, aof: bool, dir: &Path) -> Child {
        let mut child = Command::new(binary("redis-server"))
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", if aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        wait_for_port(port, "redis-server", &mut child);
        child
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.port, self.aof, self.dir.path());
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .expect("cannot connect to test redis")
    }

    pub fn hgetall(&self, key: &str) -> std::collections::HashMap<String, String> {
        redis::cmd("HGETALL")
            .arg(key)
            .query(&mut self.conn())
            .unwrap()
    }

    pub fn hget(&self, key: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query(&mut self.conn())
            .unwrap()
    }

    pub fn lrange(&self, key: &str) -> Vec<Vec<u8>> {
        redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut self.conn())
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private mosquitto broker.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Without persistence.
    pub fn start() -> Mosquitto {
        Self::start_with(false)
    }

    /// With `persistence`, sessions and queued messages survive a restart (mosquitto
    /// writes them at shutdown and every `autosave_interval` seconds).
    pub fn start_with(persistence: bool) -> Mosquitto {
        Self::start_with_conf(persistence, 1_000_000, "")
    }

    /// With at most `max_queued_messages` queued per client. Past it mosquitto drops
    /// messages for a subscriber that is not reading: QoS 0 ones at once (mosquitto's
    /// default is 1000).
    pub fn start_with_queue(persistence: bool, max_queued_messages: u32) -> Mosquitto {
        Self::start_with_conf(persistence, max_queued_messages, "")
    }

    /// With `max_queued_messages` and `extra` lines appended to the configuration (a
    /// bridge, say).
    pub fn start_with_conf(persistence: bool, max_queued_messages: u32, extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        // max_queued_messages: mosquitto drops QoS 1/2 messages queued beyond 1000 for a
        // slow or offline subscriber by default; tests must never mistake that for our
        // loss. max_inflight_messages 0: no broker-side limit below the client's Receive
        // Maximum.
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages {max_queued_messages}\n\
                 max_inflight_messages 0\npersistence {persistence}\npersistence_location {}/\n\
                 autosave_interval 1\n{extra}",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Self::spawn(port, &conf);
        Mosquitto { port, child, dir }
    }

    fn spawn(port: u16, conf: &Path) -> Child {
        let mut child = Command::new(binary("mosquitto"))
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        wait_for_port(port, "mosquitto", &mut child);
        child
    }

    /// SIGTERM (mosquitto saves its persistence file) and start again.
    pub fn restart(&mut self) {
        signal(self.child.id(), "TERM");
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, &self.dir.path().join("mosquitto.conf"));
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A built rule module from `rules-wasm/dist/`.
pub fn dist(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rules-wasm/dist")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: build the rules first with rules-wasm/build.sh",
        p.display()
    );
    p
}

/// A runtime config for the test's servers, with a fresh rules directory.
pub fn config(redis: &Redis, mqtt: &Mosquitto, rules_dir: &Path) -> Config {
    let mut c = Config::with_overrides(&Overrides {
        mqtt_url: Some(mqtt.url()),
        redis_url: Some(redis.url()),
        rules_dir: Some(rules_dir.to_owned()),
        client_id: Some(format!("wasmrule-test-{}", free_port())),
        qos: Some(1),
        clean_session: Some(true),
        http_addr: Some("off".into()),
        ..Overrides::default()
    })
    .unwrap();
    c.runtime.workers = 2;
    c.rules.debounce = Duration::from_millis(20);
    // Tests that want the compiled-code cache give it a directory of their own.
    c.rules.cache_dir = None;
    c.mqtt.protocol = MqttProtocol::V5;
    c
}

/// A runtime config for wasmrule as the broker: the embedded broker on a free port,
/// `redis`, the rules in `rules_dir`, no HTTP endpoint, two workers, no compile cache.
pub fn embedded_config(redis: &Redis, rules_dir: &Path) -> Config {
    let mut c = Config::with_overrides(&Overrides {
        redis_url: Some(redis.url()),
        rules_dir: Some(rules_dir.to_owned()),
        http_addr: Some("off".into()),
        ..Overrides::default()
    })
    .unwrap();
    c.runtime.workers = 2;
    c.rules.cache_dir = None;
    c.broker = Some(wasmrule::BrokerConfig::new("127.0.0.1:0".parse().unwrap()));
    c
}

/// A connected MQTT 3.1.1 publisher (rumqttc), with its event loop polled in the
/// background.
pub struct Publisher {
    client: rumqttc::AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(mqtt: &Mosquitto) -> Publisher {
        Self::connect_with(mqtt, &format!("pub-{}", free_port()), true).await
    }

    /// With `clean_session = false`, unacknowledged publishes are sent again after the
    /// broker comes back, and the broker keeps the session.
    pub async fn connect_with(mqtt: &Mosquitto, client_id: &str, clean_session: bool) -> Publisher {
        let mut o = rumqttc::MqttOptions::new(client_id, "127.0.0.1", mqtt.port);
        o.set_clean_session(clean_session);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_inflight(100);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 1000);
        let task = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Publisher { client, task }
    }

    /// Publishes with QoS 1.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish_qos(topic, payload, 1).await;
    }

    /// Publishes a retained message with QoS 1.
    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload.into())
            .await
            .expect("publish queued");
    }

    /// Publishes with QoS `qos` (0, 1 or 2).
    pub async fn publish_qos(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: u8) {
        let qos = match qos {
            0 => rumqttc::QoS::AtMostOnce,
            1 => rumqttc::QoS::AtLeastOnce,
            _ => rumqttc::QoS::ExactlyOnce,
        };
        self.client
            .publish(topic, qos, false, payload.into())
            .await
            .expect("publish queued");
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with
/// `what`.
pub async fn eventually<T>(timeout: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    eventually_explained(timeout, what, check, String::new).await
}

/// [`eventually`], with `explain()` (what was seen instead) in the panic.
pub async fn eventually_explained<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for: {what}\n{}",
                explain()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes `payload` on `topic` (QoS 1) every 100 ms until `check` holds, or panics
/// after `timeout` with `what`: until wasmrule has subscribed and serves (messages
/// published before its subscription are not for it).
pub async fn publish_until<T>(
    publisher: &Publisher,
    topic: &str,
    payload: &str,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        publisher.publish(topic, payload).await;
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(v) = check() {
                return v;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
    }
}

/// The body of `GET path` from wasmrule's health endpoint at `127.0.0.1:port`, or
/// `None` if it does not answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// The value of `name` in wasmrule's `/metrics` at `127.0.0.1:port`.
pub fn metric(port: u16, name: &str) -> Option<u64> {
    http_get(port, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A rule `name` of `version` on `filter` that traps (`unreachable`) on every event.
pub fn trap_rule(name: &str, version: &str, filter: &str) -> Vec<u8> {
    let manifest = format!(r#"{{"name":"{name}","version":"{version}","filters":["{filter}"]}}"#);
    let escaped: String = manifest.bytes().map(|b| format!("\\{b:02x}")).collect();
    wat::parse_str(format!(
        r#"(module
          (memory (export "memory") 1)
          (func (export "wasmrule_abi_version_1"))
          (data (i32.const 0) "{escaped}")
          (func (export "wasmrule_manifest") (result i64) (i64.const {len}))
          (func (export "wasmrule_alloc") (param i32) (result i32) (i32.const 1024))
          (func (export "wasmrule_on_event") (param i32 i32) (result i64) unreachable))"#,
        len = manifest.len()
    ))
    .unwrap()
}

/// Copies `src` into `dir/name` the way a user's `cp` does: truncate, then write.
pub fn install(src: &Path, dir: &Path, name: &str) {
    std::fs::copy(src, dir.join(name)).expect("copy rule");
}

/// A hand-written rule returning `<command> <key> <event JSON>` (RPUSH, PUBLISH, ...)
/// for every event on `filter`.
pub fn echo_rule(command: &str, filter: &str, key: &str) -> Vec<u8> {
    echo_rule_manifest(
        command,
        key,
        &format!(r#"{{"name":"echo","filters":["{filter}"]}}"#),
    )
}

/// [`echo_rule`] whose manifest says `version`.
pub fn echo_rule_version(command: &str, filter: &str, key: &str, version: &str) -> Vec<u8> {
    echo_rule_manifest(
        command,
        key,
        &format!(r#"{{"name":"echo","version":"{version}","filters":["{filter}"]}}"#),
    )
}

fn echo_rule_manifest(command: &str, key: &str, manifest: &str) -> Vec<u8> {
    let header_len = 21 + command.len() + key.len();
    let at = 4096 - header_len;
    let esc = |b: &[u8]| b.iter().map(|c| format!("\\{c:02x}")).collect::<String>();
    let mut header = vec![0u8];
    header.extend(1u32.to_le_bytes());
    header.extend(3u32.to_le_bytes());
    header.extend((command.len() as u32).to_le_bytes());
    header.extend(command.as_bytes());
    header.extend((key.len() as u32).to_le_bytes());
    header.extend(key.as_bytes());
    let text = format!(
        r#"(module
          (memory (export "memory") 1)
          (func (export "wasmrule_abi_version_1"))
          (data (i32.const 0) "{m}")
          (data (i32.const {at}) "{h}")
          (func (export "wasmrule_manifest") (result i64) (i64.const {mlen}))
          (func (export "wasmrule_alloc") (param $n i32) (result i32) (local $need i32)
            (local.set $need
              (i32.sub
                (i32.shr_u (i32.add (i32.add (i32.const 4096) (local.get $n)) (i32.const 65535))
                           (i32.const 16))
                (memory.size)))
            (if (i32.gt_s (local.get $need) (i32.const 0))
              (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1))
                (then (return (i32.const 0))))))
            (i32.const 4096))
          (func (export "wasmrule_on_event") (param $p i32) (param $n i32) (result i64)
            (i32.store (i32.const 4092) (local.get $n))
            (i64.or (i64.shl (i64.const {at}) (i64.const 32))
                    (i64.extend_i32_u (i32.add (local.get $n) (i32.const {header_len}))))))"#,
        m = esc(manifest.as_bytes()),
        h = esc(&header),
        mlen = manifest.len(),
    );
    wat::parse_str(&text).expect("echo rule assembles")
}

/// The `wasmrule` binary under test: `$WASMRULE_BIN` if set, else the one cargo built
/// for this test. (With a target directory shared between worktrees, `target/*/wasmrule`
/// is whichever worktree built last; `WASMRULE_BIN` pins the one to test.)
pub fn wasmrule_bin() -> PathBuf {
    std::env::var_os("WASMRULE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_wasmrule").into())
}

/// The `wasmrule` binary as a separate process, to kill and restart.
pub struct WasmruleProcess {
    child: Child,
    args: Vec<String>,
    log: PathBuf,
}

impl WasmruleProcess {
    /// `wasmrule run ARGS`, logging to `log` (appended across restarts).
    pub fn start(args: &[String], log: &Path) -> WasmruleProcess {
        let child = Self::spawn(args, log);
        WasmruleProcess {
            child,
            args: args.to_vec(),
            log: log.to_owned(),
        }
    }

    fn spawn(args: &[String], log: &Path) -> Child {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(wasmrule_bin())
            .arg("run")
            .args(args)
            .env("WASMRULE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("cannot start wasmrule")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wasmrule did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.args, &self.log);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A child process killed when dropped, so a failing test leaves none behind (one that
/// inherited the test's stderr would keep a piped `cargo test` waiting).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for WasmruleProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
