//! Configuration: the TOML file as written (`RawConfig`, unknown keys rejected) and the
//! validated, typed [`Config`] the runtime uses. Every default lives here and is listed
//! in `docs/configuration.md`.
//!
//! Precedence, lowest first: defaults, the file (`--config`), `WASMRULE_*` environment
//! variables, command-line flags. The last two are applied by the binary with
//! [`Config::apply_overrides`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::rules::engine::{GUEST_THREAD_STACK, Limits, MAX_WASM_STACK};
use crate::rules::ruleset::DEFAULT_TENANT;
use crate::tenancy::cpu_budget::CpuBudget;
use crate::tenancy::policy::{
    DEFAULT_ALLOWED, InvokeLimits, Quarantine, TenantPolicy, resolve_allowed,
};

/// Which MQTT protocol version to speak to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttProtocol {
    V311,
    V5,
}

/// Where and how to connect to the MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub protocol: MqttProtocol,
    /// QoS of wasmrule's subscriptions (0, 1 or 2).
    pub qos: u8,
    pub keep_alive: Duration,
    /// Largest packet accepted from the broker, in bytes.
    pub max_packet_size: u32,
    /// Start without a stored session. False keeps the session (subscriptions and
    /// queued QoS 1/2 messages) across disconnects and restarts.
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps the session after a disconnect.
    pub session_expiry: Duration,
    /// QoS 1/2 messages the broker may have in flight to wasmrule unacknowledged (MQTT 5
    /// Receive Maximum): the bound on work held in memory and on repeats after a crash.
    pub inflight: u16,
    /// The broker is EMQX: turn its client-event topics into broker events
    /// (`emqx.rs`, docs/events.md).
    pub emqx_events: bool,
}

/// Where to write commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: String,
    /// Most commands sent in one pipeline.
    pub max_pipeline: usize,
    /// The on-disk spill for QoS 0 batches while Redis is unreachable; `None` is off.
    pub spill: Option<SpillConfig>,
}

/// The write-ahead spill (`[redis.spill]`, docs/delivery.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillConfig {
    /// Directory of the segment files; created if missing; one wasmrule per directory.
    pub dir: PathBuf,
    /// Most bytes the segment files may take together.
    pub max_bytes: u64,
    /// Size at which a segment is closed and a new one started; replayed space is
    /// reclaimed a segment at a time.
    pub segment_bytes: u64,
}

/// Defaults of `[redis.spill]`: 256 MiB in all (EMQX's default buffer for its Redis
/// sink is the same size), in 16 MiB segments.
pub const DEFAULT_SPILL_MAX_BYTES: u64 = 256 << 20;
pub const DEFAULT_SPILL_SEGMENT_BYTES: u64 = 16 << 20;
/// Bounds of `segment_bytes`: a segment holds many batches, and a replayed one is
/// deleted soon enough for its space to matter.
const SPILL_SEGMENT_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

/// Which directory holds the rules and how fast to react to changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    pub dir: PathBuf,
    /// Quiet time after the last change to a file before it is (re)loaded.
    pub debounce: Duration,
    /// Where compiled rules are cached; `None` turns the cache off.
    pub cache_dir: Option<PathBuf>,
}

/// Worker threads and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Threads that run rules.
    pub workers: usize,
    /// Messages waiting per worker before the MQTT reader pauses (backpressure).
    pub queue: usize,
    /// Node name put in events (`node`).
    pub node: String,
    /// How long a graceful shutdown may take to finish, write and acknowledge what is
    /// in flight.
    pub shutdown_timeout: Duration,
    /// Address of the health and metrics endpoint; `None` turns it off.
    pub http_addr: Option<std::net::SocketAddr>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Used when `broker` is `None`: wasmrule subscribes to this broker.
    pub mqtt: MqttConfig,
    /// The embedded broker, which replaces the MQTT connection when set.
    pub broker: Option<crate::source::broker::BrokerConfig>,
    pub redis: RedisConfig,
    pub rules: RulesConfig,
    pub limits: Limits,
    pub runtime: RuntimeConfig,
    pub tenants: Tenants,
}

