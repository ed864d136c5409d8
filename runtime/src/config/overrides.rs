//! Values given on the command line or in the environment: the flags of `wasmrule run`.
//! They are applied over the file's by `Config::apply_overrides` (`mod.rs`), each value
//! checked by the stage that owns it.

use std::path::PathBuf;

use clap::ArgAction;
use clap::builder::TypedValueParser;

/// Values given on the command line or in the environment; `None` keeps the file's.
/// The flags of `wasmrule run` (flattened into its arguments), so each is declared
/// once, here.
// The field docs are `wasmrule run --help`, written for a terminal, not for rustdoc.
#[allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// MQTT broker, mqtt://[user[:password]@]host[:port], or mqtts:// for TLS (mqtt.tls_* in the config file).
    #[arg(long, env = "WASMRULE_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// Redis server, redis://host[:port][/db], or rediss:// for TLS (redis.tls_* in the config file).
    #[arg(long, env = "WASMRULE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Directory of rule files, watched for changes.
    #[arg(long, env = "WASMRULE_RULES_DIR")]
    pub rules_dir: Option<PathBuf>,
    /// MQTT client id (default: wasmrule-<pid>).
    #[arg(long, env = "WASMRULE_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Subscribe as $share/<GROUP>/<filter>: the broker splits the messages among the
    /// wasmrule instances of the group, each with its own client id (docs/scaling.md).
    #[arg(long, env = "WASMRULE_SHARE_GROUP", value_name = "GROUP")]
    pub share_group: Option<String>,
    /// QoS of wasmrule's subscriptions.
    #[arg(long, env = "WASMRULE_QOS")]
    pub qos: Option<u8>,
    /// Start a fresh MQTT session (the default when no client id is chosen).
    #[arg(long, action = ArgAction::SetTrue, value_parser = on_or_unset())]
    pub clean_session: OnOrUnset,
    /// Health and metrics endpoint (GET /healthz, /readyz, /metrics), or `off`.
    #[arg(long, env = "WASMRULE_HTTP_ADDR")]
    pub http_addr: Option<String>,
    /// Run an MQTT broker inside wasmrule on this address (e.g. 127.0.0.1:1883) instead
    /// of connecting to one; rules then also see client events (docs/events.md).
    #[arg(long, env = "WASMRULE_EMBEDDED_BROKER", value_name = "ADDR")]
    pub embedded_broker: Option<String>,
    /// Give the embedded broker a TLS listener on this address (e.g. 0.0.0.0:8883),
    /// beside the plain one; needs its certificate and key (--embedded-broker-cert,
    /// --embedded-broker-key, or broker.tls_* in the config file).
    #[arg(long, env = "WASMRULE_EMBEDDED_BROKER_TLS", value_name = "ADDR")]
    pub embedded_broker_tls: Option<String>,
    /// PEM certificate chain of the embedded broker's TLS listener.
    #[arg(long, env = "WASMRULE_EMBEDDED_BROKER_CERT", value_name = "FILE")]
    pub embedded_broker_cert: Option<PathBuf>,
    /// PEM private key of the embedded broker's TLS listener.
    #[arg(long, env = "WASMRULE_EMBEDDED_BROKER_KEY", value_name = "FILE")]
    pub embedded_broker_key: Option<PathBuf>,
    /// Who keeps the embedded broker's retained messages: "memory" (the broker) or
    /// "rules" (the EMQX 4 backend pack keeps them in Redis; docs/emqx4-backend.md).
    #[arg(long, env = "WASMRULE_BROKER_RETAINED", value_name = "MODE")]
    pub broker_retained: Option<String>,
    /// ACL file of the embedded broker (docs/broker.md).
    #[arg(long = "acl", env = "WASMRULE_ACL", value_name = "FILE")]
    pub acl_file: Option<PathBuf>,
    /// The broker is EMQX: turn its client-event topics ($SYS/brokers/+/clients/...,
    /// $event/...) into the events rules ask for with $events/... (docs/events.md).
    #[arg(long, env = "WASMRULE_EMQX_EVENTS", action = ArgAction::SetTrue, value_parser = on_or_unset())]
    pub emqx_events: OnOrUnset,
    /// Record every event the rules get, with the reads they made and what they
    /// returned, into this directory (bounded by record.max_bytes; docs/replay.md).
    #[arg(long, env = "WASMRULE_RECORD", value_name = "DIR")]
    pub record: Option<PathBuf>,
}

/// A switch that can only be turned on from the command line: given, it is
/// `Some(true)`; absent (or `false` in the environment), `None`, which keeps the file's
/// value. Spelled as an alias so that clap takes the whole `Option` from
/// `on_or_unset` rather than reading an absent flag as `Some(false)`.
pub type OnOrUnset = Option<bool>;

/// The flag's `true`/`false` (clap's own boolean parser and messages) -> [`OnOrUnset`].
fn on_or_unset() -> impl clap::builder::TypedValueParser<Value = OnOrUnset> {
    clap::builder::BoolValueParser::new().map(|on| on.then_some(true))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Overrides;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        overrides: Overrides,
    }

    fn parse(args: &[&str]) -> Result<Overrides, clap::Error> {
        Cli::try_parse_from(std::iter::once("wasmrule").chain(args.iter().copied()))
            .map(|c| c.overrides)
    }

    #[test]
    fn a_switch_is_on_or_keeps_the_file() {
        let o = parse(&[]).unwrap();
        assert_eq!((o.clean_session, o.emqx_events), (None, None));
        let o = parse(&["--clean-session", "--emqx-events"]).unwrap();
        assert_eq!((o.clean_session, o.emqx_events), (Some(true), Some(true)));
        assert!(parse(&["--clean-session=false"]).is_err());
        let o = parse(&["--qos", "0", "--acl", "a.toml", "--http-addr", "off"]).unwrap();
        assert_eq!(o.qos, Some(0));
        assert_eq!(o.acl_file.as_deref(), Some(std::path::Path::new("a.toml")));
        assert_eq!(o.http_addr.as_deref(), Some("off"));
    }
}
