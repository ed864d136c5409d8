//! What `wasmrule eval` and `wasmrule test` run a rule under: the tenant a served copy
//! of the rule would belong to ([`Serving`]), so that a rule behaves offline as it does
//! when `wasmrule run` serves it. The same three steps as the serving path: the load-time
//! topic check (`rules/reload.rs`), the invocation under the tenant's limits and the
//! command policy (`dispatch/`), whose namespaced output is what reaches Redis.
//!
//! Owns the choice of tenant and config for the offline tools; does not own the policy
//! itself (`tenancy/policy.rs`) or printing (the subcommands).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::commands::Commands;
use crate::config::{Config, Overrides};
use crate::rules::engine::{Limits, Rule, RuleError};
use crate::rules::ruleset::DEFAULT_TENANT;
use crate::tenancy::policy::TenantPolicy;

/// The tenant a rule is run as offline, and the engine limits of the config it came
/// from.
#[derive(Debug, Clone)]
pub struct Serving {
    policy: Arc<TenantPolicy>,
    limits: Limits,
}

/// Why an offline run produced no commands: the rule failed, or the command policy
/// refused its output (nothing of it would be written).
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
}

impl Refusal {
    /// The stable reason, as counted and logged when served (`timeout`,
    /// `command_not_allowed`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Failed { kind, .. } | Refusal::Policy { kind, .. } => kind,
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
    /// tenant's limits, its output through the tenant's command policy. The commands
    /// are those that would be written to Redis (command names upper-case, keys with
    /// the tenant's prefix).
    ///
    /// # Errors
    ///
    /// Why nothing would be written: see [`Refusal`].
    pub fn run(&self, rule: &Rule, event: &[u8]) -> Result<Commands, Refusal> {
        let mut returned = Commands::new();
        loop {
            returned.clear();
            match rule.invoke_with(event, &mut returned, &self.policy.limits) {
                Ok(_) => break,
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
        }
        let mut written = Commands::new();
        self.policy
            .apply(&returned, &mut written)
            .map_err(|e| Refusal::Policy {
                tenant: self.policy.tenant.clone(),
                kind: e.kind(),
                message: e.to_string(),
            })?;
        Ok(written)
    }
}
