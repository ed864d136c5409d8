//! TLS against the real servers: the `wasmrule` binary to mosquitto over `mqtts://` and
//! to redis-server over `rediss://`, both with client certificates, carrying a QoS 1
//! stream with nothing lost; and a wrong CA, an expired certificate and a wrong host
//! name, each failing with a log line that names the problem. Then the embedded
//! broker's doors: its TLS listener with client certificates as usernames, and its
//! password file. Certificates are made by the test (rcgen); everything listens on
//! 127.0.0.1 ports of its own.

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

/// The embedded broker's ACL for the TLS test: a client may publish under
/// `users/<its username>/` only.
const USERS_ACL: &str = r#"
no_match = "deny"
[[rules]]
permission = "allow"
action = "publish"
topics = ["users/%u/#"]
"#;

/// A rumqttc client over TLS to `port`, trusting `ca`, with `client` as its certificate
/// and key if given, and `username` in its CONNECT.
fn tls_client(
    ca: &Path,
    client: Option<&(PathBuf, PathBuf)>,
    port: u16,
    username: &str,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let files = wasmrule::TlsFiles {
        ca_file: Some(ca.to_owned()),
        cert_file: client.map(|c| c.0.clone()),
        key_file: client.map(|c| c.1.clone()),
    };
    let tls = wasmrule::ClientTls::load(&files, "test").unwrap();
    let mut o = rumqttc::MqttOptions::new(format!("tls-{}", free_port()), "127.0.0.1", port);
    o.set_credentials(username, "")
        .set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.config),
        ));
    rumqttc::AsyncClient::new(o, 1000)
}

