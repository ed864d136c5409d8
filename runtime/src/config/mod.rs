//! The configuration as a whole: the TOML file's sections put together
//! ([`RawConfig`], unknown keys rejected), loading, applying the overrides (declared in
//! `overrides.rs`) and the checks that span stages; the validated [`Config`] the runtime starts from.
//!
//! Each stage owns its section: its `Raw*` struct, defaults and checks sit next to the
//! stage (`source/mqtt/config.rs`, `source/broker/config.rs`, `rules/config.rs`,
//! `sink/redis/config.rs`, `sink/spill/config.rs`, `tenancy/config.rs`; `[runtime]` in
//! `config/runtime.rs`); this module only composes them. A new setting goes into its
//! stage's `config.rs` and `docs/configuration.md`.
//!
//! Precedence, lowest first: defaults, the file (`--config`), `WASMRULE_*` environment
//! variables, command-line flags. The last two are applied by the binary with
//! [`Config::apply_overrides`].

pub(crate) mod check;
mod overrides;
mod runtime;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

pub use overrides::{OnOrUnset, Overrides};
pub use runtime::{DEFAULT_HTTP_ADDR, RuntimeConfig};

use crate::config::check::check_qos;
use crate::config::runtime::parse_http_addr;
use crate::rules::engine::Limits;
use crate::rules::{RawLimits, RawRules, RulesConfig};
use crate::sink::redis::{RawRedis, RedisConfig};
use crate::source::broker::{
    Acl, BrokerConfig, BrokerTls, DEFAULT_BROKER_ADDR, RawBroker, parse_listen_addr,
};
use crate::source::mqtt::{MqttConfig, RawMqtt, check_client_id, check_share_group};
use crate::tenancy::{RawTenant, Tenants};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Used when `broker` is `None`: wasmrule subscribes to this broker.
    pub mqtt: MqttConfig,
    /// The embedded broker, which replaces the MQTT connection when set.
    pub broker: Option<BrokerConfig>,
    pub redis: RedisConfig,
    pub rules: RulesConfig,
    pub limits: Limits,
    pub runtime: RuntimeConfig,
    pub tenants: Tenants,
    /// Recording of events and what rules made of them (`[record]`, `--record`).
    pub record: Option<crate::record::config::RecordConfig>,
}

/// The file as written: one section per stage.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    mqtt: RawMqtt,
    broker: Option<RawBroker>,
    #[serde(default)]
    redis: RawRedis,
    #[serde(default)]
    rules: RawRules,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    runtime: runtime::RawRuntime,
    #[serde(default)]
    tenants: BTreeMap<String, RawTenant>,
    #[serde(default)]
    record: crate::record::config::RawRecord,
}