/// Per-tenant policies: those configured under `[tenants.<name>]`, and the defaults
/// for any other tenant (docs/security.md).
#[derive(Debug, Clone)]
pub struct Tenants {
    listed: std::collections::BTreeMap<String, Arc<TenantPolicy>>,
    limits: InvokeLimits,
}

impl Tenants {
    /// The policy for `tenant`: its configured one, or the defaults.
    pub fn policy(&self, tenant: &str) -> Arc<TenantPolicy> {
        if let Some(p) = self.listed.get(tenant) {
            return p.clone();
        }
        Arc::new(default_policy(tenant, self.limits.clone()))
    }
}

fn default_quarantine() -> Quarantine {
    Quarantine {
        failures: 20,
        window: Duration::from_secs(60),
        backoff: Duration::from_secs(60),
    }
}

/// Share of each worker's time a tenant other than the default one may take, in percent
/// (docs/security.md, "CPU share"): enough for about 11,000 events per second per worker
/// of a typical rule (9 us each), little enough that a tenant burning its whole deadline
/// on every event leaves the others at least 90% of every worker.
pub const DEFAULT_CPU_SHARE_PERCENT: u32 = 10;
/// Window the CPU share is measured over.
pub const DEFAULT_CPU_WINDOW: Duration = Duration::from_secs(1);

fn default_cpu_budget(tenant: &str) -> CpuBudget {
    if tenant == DEFAULT_TENANT {
        CpuBudget::UNLIMITED
    } else {
        CpuBudget {
            share_percent: DEFAULT_CPU_SHARE_PERCENT,
            window: DEFAULT_CPU_WINDOW,
        }
    }
}

/// The default tenant (rules directly in the rules directory) belongs to the operator:
/// no key prefix, any topic, no CPU budget. Any other tenant gets `<tenant>:`,
/// `<tenant>/#` and [`DEFAULT_CPU_SHARE_PERCENT`].
fn default_policy(tenant: &str, limits: InvokeLimits) -> TenantPolicy {
    let allowed = resolve_allowed(
        &DEFAULT_ALLOWED
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    let (prefix, topics) = if tenant == DEFAULT_TENANT {
        (
            String::new(),
            vec!["#".to_owned(), "$events/#".to_owned(), "$SYS/#".to_owned()],
        )
    } else {
        (format!("{tenant}:"), vec![format!("{tenant}/#")])
    };
    TenantPolicy::new(
        tenant,
        &prefix,
        allowed,
        topics,
        limits,
        10_000,
        default_quarantine(),
    )
    .with_cpu_budget(default_cpu_budget(tenant))
}

/// Values given on the command line or in the environment; `None` keeps the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub mqtt_url: Option<String>,
    pub redis_url: Option<String>,
    pub rules_dir: Option<PathBuf>,
    pub client_id: Option<String>,
    pub qos: Option<u8>,
    pub clean_session: Option<bool>,
    /// `off` or an address.
    pub http_addr: Option<String>,
    /// Listen address of the embedded broker (turns it on).
    pub embedded_broker: Option<String>,
    /// ACL file of the embedded broker.
    pub acl_file: Option<PathBuf>,
    /// `mqtt.emqx_events`.
    pub emqx_events: Option<bool>,
}

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
    runtime: RawRuntime,
    #[serde(default)]
    tenants: std::collections::BTreeMap<String, RawTenant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    key_prefix: Option<String>,
    topics: Option<Vec<String>>,
    commands: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    max_memory_mb: Option<usize>,
    max_commands: Option<usize>,
    max_output_bytes: Option<usize>,
    dead_letter_maxlen: Option<u64>,
    quarantine_failures: Option<u32>,
    quarantine_window_secs: Option<u64>,
    quarantine_backoff_secs: Option<u64>,
    cpu_share_percent: Option<u32>,
    cpu_window_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    protocol: Option<String>,
    qos: Option<u8>,
    keep_alive_secs: Option<u64>,
    max_packet_size: Option<u32>,
    clean_session: Option<bool>,
    session_expiry_secs: Option<u32>,
    inflight: Option<u16>,
    emqx_events: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    listen: Option<String>,
    acl_file: Option<PathBuf>,
    max_packet_size: Option<u32>,
    max_qos: Option<u8>,
    max_inflight: Option<u16>,
    max_mqueue_len: Option<usize>,
    max_connections: Option<usize>,
    session_expiry_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    max_pipeline: Option<usize>,
    spill: Option<RawSpill>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpill {
    dir: Option<PathBuf>,
    max_bytes: Option<u64>,
    segment_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    dir: Option<PathBuf>,
    debounce_ms: Option<u64>,
    cache_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout_ms: Option<u64>,
    max_memory_mb: Option<usize>,
    max_wasm_stack_kb: Option<usize>,
    max_commands: Option<usize>,
    max_output_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    workers: Option<usize>,
    queue: Option<usize>,
    node: Option<String>,
    shutdown_timeout_secs: Option<u64>,
    http_addr: Option<String>,
}

