//! What `wasmrule eval` and `wasmrule test` run a rule under: the tenant a served copy
//! of the rule would belong to ([`Serving`]), so that a rule behaves offline as it does
//! when `wasmrule run` serves it. The same three steps as the serving path: the load-time
//! topic check (`rules/reload.rs`), the invocation under the tenant's limits (an ABI v2
//! rule's reads answered from a fixture through the tenant's read policy,
//! `fixture_redis.rs`) and the command and action policy (`dispatch/`), whose
//! namespaced output is what reaches Redis and the broker.
//!
//! Owns the choice of tenant and config for the offline tools and the one-line form
//! actions are printed and matched in ([`Outcome::lines`]); does not own the policy
//! itself (`tenancy/policy.rs`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::actions::MqttAction;
use crate::commands::Commands;
use crate::config::{Config, Overrides};
use crate::rules::engine::{Limits, Rule, RuleError};
use crate::rules::ruleset::DEFAULT_TENANT;
use crate::tenancy::policy::TenantPolicy;
use crate::tools::fixture_redis::Fixture;

/// What one offline run would do: the Redis commands it would write, then the MQTT
/// actions it would take, and the reads it made on the way.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Namespaced, as written to Redis.
    pub commands: Commands,
    /// As taken, after the tenant's checks.
    pub actions: Vec<MqttAction>,
    /// Each read as sent to Redis, with its reply: `GET last:d1 -> "20"`.
    pub reads: Vec<String>,
}

impl Outcome {
    /// Everything the run would do, one line each, in the order it is done: the Redis
    /// commands in `redis-cli` syntax, then the MQTT actions (see [`action_line`]).
    pub fn lines(&self) -> Vec<String> {
        let commands = self.commands.iter().map(|c| c.to_string());
        commands
            .chain(self.actions.iter().map(action_line))
            .collect()
    }
}

/// One MQTT action as `wasmrule eval` prints it and test cases match it: its
/// `Display` (`actions.rs`, docs/writing-rules.md "Actions").
pub fn action_line(action: &MqttAction) -> String {
    action.to_string()
}

/// The tenant a rule is run as offline, and the engine limits of the config it came
/// from.
#[derive(Debug, Clone)]
pub struct Serving {
    policy: Arc<TenantPolicy>,
    limits: Limits,
}

/// Why an offline run produced no output: the rule failed, or the command or action
/// policy refused its output (nothing of it would be written or sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The rule itself failed: a trap, a limit, an ABI error or its own error.
    #[error("the rule failed ({kind}): {message}")]
    Failed { kind: &'static str, message: String },
    /// The rule returned commands that `wasmrule run` would not write.
    #[error("refused by the command policy of tenant {tenant} ({kind}): {message}")]
    Policy {
        tenant: String,
        kind: &'static str,
        message: String,
    },
    /// The rule returned MQTT actions (ABI v2) that `wasmrule run` would not take.
    #[error("refused by the action policy of tenant {tenant} ({kind}): {message}")]
    ActionPolicy {
        tenant: String,
        kind: &'static str,
        message: String,
    },
}

impl Refusal {
    /// The stable reason, as counted and logged when served (`timeout`,
    /// `command_not_allowed`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Failed { kind, .. }
            | Refusal::Policy { kind, .. }
            | Refusal::ActionPolicy { kind, .. } => kind,
        }
    }
}

impl Serving {
    /// The tenant `tenant` (default: the default tenant, rules directly in the rules
    /// directory) of the config file `config` (default: no file, the defaults).
    ///
    /// # Errors
    ///
    /// When the config file is invalid, or the tenant name could not be a directory.
    pub fn load(tenant: Option<&str>, config: Option<&Path>) -> anyhow::Result<Serving> {
        let config = Config::load(config, &Overrides::default())?;
        let tenant = tenant.unwrap_or(DEFAULT_TENANT);
        crate::tenancy::check_tenant_name(tenant).context("--tenant")?;
        Ok(Serving {
            policy: config.tenants.policy(tenant),
            limits: config.limits,
        })
    }

    /// The engine limits of the config (`[limits]`), for building the engine.
    pub fn engine_limits(&self) -> &Limits {
        &self.limits
    }