/// The embedded broker with a TLS listener that requires client certificates: a
/// device's certificate's common name is its username for the ACL and in events, over
/// what its CONNECT says; a client without a certificate does not get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_tls_takes_the_client_certificates_name_as_username() {
    const N: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("device CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (cert, key) = ca.issue(dir.path(), "broker", &["127.0.0.1"], false);
    let device = ca.issue(dir.path(), "device-1", &["device-1.test"], false);
    let redis = Redis::start();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(
        rules.join("echo.wasm"),
        echo_rule("RPUSH", "users/#", "got"),
    )
    .unwrap();
    let mut config = wasmrule::Config::with_overrides(&wasmrule::Overrides {
        redis_url: Some(redis.url()),
        rules_dir: Some(rules),
        http_addr: Some("off".into()),
        ..Default::default()
    })
    .unwrap();
    config.runtime.workers = 2;
    config.rules.cache_dir = None;
    let mut broker = wasmrule::BrokerConfig::new("127.0.0.1:0".parse().unwrap());
    broker.acl = wasmrule::Acl::from_toml(USERS_ACL).unwrap();
    broker.tls = Some(wasmrule::BrokerTls {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert_file: Some(cert),
        key_file: Some(key),
        client_ca_file: Some(ca_file.clone()),
    });
    config.broker = Some(broker);
    let rt = wasmrule::Runtime::start(config).await.unwrap();
    let port = rt.broker_tls_addr.unwrap().port();

    // Without a certificate: refused during the handshake.
    let (_anonymous, mut refused) = tls_client(&ca_file, None, port, "device-1");
    let e = refused
        .poll()
        .await
        .expect_err("connected without a certificate");
    assert!(e.to_string().contains("CertificateRequired"), "{e}");

    // With device-1's certificate, claiming to be device-2 in CONNECT.
    let (client, mut eventloop) = tls_client(&ca_file, Some(&device), port, "device-2");
    let events = tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                eprintln!("device-1: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let qos1 = rumqttc::QoS::AtLeastOnce;
    // Denied by the ACL (device-1 is not device-2), then the stream, in order.
    client
        .publish("users/device-2/claimed", qos1, false, "x")
        .await
        .unwrap();
    for i in 0..N {
        client
            .publish(format!("users/device-1/{i}"), qos1, false, i.to_string())
            .await
            .unwrap();
    }
    let mut waited = 0;
    let got = loop {
        let got = redis.lrange("got");
        if got.len() >= N {
            break got;
        }
        waited += 1;
        assert!(waited < 600, "{} of {N} messages in Redis", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got.len(), N, "only the allowed messages");
    // Topics go to workers by hash, so the list is not in publishing order.
    let mut topics: Vec<String> = got
        .iter()
        .map(|event| {
            let v: serde_json::Value = serde_json::from_slice(event).unwrap();
            assert_eq!(v["username"], "device-1", "{v}");
            v["topic"].as_str().unwrap().to_owned()
        })
        .collect();
    topics.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("users/device-1/{i}")).collect();
    want.sort();
    assert_eq!(topics, want);
    events.abort();
    rt.stop().await;
}

/// A bad file for the embedded broker's TLS listener stops wasmrule at startup, naming
/// the key and the file.
#[test]
fn a_bad_broker_tls_file_is_named_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (cert, key) = ca.issue(dir.path(), "broker", &["127.0.0.1"], false);
    let config = |cert: &Path, key: &Path| {
        format!(
            "[broker]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n\
             tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        )
    };
    let err = |text: String| format!("{:#}", wasmrule::Config::from_toml(&text).unwrap_err());
    let e = err(config(&cert, &cert));
    assert!(
        e.contains("broker.tls_key_file") && e.contains("broker.pem holds no private key"),
        "{e}"
    );
    let other_key = ca.issue(dir.path(), "other", &["127.0.0.1"], false).1;
    let e = err(config(&cert, &other_key));
    assert!(
        e.contains("broker.tls_key_file") && e.contains("does not go with the certificate"),
        "{e}"
    );
    let e = err("[broker]\ntls_listen = \"127.0.0.1:0\"\n".to_owned());
    assert!(e.contains("needs broker.tls_cert_file"), "{e}");
    assert!(wasmrule::Config::from_toml(&config(&cert, &key)).is_ok());
}

/// The embedded broker with a password file: a user with the right password gets in
/// and is served, a wrong password and a client without a username are refused with
/// MQTT's reason codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_password_file_lets_in_only_users_with_their_password() {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::write(
        &passwd,
        format!(
            "# test users\ndevice-1:{}\n",
            bcrypt::hash("s3cret", 4).unwrap()
        ),
    )
    .unwrap();
    let redis = Redis::start();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("echo.wasm"), echo_rule("RPUSH", "d/#", "got")).unwrap();
    let config = dir.path().join("wasmrule.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"127.0.0.1:0\"\npassword_file = {:?}\n",
            passwd.display().to_string()
        ),
    )
    .unwrap();
    let mut config = wasmrule::Config::load(
        Some(&config),
        &wasmrule::Overrides {
            redis_url: Some(redis.url()),
            rules_dir: Some(rules),
            http_addr: Some("off".into()),
            ..Default::default()
        },
    )
    .unwrap();
    config.runtime.workers = 2;
    config.rules.cache_dir = None;
    let rt = wasmrule::Runtime::start(config).await.unwrap();
    let port = rt.broker_addr.unwrap().port();

    let (code, _, _) = connack(port, Some(("device-1", "wrong"))).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    let (code, _, _) = connack(port, Some(("nobody", "s3cret"))).await;
    assert_eq!(code, ConnectReturnCode::BadUserNamePassword);
    let (code, _, _) = connack(port, None).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);

    let (code, client, mut eventloop) = connack(port, Some(("device-1", "s3cret"))).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let events = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    client
        .publish("d/1", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    let mut waited = 0;
    while redis.lrange("got").is_empty() {
        waited += 1;
        assert!(waited < 200, "device-1's message never reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v: serde_json::Value = serde_json::from_slice(&redis.lrange("got")[0]).unwrap();
    assert_eq!(v["username"], "device-1");
    events.abort();
    rt.stop().await;
}

/// Connects to the broker on `port` with `credentials` (MQTT 5); the CONNACK's code,
/// and the client with its event loop.
async fn connack(
    port: u16,
    credentials: Option<(&str, &str)>,
) -> (
    rumqttc::v5::mqttbytes::v5::ConnectReturnCode,
    rumqttc::v5::AsyncClient,
    rumqttc::v5::EventLoop,
) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    let mut o = rumqttc::v5::MqttOptions::new(format!("c-{}", free_port()), "127.0.0.1", port);
    if let Some((user, password)) = credentials {
        o.set_credentials(user, password);
    }
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(o, 100);
    let code = loop {
        match eventloop.poll().await {
            Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(a))) => break a.code,
            Ok(_) => {}
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => break code,
            Err(e) => panic!("{e}"),
        }
    };
    (code, client, eventloop)
}