pub const DEFAULT_MQTT_URL: &str = "mqtt://127.0.0.1:1883";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_RULES_DIR: &str = "rules";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:9464";
pub const DEFAULT_BROKER_ADDR: &str = "127.0.0.1:1883";

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

    /// Applies command-line and environment values over this config.
    ///
    /// # Errors
    ///
    /// When an override is invalid (a malformed URL, a QoS above 2).
    pub fn apply_overrides(&mut self, o: &Overrides) -> anyhow::Result<()> {
        if let Some(url) = &o.mqtt_url {
            let (host, port, user, pass) = parse_mqtt_url(url).context("--mqtt-url")?;
            self.mqtt.host = host;
            self.mqtt.port = port;
            if user.is_some() {
                self.mqtt.username = user;
                self.mqtt.password = pass;
            }
        }
        if let Some(url) = &o.redis_url {
            check_redis_url(url).context("--redis-url")?;
            self.redis.url = url.clone();
        }
        if let Some(dir) = &o.rules_dir {
            self.rules.dir = dir.clone();
        }
        if let Some(id) = &o.client_id {
            self.mqtt.client_id = check_client_id(id).context("--client-id")?;
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
        if let Some(addr) = &o.embedded_broker {
            let listen = parse_listen_addr(addr).context("--embedded-broker")?;
            self.broker
                .get_or_insert_with(|| crate::source::broker::BrokerConfig::new(listen))
                .listen = listen;
        }
        if let Some(file) = &o.acl_file {
            let Some(broker) = &mut self.broker else {
                bail!("--acl: the ACL belongs to the embedded broker; add --embedded-broker ADDR");
            };
            broker.acl = crate::source::broker::Acl::from_file(file)?;
        }
        if let Some(on) = o.emqx_events {
            self.mqtt.emqx_events = on;
        }
        if self.mqtt.emqx_events && self.broker.is_some() {
            bail!(
                "mqtt.emqx_events (--emqx-events) reads client events from an external EMQX \
                 (--mqtt-url); the embedded broker gives them itself: drop one of the two"
            );
        }
        Ok(())
    }

    fn from_raw(raw: RawConfig, o: &Overrides) -> anyhow::Result<Config> {
        let m = raw.mqtt;
        let url = m.url.as_deref().unwrap_or(DEFAULT_MQTT_URL);
        let (host, port, url_user, url_pass) = parse_mqtt_url(url).context("mqtt.url")?;
        let protocol = match m.protocol.as_deref().unwrap_or("5") {
            "5" | "5.0" => MqttProtocol::V5,
            "3.1.1" | "4" => MqttProtocol::V311,
            other => bail!("mqtt.protocol: {other:?} is not \"3.1.1\" or \"5\""),
        };
        // A session is only worth keeping under a stable client id: by default it is
        // kept when the id is chosen (file or --client-id), not for the generated one.
        let id_chosen = m.client_id.is_some() || o.client_id.is_some();
        let client_id = match m.client_id {
            Some(id) => check_client_id(&id).context("mqtt.client_id")?,
            None => format!("wasmrule-{}", std::process::id()),
        };
        let keep_alive = m.keep_alive_secs.unwrap_or(30);
        if !(5..=65535).contains(&keep_alive) {
            bail!("mqtt.keep_alive_secs: {keep_alive} is outside 5..=65535");
        }
        let mqtt = MqttConfig {
            host,
            port,
            client_id,
            username: m.username.or(url_user),
            password: m.password.or(url_pass),
            protocol,
            qos: check_qos(m.qos.unwrap_or(1)).context("mqtt.qos")?,
            keep_alive: Duration::from_secs(keep_alive),
            max_packet_size: positive(
                m.max_packet_size.unwrap_or(1 << 20),
                "mqtt.max_packet_size",
            )?,
            clean_session: m.clean_session.unwrap_or(!id_chosen),
            session_expiry: Duration::from_secs(m.session_expiry_secs.unwrap_or(3600).into()),
            inflight: positive(m.inflight.unwrap_or(1000), "mqtt.inflight")?,
            emqx_events: m.emqx_events.unwrap_or(false),
        };

        let redis_url = raw
            .redis
            .url
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        check_redis_url(&redis_url).context("redis.url")?;
        let redis = RedisConfig {
            url: redis_url,
            max_pipeline: positive(raw.redis.max_pipeline.unwrap_or(1024), "redis.max_pipeline")?,
            spill: raw.redis.spill.map(spill_config).transpose()?,
        };

        let rules = RulesConfig {
            dir: raw.rules.dir.unwrap_or_else(|| DEFAULT_RULES_DIR.into()),
            debounce: Duration::from_millis(raw.rules.debounce_ms.unwrap_or(50)),
            cache_dir: match raw.rules.cache_dir.as_deref() {
                Some("off") => None,
                Some(dir) => Some(dir.into()),
                None => default_cache_dir(),
            },
        };

        let d = Limits::default();
        let l = raw.limits;
        let limits = Limits {
            timeout: Duration::from_millis(positive(
                l.timeout_ms.unwrap_or(d.timeout.as_millis() as u64),
                "limits.timeout_ms",
            )?),
            max_memory: positive(
                l.max_memory_mb.unwrap_or(d.max_memory >> 20),
                "limits.max_memory_mb",
            )? << 20,
            max_wasm_stack: positive(
                l.max_wasm_stack_kb.unwrap_or(d.max_wasm_stack >> 10),
                "limits.max_wasm_stack_kb",
            )? << 10,
            max_commands: positive(
                l.max_commands.unwrap_or(d.max_commands),
                "limits.max_commands",
            )?,
            max_output_bytes: positive(
                l.max_output_bytes.unwrap_or(d.max_output_bytes),
                "limits.max_output_bytes",
            )?,
            ..d
        };
        if limits.max_memory > 4 << 30 {
            bail!("limits.max_memory_mb: at most 4096 (32-bit linear memory)");
        }
        if limits.max_wasm_stack > MAX_WASM_STACK {
            bail!(
                "limits.max_wasm_stack_kb: {} is above {}: the wasm stack must stay well \
                 below the {} KiB native stack of the threads that run rules (at most a \
                 quarter), or a deep recursion could overflow the thread instead of \
                 failing with `stack`",
                limits.max_wasm_stack >> 10,
                MAX_WASM_STACK >> 10,
                GUEST_THREAD_STACK >> 10
            );
        }

        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = RuntimeConfig {
            workers: match raw.runtime.workers {
                None | Some(0) => cores,
                Some(n) if n <= 256 => n,
                Some(n) => bail!("runtime.workers: {n} is more than 256"),
            },
            queue: positive(raw.runtime.queue.unwrap_or(1024), "runtime.queue")?,
            node: raw.runtime.node.unwrap_or_else(default_node),
            shutdown_timeout: Duration::from_secs(positive(
                raw.runtime.shutdown_timeout_secs.unwrap_or(10),
                "runtime.shutdown_timeout_secs",
            )?),
            http_addr: parse_http_addr(
                raw.runtime
                    .http_addr
                    .as_deref()
                    .unwrap_or(DEFAULT_HTTP_ADDR),
            )
            .context("runtime.http_addr")?,
        };

        let tenant_limits = InvokeLimits {
            timeout: limits.timeout,
            max_memory: limits.max_memory,
            max_commands: limits.max_commands,
            max_output_bytes: limits.max_output_bytes,
        };
        let mut listed = std::collections::BTreeMap::new();
        for (name, t) in raw.tenants {
            let p = tenant_policy(&name, t, &tenant_limits)
                .with_context(|| format!("tenants.{name}"))?;
            listed.insert(name, Arc::new(p));
        }
        let tenants = Tenants {
            listed,
            limits: tenant_limits,
        };

        let broker = match raw.broker {
            None => None,
            Some(b) => Some(broker_config(b).context("broker")?),
        };

        let mut config = Config {
            mqtt,
            broker,
            redis,
            rules,
            limits,
            runtime,
            tenants,
        };
        config.apply_overrides(o)?;
        Ok(config)
    }
}