    /// The tenant's name.
    pub fn tenant(&self) -> &str {
        &self.policy.tenant
    }

    /// Sets the per-event deadline (`--timeout-ms`), for a busy machine.
    pub fn set_timeout(&mut self, timeout: std::time::Duration) {
        self.limits.timeout = timeout;
        Arc::make_mut(&mut self.policy).limits.timeout = timeout;
    }

    /// What loading `rule` for this tenant checks beyond the module: every filter
    /// within the topics the tenant may subscribe to.
    ///
    /// # Errors
    ///
    /// The first filter outside them, as `wasmrule run` logs it when it refuses the rule.
    pub fn check_load(&self, rule: &Rule) -> Result<(), String> {
        rule.manifest()
            .filters
            .iter()
            .try_for_each(|f| self.policy.check_filter(f))
    }

    /// Runs `rule` on the complete event JSON `event` as a served rule runs: under the
    /// tenant's limits, its reads (ABI v2) answered from `redis` through the tenant's
    /// read policy, its output through the tenant's command and action policy. The
    /// commands are those that would be written to Redis (command names upper-case,
    /// keys with the tenant's prefix), the actions those that would be taken.
    ///
    /// # Errors
    ///
    /// Why nothing would be written: see [`Refusal`].
    pub fn run(&self, rule: &Rule, event: &[u8], redis: &Fixture) -> Result<Outcome, Refusal> {
        let mut returned = Commands::new();
        let mut actions = Vec::new();
        let reads = loop {
            returned.clear();
            actions.clear();
            let (port, log) = redis.reads(self.policy.clone());
            let mut port = Some(port);
            let r = rule.invoke_actions(
                event,
                &mut returned,
                &mut actions,
                &self.policy.limits,
                &mut port,
            );
            match r {
                Ok(_) => break log.lines(),
                // The host starved the invocation of CPU: not the rule's failure, and
                // served it would run again (`dispatch/`).
                Err(RuleError::Stalled { .. }) => continue,
                Err(e) => {
                    return Err(Refusal::Failed {
                        kind: e.kind(),
                        message: e.to_string(),
                    });
                }
            }
        };
        let tenant = || self.policy.tenant.clone();
        let mut written = Commands::new();
        self.policy
            .apply(&returned, &mut written)
            .map_err(|e| Refusal::Policy {
                tenant: tenant(),
                kind: e.kind(),
                message: e.to_string(),
            })?;
        self.policy
            .check_actions(&actions)
            .map_err(|e| Refusal::ActionPolicy {
                tenant: tenant(),
                kind: e.kind(),
                message: e.to_string(),
            })?;
        Ok(Outcome {
            commands: written,
            actions,
            reads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Publish;

    fn publish(topic: &str, payload: &[u8]) -> Publish {
        Publish {
            topic: topic.into(),
            payload: payload.to_vec(),
            qos: 1,
            retain: false,
            properties: vec![],
        }
    }

    #[test]
    fn actions_print_as_documented() {
        let mut p = publish("alerts/d1", br#"{"a": 1}"#);
        p.properties.push(("trace id".into(), "x".into()));
        assert_eq!(
            action_line(&MqttAction::Publish(p)),
            r#"MQTT PUBLISH alerts/d1 qos=1 retain=0 prop:"trace id"=x payload={"a": 1}"#
        );
        let mut m = publish("a b", &[0, 0xff]);
        m.retain = true;
        assert_eq!(
            action_line(&MqttAction::Deliver {
                client: "c1".into(),
                message: m
            }),
            r#"MQTT DELIVER c1 "a b" qos=1 retain=1 payload="\x00\xff""#
        );
        assert_eq!(
            action_line(&MqttAction::Publish(publish("t", b""))),
            r#"MQTT PUBLISH t qos=1 retain=0 payload="""#
        );
        let sub = MqttAction::Subscribe {
            client: "c1".into(),
            filter: "x/#".into(),
            qos: 0,
        };
        assert_eq!(action_line(&sub), "MQTT SUBSCRIBE c1 x/# qos=0");
        let unsub = MqttAction::Unsubscribe {
            client: "c1".into(),
            filter: "x/#".into(),
        };
        assert_eq!(action_line(&unsub), "MQTT UNSUBSCRIBE c1 x/#");
    }
}