impl Config {
    /// Reads and validates a config file.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, is not TOML, has unknown keys, or a value is out of
    /// range; the message names the file and the key.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// The configuration `wasmrule run` uses: defaults, then the file if any, then
    /// `overrides` (flags and environment).
    ///
    /// # Errors
    ///
    /// As [`Config::from_file`], or an invalid override.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Self::from_raw(RawConfig::default(), overrides);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let raw: RawConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("in config file {}", path.display()))?;
        Self::from_raw(raw, overrides)
            .with_context(|| format!("with config file {}", path.display()))
    }

    /// Parses and validates config text, applying defaults.
    ///
    /// # Errors
    ///
    /// As [`Config::from_file`].
    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        Self::from_raw(raw, &Overrides::default())
    }

    /// The defaults, with `overrides` applied.
    ///
    /// # Errors
    ///
    /// When an override is invalid.
    pub fn with_overrides(overrides: &Overrides) -> anyhow::Result<Config> {
        Self::from_raw(RawConfig::default(), overrides)
    }

    /// Each stage builds its section; then the overrides, then the checks that span
    /// stages.
    fn from_raw(raw: RawConfig, o: &Overrides) -> anyhow::Result<Config> {
        let mqtt = raw.mqtt.build(o.client_id.is_some())?;
        let redis = raw.redis.build()?;
        let rules = raw.rules.build()?;
        let limits = raw.limits.build()?;
        let runtime = raw.runtime.build()?;
        let tenants = Tenants::from_raw(raw.tenants, &limits)?;
        let record = raw.record.build(o.record.clone())?;
        let broker = raw
            .broker
            .map(RawBroker::build)
            .transpose()
            .context("broker")?;
        let mut config = Config {
            mqtt,
            broker,
            redis,
            rules,
            limits,
            runtime,
            tenants,
            record,
        };
        config.apply_overrides(o)?;
        Ok(config)
    }

    /// Applies command-line and environment values over this config.
    ///
    /// # Errors
    ///
    /// When an override is invalid (a malformed URL, a QoS above 2).
    pub fn apply_overrides(&mut self, o: &Overrides) -> anyhow::Result<()> {
        if let Some(url) = &o.mqtt_url {
            self.mqtt.set_url(url).context("--mqtt-url")?;
        }
        if let Some(url) = &o.redis_url {
            self.redis.set_url(url).context("--redis-url")?;
        }
        if let Some(dir) = &o.rules_dir {
            self.rules.dir = dir.clone();
        }
        if let Some(id) = &o.client_id {
            self.mqtt.client_id = check_client_id(id).context("--client-id")?;
        }
        if let Some(group) = &o.share_group {
            self.mqtt.share_group = Some(check_share_group(group).context("--share-group")?);
        }
        if let Some(qos) = o.qos {
            self.mqtt.qos = check_qos(qos).context("--qos")?;
        }
        if let Some(clean) = o.clean_session {
            self.mqtt.clean_session = clean;
        }
        if let Some(addr) = &o.http_addr {
            self.runtime.http_addr = parse_http_addr(addr).context("--http-addr")?;
        }
        self.apply_broker_overrides(o)?;
        if let Some(on) = o.emqx_events {
            self.mqtt.emqx_events = on;
        }
        // TLS files are read once the URLs are final.
        self.mqtt.load_tls()?;
        self.redis.load_tls()?;
        self.check()
    }

    /// `--embedded-broker` turns the broker on (or moves it); `--acl` needs it on.
    fn apply_broker_overrides(&mut self, o: &Overrides) -> anyhow::Result<()> {
        if let Some(addr) = &o.embedded_broker {
            let listen = parse_listen_addr(addr).context("--embedded-broker")?;
            self.broker
                .get_or_insert_with(|| BrokerConfig::new(listen))
                .listen = listen;
        }
        if let Some(file) = &o.acl_file {
            let Some(broker) = &mut self.broker else {
                bail!("--acl: the ACL belongs to the embedded broker; add --embedded-broker ADDR");
            };
            broker.acl = Acl::from_file(file)?;
        }
        self.apply_broker_tls_overrides(o)?;
        if let Some(mode) = &o.broker_retained {
            let Some(broker) = self.broker.as_mut() else {
                bail!(
                    "--broker-retained: the embedded broker is not on; add --embedded-broker ADDR"
                );
            };
            broker.retained =
                crate::source::broker::Retained::parse(mode).context("--broker-retained")?;
        }
        match &self.broker {
            Some(broker) => broker.check_tls(),
            None => Ok(()),
        }
    }

    /// `--embedded-broker-tls` gives the broker a TLS listener (and turns it on);
    /// `--embedded-broker-cert` and `-key` its files.
    fn apply_broker_tls_overrides(&mut self, o: &Overrides) -> anyhow::Result<()> {
        if let Some(addr) = &o.embedded_broker_tls {
            let listen = parse_listen_addr(addr).context("--embedded-broker-tls")?;
            // The plain listener stays on, on its default (loopback) address.
            let plain = parse_listen_addr(DEFAULT_BROKER_ADDR)?;
            let broker = self.broker.get_or_insert_with(|| BrokerConfig::new(plain));
            match &mut broker.tls {
                Some(tls) => tls.listen = listen,
                None => {
                    broker.tls = Some(BrokerTls {
                        listen,
                        cert_file: None,
                        key_file: None,
                        client_ca_file: None,
                    })
                }
            }
        }
        for (file, flag) in [
            (&o.embedded_broker_cert, "--embedded-broker-cert"),
            (&o.embedded_broker_key, "--embedded-broker-key"),
        ] {
            let Some(file) = file else { continue };
            let Some(tls) = self.broker.as_mut().and_then(|b| b.tls.as_mut()) else {
                bail!(
                    "{flag}: the embedded broker has no TLS listener; add --embedded-broker-tls ADDR"
                );
            };
            if flag == "--embedded-broker-cert" {
                tls.cert_file = Some(file.clone());
            } else {
                tls.key_file = Some(file.clone());
            }
        }
        Ok(())
    }

    /// Checks between sections.
    fn check(&self) -> anyhow::Result<()> {
        if self.mqtt.emqx_events && self.broker.is_some() {
            bail!(
                "mqtt.emqx_events (--emqx-events) reads client events from an external EMQX \
                 (--mqtt-url); the embedded broker gives them itself: drop one of the two"
            );
        }
        if self.mqtt.share_group.is_some() && self.broker.is_some() {
            bail!(
                "mqtt.share_group (--share-group) splits an external broker's messages among \
                 wasmrule instances (--mqtt-url); with the embedded broker wasmrule is the \
                 broker and takes every message itself: drop one of the two"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::rules::engine::{Limits, MAX_WASM_STACK};
    use crate::rules::ruleset::DEFAULT_TENANT;
    use crate::sink::redis::DEFAULT_REDIS_URL;
    use crate::sink::spill::{DEFAULT_SPILL_MAX_BYTES, DEFAULT_SPILL_SEGMENT_BYTES, SpillConfig};
    use crate::source::mqtt::MqttProtocol;
    use crate::tenancy::{DEFAULT_CPU_SHARE_PERCENT, DEFAULT_CPU_WINDOW};

    #[test]
    fn defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("127.0.0.1", 1883));
        assert_eq!(c.mqtt.protocol, MqttProtocol::V5);
        assert_eq!(c.mqtt.qos, 1);
        assert_eq!(c.redis.url, DEFAULT_REDIS_URL);
        assert_eq!(c.rules.dir, PathBuf::from("rules"));
        assert_eq!(c.rules.max_file_bytes, 64 << 20);
        assert_eq!(c.rules.compile_timeout, Duration::from_secs(120));
        assert_eq!(c.limits, Limits::default());
        assert!(c.runtime.workers >= 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(c.runtime.io_threads, (cores / 4).max(1));
        assert!(
            c.mqtt.clean_session,
            "no chosen client id: no stored session"
        );
        assert_eq!(c.runtime.http_addr, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn full_file() {
        let c = Config::from_toml(
            r#"
            [mqtt]
            url = "mqtt://u:p@10.0.0.1:1999"
            client_id = "w1"
            protocol = "3.1.1"
            qos = 0
            [redis]
            url = "redis://127.0.0.1:7000/2"
            max_pipeline = 64
            [rules]
            dir = "/srv/rules"
            debounce_ms = 10
            max_file_bytes = 1000000
            compile_timeout_ms = 5000
            [limits]
            timeout_ms = 50
            max_memory_mb = 8
            [runtime]
            workers = 3
            io_threads = 2
            node = "n1"
            "#,
        )
        .unwrap();
        assert_eq!(c.mqtt.port, 1999);
        assert_eq!(c.mqtt.username.as_deref(), Some("u"));
        assert_eq!(c.mqtt.password.as_deref(), Some("p"));
        assert_eq!(c.mqtt.protocol, MqttProtocol::V311);
        assert_eq!(c.redis.max_pipeline, 64);
        assert_eq!(c.rules.max_file_bytes, 1_000_000);
        assert_eq!(c.rules.compile_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.timeout, Duration::from_millis(50));
        assert_eq!(c.limits.max_memory, 8 << 20);
        assert_eq!(c.runtime.workers, 3);
        assert_eq!(c.runtime.io_threads, 2);
        assert_eq!(c.runtime.node, "n1");
        assert!(
            !c.mqtt.clean_session,
            "a chosen client id keeps its session"
        );
    }

    fn err(toml: &str) -> String {
        format!("{:#}", Config::from_toml(toml).unwrap_err())
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("[mqtt]\nurl = \"http://x\"").contains("mqtt.url"));
        assert!(err("[mqtt]\nqos = 3").contains("mqtt.qos"));
        assert!(err("[mqtt]\nprotocol = \"4.5\"").contains("mqtt.protocol"));
        assert!(err("[redis]\nurl = \"http://x\"").contains("redis.url"));
        assert!(err("[limits]\ntimeout_ms = 0").contains("limits.timeout_ms"));
        assert!(err("[rules]\nmax_file_bytes = 0").contains("rules.max_file_bytes"));
        assert!(err("[rules]\ncompile_timeout_ms = 0").contains("rules.compile_timeout_ms"));
        assert!(err("[limits]\nmax_memory_mb = 5000").contains("limits.max_memory_mb"));
        // The wasm stack cap stays below every thread stack that runs guest code.
        let e = err("[limits]\nmax_wasm_stack_kb = 8192");
        assert!(
            e.contains("limits.max_wasm_stack_kb: 8192 is above 2048")
                && e.contains("native stack"),
            "{e}"
        );
        assert!(err("[limits]\nmax_wasm_stack_kb = 2049").contains("max_wasm_stack_kb"));
        let c = Config::from_toml("[limits]\nmax_wasm_stack_kb = 2048").unwrap();
        assert_eq!(c.limits.max_wasm_stack, MAX_WASM_STACK);
        assert!(err("[runtime]\nworkers = 1000").contains("runtime.workers"));
        assert!(err("[runtime]\nio_threads = 65").contains("runtime.io_threads"));
        assert!(err("[mqtt]\nclient_id = \"a/b\"").contains("mqtt.client_id"));
        assert!(err("[mqtt]\ninflight = 0").contains("mqtt.inflight"));
        assert!(err("[runtime]\nhttp_addr = \"localhost\"").contains("runtime.http_addr"));
        // Typos are not silently ignored.
        assert!(err("[mqtt]\nulr = \"mqtt://x\"").contains("unknown field `ulr`"));
        assert!(err("[mqtt]\nqos = \"one\"").contains("qos"));
    }

    #[test]
    fn spill() {
        assert_eq!(Config::from_toml("").unwrap().redis.spill, None);
        let c = Config::from_toml("[redis.spill]\ndir = \"/var/spool/wasmrule\"").unwrap();
        assert_eq!(
            c.redis.spill,
            Some(SpillConfig {
                dir: "/var/spool/wasmrule".into(),
                max_bytes: DEFAULT_SPILL_MAX_BYTES,
                segment_bytes: DEFAULT_SPILL_SEGMENT_BYTES,
            })
        );
        let c = Config::from_toml(
            "[redis.spill]\ndir = \"s\"\nmax_bytes = 1048576\nsegment_bytes = 65536",
        )
        .unwrap();
        let s = c.redis.spill.unwrap();
        assert_eq!((s.max_bytes, s.segment_bytes), (1 << 20, 64 << 10));

        assert!(err("[redis.spill]\nmax_bytes = 1048576").contains("redis.spill.dir: required"));
        assert!(err("[redis.spill]\ndir = \"\"").contains("redis.spill.dir"));
        assert!(
            err("[redis.spill]\ndir = \"s\"\nsegment_bytes = 100")
                .contains("redis.spill.segment_bytes: 100 is outside")
        );
        assert!(
            err("[redis.spill]\ndir = \"s\"\nmax_bytes = 65536\nsegment_bytes = 131072")
                .contains("redis.spill.max_bytes: 65536 is less than")
        );
        assert!(err("[redis.spill]\ndir = \"s\"\nmax_mb = 1").contains("unknown field `max_mb`"));
    }

    #[test]
    fn tenants() {
        let c = Config::from_toml(
            r#"
            [tenants.acme]
            topics = ["acme/#", "shared/acme/+"]
            commands = ["hset", "HINCRBY"]
            timeout_ms = 5
            max_memory_mb = 4
            quarantine_failures = 3
            "#,
        )
        .unwrap();
        let acme = c.tenants.policy("acme");
        assert_eq!(acme.key_prefix, b"acme:");
        assert_eq!(acme.limits.timeout, Duration::from_millis(5));
        assert_eq!(acme.limits.max_memory, 4 << 20);
        assert_eq!(acme.quarantine.failures, 3);
        assert!(acme.check_filter("shared/acme/x").is_ok());
        let other = c.tenants.policy("beta");
        assert_eq!(other.key_prefix, b"beta:");
        assert_eq!(other.topics, vec!["beta/#"]);
        let default = c.tenants.policy("default");
        assert!(default.key_prefix.is_empty());
        assert!(default.check_filter("#").is_ok());
        assert!(default.check_filter("$events/client_disconnected").is_ok());

        assert!(err("[tenants.acme]\ncommands = [\"FLUSHALL\"]").contains("can never be allowed"));
        assert!(err("[tenants.acme]\nmax_memory_mb = 100000").contains("tenants.acme"));
        assert!(err("[tenants.\"a b\"]").contains("tenant name"));
        assert!(err("[tenants.acme]\ntopics = [\"a/#/b\"]").contains("topics"));
        assert!(err("[tenants.acme]\nprefix = \"x\"").contains("unknown field"));
    }

    #[test]
    fn cpu_budgets() {
        let c = Config::from_toml(
            "[tenants.acme]\ncpu_share_percent = 25\ncpu_window_ms = 500\n\
             [tenants.free]\ncpu_share_percent = 100\n",
        )
        .unwrap();
        let acme = c.tenants.policy("acme").cpu;
        assert_eq!(acme.share_percent, 25);
        assert_eq!(acme.window, Duration::from_millis(500));
        assert_eq!(acme.allowance_us(), 125_000);
        assert!(!c.tenants.policy("free").cpu.is_limited());
        // Unlisted tenants get the default share; the operator's default tenant none.
        let other = c.tenants.policy("beta").cpu;
        assert_eq!(other.share_percent, DEFAULT_CPU_SHARE_PERCENT);
        assert_eq!(other.window, DEFAULT_CPU_WINDOW);
        assert!(!c.tenants.policy(DEFAULT_TENANT).cpu.is_limited());
        let e = err("[tenants.acme]\ncpu_share_percent = 0");
        assert!(
            e.contains("tenants.acme") && e.contains("cpu_share_percent"),
            "{e}"
        );
        assert!(err("[tenants.acme]\ncpu_share_percent = 101").contains("1..=100"));
        assert!(err("[tenants.acme]\ncpu_window_ms = 5").contains("cpu_window_ms"));
    }

    #[test]
    fn share_group_from_file_flag_or_env_checked() {
        let c = Config::from_toml("[mqtt]\nshare_group = \"wasmrule\"").unwrap();
        assert_eq!(c.mqtt.share_group.as_deref(), Some("wasmrule"));
        assert_eq!(Config::from_toml("").unwrap().mqtt.share_group, None);
        assert!(err("[mqtt]\nshare_group = \"a/b\"").contains("mqtt.share_group"));
        assert!(err("[mqtt]\nshare_group = \"\"").contains("mqtt.share_group"));
        let mut c = Config::from_toml("").unwrap();
        c.apply_overrides(&Overrides {
            share_group: Some("g2".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.mqtt.share_group.as_deref(), Some("g2"));
        let bad = c.apply_overrides(&Overrides {
            share_group: Some("g+".into()),
            ..Overrides::default()
        });
        assert!(format!("{:#}", bad.unwrap_err()).contains("--share-group"));
        let e = err("[mqtt]\nshare_group = \"g\"\n[broker]\nlisten = \"127.0.0.1:0\"");
        assert!(
            e.contains("share_group") && e.contains("embedded broker"),
            "{e}"
        );
    }

    #[test]
    fn overrides_win() {
        let mut c = Config::from_toml("[mqtt]\nurl = \"mqtt://a:1\"").unwrap();
        c.apply_overrides(&Overrides {
            mqtt_url: Some("mqtt://127.0.0.1:2".into()),
            redis_url: Some("redis://127.0.0.1:3".into()),
            rules_dir: Some("d".into()),
            client_id: Some("me".into()),
            qos: Some(2),
            clean_session: None,
            http_addr: Some("off".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("127.0.0.1", 2));
        assert_eq!(c.redis.url, "redis://127.0.0.1:3");
        assert_eq!(c.rules.dir, PathBuf::from("d"));
        assert_eq!((c.mqtt.client_id.as_str(), c.mqtt.qos), ("me", 2));
        assert_eq!(c.runtime.http_addr, None);
        let bad = c.apply_overrides(&Overrides {
            qos: Some(7),
            ..Overrides::default()
        });
        assert!(format!("{:#}", bad.unwrap_err()).contains("--qos"));
    }

    #[test]
    fn embedded_broker_tls_flags_need_the_listener_and_both_files() {
        let apply = |o: Overrides| {
            Config::from_toml("")
                .unwrap()
                .apply_overrides(&o)
                .map_err(|e| format!("{e:#}"))
        };
        let e = apply(Overrides {
            embedded_broker_cert: Some("broker.pem".into()),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(
            e.contains("--embedded-broker-cert") && e.contains("--embedded-broker-tls"),
            "{e}"
        );
        let e = apply(Overrides {
            embedded_broker_tls: Some("0".into()),
            embedded_broker_cert: Some("broker.pem".into()),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(
            e.contains("needs broker.tls_cert_file and broker.tls_key_file"),
            "{e}"
        );
        let e = apply(Overrides {
            embedded_broker_tls: Some("0".into()),
            embedded_broker_cert: Some("/nonexistent/broker.pem".into()),
            embedded_broker_key: Some("/nonexistent/broker.key".into()),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(
            e.contains("broker.tls_cert_file: cannot read /nonexistent/broker.pem"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            Config::from_toml(
                "[broker]
password_file = \"/nonexistent/passwd\""
            )
            .unwrap_err()
        );
        assert!(
            e.contains("broker.password_file: cannot read /nonexistent/passwd"),
            "{e}"
        );
    }

    #[test]
    fn embedded_broker_section_and_flags() {
        let c = Config::from_toml("").unwrap();
        assert!(c.broker.is_none(), "the embedded broker is off by default");
        let c = Config::from_toml(
            "[broker]\nlisten = \"127.0.0.1:2883\"\nmax_qos = 1\nmax_packet_size = 4096",
        )
        .unwrap();
        let b = c.broker.unwrap();
        assert_eq!(b.listen.port(), 2883);
        assert_eq!((b.max_qos, b.max_packet_size), (1, 4096));
        let err = |t: &str| format!("{:#}", Config::from_toml(t).unwrap_err());
        assert!(err("[broker]\nmax_qos = 3").contains("broker: max_qos"));
        assert!(err("[broker]\nlisten = \"nowhere\"").contains("broker: listen"));
        assert!(err("[broker]\nbogus = 1").contains("bogus"));
        assert!(err("[broker]\nacl_file = \"/nonexistent/acl.toml\"").contains("acl.toml"));

        let mut c = Config::from_toml("").unwrap();
        c.apply_overrides(&Overrides {
            embedded_broker: Some("0".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.broker.unwrap().listen.to_string(), "127.0.0.1:0");
        let acl_alone = Config::from_toml("").unwrap().apply_overrides(&Overrides {
            acl_file: Some("acl.toml".into()),
            ..Overrides::default()
        });
        assert!(format!("{:#}", acl_alone.unwrap_err()).contains("--embedded-broker"));
    }

    #[test]
    fn emqx_events_are_off_by_default_and_need_an_external_broker() {
        assert!(!Config::from_toml("").unwrap().mqtt.emqx_events);
        assert!(
            Config::from_toml("[mqtt]\nemqx_events = true")
                .unwrap()
                .mqtt
                .emqx_events
        );
        let mut c = Config::from_toml("[mqtt]\nemqx_events = true").unwrap();
        c.apply_overrides(&Overrides {
            emqx_events: Some(false),
            ..Overrides::default()
        })
        .unwrap();
        assert!(!c.mqtt.emqx_events, "the flag wins over the file");
        let both =
            Config::from_toml("[mqtt]\nemqx_events = true\n[broker]\nlisten = \"127.0.0.1:0\"");
        assert!(format!("{:#}", both.unwrap_err()).contains("embedded broker"));
        assert!(err("[mqtt]\nemqx_events = \"yes\"").contains("emqx_events"));
    }
}