fn tenant_policy(name: &str, t: RawTenant, global: &InvokeLimits) -> anyhow::Result<TenantPolicy> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        bail!("tenant name {name:?} must be a directory name of A-Z a-z 0-9 - _ .");
    }
    let base = default_policy(name, global.clone());
    let limits = InvokeLimits {
        timeout: t.timeout_ms.map_or(global.timeout, Duration::from_millis),
        max_memory: t.max_memory_mb.map_or(global.max_memory, |m| m << 20),
        max_commands: t.max_commands.unwrap_or(global.max_commands),
        max_output_bytes: t.max_output_bytes.unwrap_or(global.max_output_bytes),
    };
    if limits.timeout.is_zero()
        || limits.max_memory == 0
        || limits.max_commands == 0
        || limits.max_output_bytes == 0
    {
        bail!("limits must be greater than 0");
    }
    if limits.max_memory > global.max_memory {
        bail!(
            "max_memory_mb: {} is above limits.max_memory_mb ({}), the engine's cap",
            limits.max_memory >> 20,
            global.max_memory >> 20
        );
    }
    let topics = t.topics.unwrap_or(base.topics.clone());
    for f in &topics {
        crate::topic::validate_filter(f).map_err(|e| anyhow::anyhow!("topics: {f:?}: {e}"))?;
    }
    let allowed = match t.commands {
        Some(names) => resolve_allowed(&names).map_err(|e| anyhow::anyhow!("commands: {e}"))?,
        None => resolve_allowed(
            &DEFAULT_ALLOWED
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let prefix = t
        .key_prefix
        .unwrap_or_else(|| String::from_utf8_lossy(&base.key_prefix).into_owned());
    let q = default_quarantine();
    let quarantine = Quarantine {
        failures: t.quarantine_failures.unwrap_or(q.failures).max(1),
        window: t
            .quarantine_window_secs
            .map_or(q.window, Duration::from_secs),
        backoff: t
            .quarantine_backoff_secs
            .map_or(q.backoff, Duration::from_secs),
    };
    let cpu = CpuBudget {
        share_percent: t.cpu_share_percent.unwrap_or(base.cpu.share_percent),
        window: t
            .cpu_window_ms
            .map_or(base.cpu.window, Duration::from_millis),
    };
    if !(1..=100).contains(&cpu.share_percent) {
        bail!(
            "cpu_share_percent: {} is outside 1..=100 (100 turns the budget off)",
            cpu.share_percent
        );
    }
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&cpu.window) {
        bail!(
            "cpu_window_ms: {} is outside 100..=60000",
            cpu.window.as_millis()
        );
    }
    Ok(TenantPolicy::new(
        name,
        &prefix,
        allowed,
        topics,
        limits,
        t.dead_letter_maxlen.unwrap_or(base.dead_letter_maxlen),
        quarantine,
    )
    .with_cpu_budget(cpu))
}

