//! TLS against the real servers: the `wasmrule` binary to mosquitto over `mqtts://` and
//! to redis-server over `rediss://`, both with client certificates, carrying a QoS 1
//! stream with nothing lost; and a wrong CA, an expired certificate and a wrong host
//! name, each failing with a log line that names the problem. Certificates are made by
//! the test (rcgen); everything listens on 127.0.0.1 ports of its own.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use support::*;

/// A certificate authority of the test's own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// Writes the CA certificate to `dir/<name>` and returns its path.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// A certificate for `names` (IP addresses or DNS names), valid now unless
    /// `expired`, written as `dir/<stem>.pem` and `dir/<stem>.key`.
    fn issue(&self, dir: &Path, stem: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, stem);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// A server's certificate and key, and the CA that clients must trust for it.
struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

/// mosquitto with a plain listener (the test's publisher) and a TLS listener that
/// requires a client certificate from `ca` (wasmrule).
fn mosquitto_tls(server: &ServerCert, tls_port: u16) -> Mosquitto {
    Mosquitto::start_with_conf(
        true,
        1_000_000,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate true\n",
            server.ca.display(),
            server.cert.display(),
            server.key.display()
        ),
    )
}

/// redis-server with a plain port (the test's own reads) and a TLS port that requires
/// a client certificate from `ca` (wasmrule).
struct RedisTls {
    port: u16,
    tls_port: u16,
    child: Child,
}