fn spill_config(raw: RawSpill) -> anyhow::Result<SpillConfig> {
    let dir = match raw.dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => bail!(
            "redis.spill.dir: required to turn the spill on (a directory for it); \
             leave out [redis.spill] to keep it off"
        ),
    };
    let segment_bytes = raw.segment_bytes.unwrap_or(DEFAULT_SPILL_SEGMENT_BYTES);
    if !SPILL_SEGMENT_RANGE.contains(&segment_bytes) {
        bail!(
            "redis.spill.segment_bytes: {segment_bytes} is outside {}..={}",
            SPILL_SEGMENT_RANGE.start(),
            SPILL_SEGMENT_RANGE.end()
        );
    }
    let max_bytes = raw
        .max_bytes
        .unwrap_or(DEFAULT_SPILL_MAX_BYTES.max(segment_bytes));
    if max_bytes < segment_bytes {
        bail!(
            "redis.spill.max_bytes: {max_bytes} is less than redis.spill.segment_bytes ({segment_bytes})"
        );
    }
    Ok(SpillConfig {
        dir,
        max_bytes,
        segment_bytes,
    })
}

fn positive<T: PartialOrd + Default + std::fmt::Display>(v: T, key: &str) -> anyhow::Result<T> {
    if v > T::default() {
        Ok(v)
    } else {
        bail!("{key}: must be greater than 0, got {v}")
    }
}

fn check_qos(qos: u8) -> anyhow::Result<u8> {
    if qos <= 2 {
        Ok(qos)
    } else {
        bail!("QoS {qos} is not 0, 1 or 2")
    }
}

fn check_client_id(id: &str) -> anyhow::Result<String> {
    if id.is_empty() || id.len() > 256 || id.contains(['\0', '/', '+', '#']) {
        bail!("client id {id:?} must be 1 to 256 bytes without NUL, '/', '+' or '#'");
    }
    Ok(id.to_owned())
}

fn check_redis_url(url: &str) -> anyhow::Result<()> {
    if !(url.starts_with("redis://") || url.starts_with("unix://")) {
        bail!("{url:?}: expected redis://host:port[/db] or unix:///path (TLS is not built in)");
    }
    redis::Client::open(url).map_err(|e| anyhow::anyhow!("{url:?}: {e}"))?;
    Ok(())
}

fn parse_http_addr(s: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if s == "off" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{s:?} is not an address like 127.0.0.1:9464, or \"off\""))
}

fn broker_config(b: RawBroker) -> anyhow::Result<crate::source::broker::BrokerConfig> {
    let listen =
        parse_listen_addr(b.listen.as_deref().unwrap_or(DEFAULT_BROKER_ADDR)).context("listen")?;
    let mut c = crate::source::broker::BrokerConfig::new(listen);
    if let Some(file) = &b.acl_file {
        c.acl = crate::source::broker::Acl::from_file(file)?;
    }
    if let Some(v) = b.max_packet_size {
        c.max_packet_size = positive(v, "max_packet_size")?;
    }
    if let Some(q) = b.max_qos {
        c.max_qos = check_qos(q).context("max_qos")?;
    }
    if let Some(v) = b.max_inflight {
        c.max_inflight = positive(v, "max_inflight")?;
    }
    if let Some(v) = b.max_mqueue_len {
        c.max_mqueue_len = positive(v, "max_mqueue_len")?;
    }
    if let Some(v) = b.max_connections {
        c.max_connections = positive(v, "max_connections")?;
    }
    if let Some(v) = b.session_expiry_secs {
        c.session_expiry = Duration::from_secs(v);
    }
    Ok(c)
}