impl RedisTls {
    fn start(server: &ServerCert) -> RedisTls {
        let (port, tls_port) = (free_port(), free_port());
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--tls-port",
                &tls_port.to_string(),
            ])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(&server.cert)
            .arg("--tls-key-file")
            .arg(&server.key)
            .arg("--tls-ca-cert-file")
            .arg(&server.ca)
            .args(["--tls-auth-clients", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server (./test.sh installs it)");
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_ok() {
                return RedisTls {
                    port,
                    tls_port,
                    child,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("redis-server exited at startup ({status}): is it built with TLS?");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not listen on its TLS port within 10 s");
    }

    /// (distinct sequence numbers seen, writes), read over the plain port.
    fn counts(&self) -> Option<(u64, u64)> {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .ok()?
            .get_connection()
            .ok()?;
        let seen: u64 = redis::cmd("BITCOUNT").arg("seen").query(&mut c).ok()?;
        let writes: Option<u64> = redis::cmd("GET").arg("writes").query(&mut c).ok()?;
        Some((seen, writes.unwrap_or(0)))
    }
}

impl Drop for RedisTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory with a CA, the servers' certificate (for `names`, expired or not), a
/// client certificate, and a second CA nobody uses.
struct Pki {
    dir: tempfile::TempDir,
    server: ServerCert,
    client: (PathBuf, PathBuf),
    other_ca: PathBuf,
}

impl Pki {
    fn new(names: &[&str], expired: bool) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("wasmrule test CA");
        let ca_file = ca.write(dir.path(), "ca.pem");
        let (cert, key) = ca.issue(dir.path(), "server", names, expired);
        let client = ca.issue(dir.path(), "wasmrule", &["wasmrule.test"], false);
        let other_ca = Ca::new("another CA").write(dir.path(), "other-ca.pem");
        Pki {
            dir,
            server: ServerCert {
                cert,
                key,
                ca: ca_file,
            },
            client,
            other_ca,
        }
    }

    /// A config file for wasmrule: TLS for both connections, trusting `ca`, with the
    /// client certificate.
    fn config(&self, ca: &Path) -> PathBuf {
        let (cert, key) = &self.client;
        let tls = format!(
            "tls_ca_file = {:?}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            ca.display().to_string(),
            cert.display().to_string(),
            key.display().to_string()
        );
        let path = self.dir.path().join("wasmrule.toml");
        std::fs::write(
            &path,
            format!(
                "[mqtt]\ninflight = 200\n{tls}[redis]\n{tls}\
                 [runtime]\nhttp_addr = \"off\"\nshutdown_timeout_secs = 10\n"
            ),
        )
        .unwrap();
        path
    }
}

/// `wasmrule run` over `mqtts://HOST:PORT` and `rediss://HOST:PORT` with the
/// `seq-counter` rule, logging to the PKI directory.
fn wasmrule(pki: &Pki, ca: &Path, host: &str, mqtt_port: u16, redis_port: u16) -> WasmruleProcess {
    let rules = pki.dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::copy(dist("seq-counter"), rules.join("seq-counter.wasm")).unwrap();
    let args: Vec<String> = [
        "--config",
        pki.config(ca).to_str().unwrap(),
        "--mqtt-url",
        &format!("mqtts://{host}:{mqtt_port}"),
        "--redis-url",
        &format!("rediss://{host}:{redis_port}"),
        "--rules-dir",
        rules.to_str().unwrap(),
        "--client-id",
        "wasmrule-tls",
        "--qos",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    WasmruleProcess::start(&args, &pki.dir.path().join("wasmrule.log"))
}

/// 5,000 QoS 1 messages at about 1,000 a second, published on mosquitto's plain
/// listener, reach wasmrule over mqtts:// and Redis over rediss://, all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_and_rediss_carry_a_qos1_stream_with_nothing_lost() {
    const N: u64 = 5_000;
    let pki = Pki::new(&["127.0.0.1"], false);
    let tls_port = free_port();
    let mqtt = mosquitto_tls(&pki.server, tls_port);
    let redis = RedisTls::start(&pki.server);
    let wasmrule = wasmrule(&pki, &pki.server.ca, "127.0.0.1", tls_port, redis.tls_port);
    let publisher = Publisher::connect_with(&mqtt, "pub-tls", false).await;

    // Sequence number 0 is the warm-up probe, counted like the others.
    let mut tries = 0;
    while redis.counts().is_none_or(|(seen, _)| seen < 1) {
        publisher.publish("seq/warmup", "0").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        tries += 1;
        assert!(tries < 300, "wasmrule not serving:\n{}", wasmrule.log());
    }
    for i in 1..=N {
        publisher.publish(&format!("seq/{i}"), i.to_string()).await;
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut waited = 0;
    loop {
        let (seen, writes) = redis.counts().unwrap_or_default();
        if seen == N + 1 {
            eprintln!(
                "{seen} messages over TLS, {} repeated writes",
                writes - seen
            );
            break;
        }
        waited += 1;
        assert!(
            waited < 1200,
            "only {seen} of {} messages reached Redis:\n{}",
            N + 1,
            wasmrule.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = wasmrule.log();
    assert!(!log.contains("invalid peer certificate"), "{log}");
}

/// Runs wasmrule against servers with `pki`'s certificate, trusting `ca` and naming
/// them `host`, until both connections have logged a failure; returns the log.
async fn failing_log(pki: &Pki, ca: &Path, host: &str) -> String {
    let tls_port = free_port();
    let _mqtt = mosquitto_tls(&pki.server, tls_port);
    let redis = RedisTls::start(&pki.server);
    let wasmrule = wasmrule(pki, ca, host, tls_port, redis.tls_port);
    for _ in 0..600 {
        let log = wasmrule.log();
        if log.contains("MQTT connection to") && log.contains("cannot connect to Redis") {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no connection failure logged in 30 s:\n{}", wasmrule.log());
}

/// The log lines of the MQTT and the Redis connection failures.
fn failures(log: &str) -> (String, String) {
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_owned()
    };
    let (mqtt, redis) = (line("MQTT connection to"), line("cannot connect to Redis"));
    eprintln!("{mqtt}\n{redis}");
    (mqtt, redis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused_as_unknown_issuer() {
    let pki = Pki::new(&["127.0.0.1"], false);
    let log = failing_log(&pki, &pki.other_ca, "127.0.0.1").await;
    let (mqtt, redis) = failures(&log);
    for line in [&mqtt, &redis] {
        assert!(
            line.contains("invalid peer certificate: UnknownIssuer"),
            "{line}\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused_as_expired() {
    let pki = Pki::new(&["127.0.0.1"], true);
    let log = failing_log(&pki, &pki.server.ca, "127.0.0.1").await;
    let (mqtt, redis) = failures(&log);
    for line in [&mqtt, &redis] {
        assert!(line.contains("certificate expired"), "{line}\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_name_is_refused_naming_both() {
    // The certificate is for `broker.test`; wasmrule is told to reach 127.0.0.1.
    let pki = Pki::new(&["broker.test"], false);
    let log = failing_log(&pki, &pki.server.ca, "127.0.0.1").await;
    let (mqtt, redis) = failures(&log);
    for line in [&mqtt, &redis] {
        assert!(
            line.contains("certificate not valid for name")
                && line.contains("127.0.0.1")
                && line.contains("broker.test"),
            "{line}\n{log}"
        );
    }
}

/// Problems with the files themselves stop wasmrule at startup, naming the key and
/// the file.
#[test]
fn bad_tls_files_stop_wasmrule_at_startup_naming_the_file() {
    let pki = Pki::new(&["127.0.0.1"], false);
    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let cases: [(&str, &Path, &str); 3] = [
        (
            "tls_ca_file",
            Path::new("/nonexistent/ca.pem"),
            "cannot read /nonexistent/ca.pem",
        ),
        ("tls_ca_file", &garbage, "garbage.pem holds no certificate"),
        (
            "tls_key_file",
            &pki.server.cert,
            "server.pem holds no private key",
        ),
    ];
    for (key, file, want) in cases {
        let config = pki.dir.path().join("bad.toml");
        let (cert, client_key) = &pki.client;
        let mut files = [
            ("tls_ca_file", pki.server.ca.as_path()),
            ("tls_cert_file", cert.as_path()),
            ("tls_key_file", client_key.as_path()),
        ];
        files.iter_mut().find(|(k, _)| *k == key).unwrap().1 = file;
        let section: String = files
            .iter()
            .map(|(k, f)| format!("{k} = {:?}\n", f.display().to_string()))
            .collect();
        std::fs::write(
            &config,
            format!("[mqtt]\nurl = \"mqtts://127.0.0.1:1\"\n{section}"),
        )
        .unwrap();
        let out = Command::new(wasmrule_bin())
            .args(["run", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("mqtt.{key}")) && stderr.contains(want),
            "{key}: {stderr}"
        );
    }
}