/// `host:port` for a listener; a bare port means loopback.
fn parse_listen_addr(s: &str) -> anyhow::Result<std::net::SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not an address like 127.0.0.1:1883"))
}

/// `$XDG_CACHE_HOME/wasmrule`, else `$HOME/.cache/wasmrule`, else no cache.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("wasmrule"))
}

fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("wasmrule@{host}")
}

type MqttUrlParts = (String, u16, Option<String>, Option<String>);

/// Parses `mqtt://[user[:password]@]host[:port]` (`tcp://` also accepted).
///
/// # Errors
///
/// When the scheme is not `mqtt`/`tcp`, the host is missing, or the port is invalid.
pub fn parse_mqtt_url(url: &str) -> anyhow::Result<MqttUrlParts> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("{url:?}: expected mqtt://host:port");
    };
    match scheme {
        "mqtt" | "tcp" => {}
        "mqtts" | "ssl" | "ws" | "wss" => {
            bail!("{url:?}: {scheme}:// is not supported by this build; use mqtt://")
        }
        _ => bail!("{url:?}: unknown scheme {scheme:?}; expected mqtt://host:port"),
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        bail!("{url:?}: an MQTT URL has no path or query");
    }
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, pass) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (Some(u.to_owned()), None),
        },
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, tail) = v6
            .split_once(']')
            .ok_or_else(|| anyhow::anyhow!("{url:?}: unclosed '[' in host"))?;
        (h, tail.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        bail!("{url:?}: no host");
    }
    let port = match port {
        None => 1883,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => bail!("{url:?}: port {p:?} is not a number in 1..=65535"),
        },
    };
    Ok((host.to_owned(), port, user, pass))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("127.0.0.1", 1883));
        assert_eq!(c.mqtt.protocol, MqttProtocol::V5);
        assert_eq!(c.mqtt.qos, 1);
        assert_eq!(c.redis.url, DEFAULT_REDIS_URL);
        assert_eq!(c.rules.dir, PathBuf::from("rules"));
        assert_eq!(c.limits, Limits::default());
        assert!(c.runtime.workers >= 1);
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
            [limits]
            timeout_ms = 50
            max_memory_mb = 8
            [runtime]
            workers = 3
            node = "n1"
            "#,
        )
        .unwrap();
        assert_eq!(c.mqtt.port, 1999);
        assert_eq!(c.mqtt.username.as_deref(), Some("u"));
        assert_eq!(c.mqtt.password.as_deref(), Some("p"));
        assert_eq!(c.mqtt.protocol, MqttProtocol::V311);
        assert_eq!(c.redis.max_pipeline, 64);
        assert_eq!(c.limits.timeout, Duration::from_millis(50));
        assert_eq!(c.limits.max_memory, 8 << 20);
        assert_eq!(c.runtime.workers, 3);
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

    #[test]
    fn mqtt_urls() {
        let p = |u: &str| parse_mqtt_url(u).map(|(h, p, u, _)| (h, p, u));
        assert_eq!(p("mqtt://h").unwrap(), ("h".into(), 1883, None));
        assert_eq!(p("tcp://h:1884/").unwrap(), ("h".into(), 1884, None));
        assert_eq!(
            p("mqtt://me@[::1]:9").unwrap(),
            ("::1".into(), 9, Some("me".into()))
        );
        for bad in [
            "h:1883",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtts://h",
            "mqtt://h/a",
        ] {
            assert!(parse_mqtt_url(bad).is_err(), "{bad}");
        }
    }
}
