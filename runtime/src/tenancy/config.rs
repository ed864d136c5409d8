//! `[tenants.<name>]`: each listed tenant's policy, and the defaults every other
//! tenant gets. The section as written ([`RawTenant`]), the defaults (key prefix, topics,
//! quarantine, CPU share), the checks, and the validated [`Tenants`] that reload asks
//! for a tenant's [`TenantPolicy`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::rules::engine::Limits;
use crate::rules::ruleset::DEFAULT_TENANT;
use crate::tenancy::command_table::{DEFAULT_ALLOWED, resolve_allowed};
use crate::tenancy::cpu_budget::CpuBudget;
use crate::tenancy::policy::{InvokeLimits, Quarantine, TenantPolicy};

/// Share of each worker's time a tenant other than the default one may take, in percent
/// (docs/security.md, "CPU share"): enough for about 11,000 events per second per worker
/// of a typical rule (9 us each), little enough that a tenant burning its whole deadline
/// on every event leaves the others at least 90% of every worker.
pub const DEFAULT_CPU_SHARE_PERCENT: u32 = 10;
/// Window the CPU share is measured over.
pub const DEFAULT_CPU_WINDOW: Duration = Duration::from_secs(1);

/// Per-tenant policies: those configured under `[tenants.<name>]`, and the defaults
/// for any other tenant (docs/security.md).
#[derive(Debug, Clone)]
pub struct Tenants {
    listed: BTreeMap<String, Arc<TenantPolicy>>,
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

    /// Validates every `[tenants.<name>]` section; a tenant's limits default to, and
    /// may not exceed, the engine's `limits`. Errors name the tenant.
    pub(crate) fn from_raw(
        raw: BTreeMap<String, RawTenant>,
        limits: &Limits,
    ) -> anyhow::Result<Tenants> {
        let limits = InvokeLimits {
            timeout: limits.timeout,
            max_memory: limits.max_memory,
            max_commands: limits.max_commands,
            max_output_bytes: limits.max_output_bytes,
        };
        let mut listed = BTreeMap::new();
        for (name, t) in raw {
            let p = t
                .build(&name, &limits)
                .with_context(|| format!("tenants.{name}"))?;
            listed.insert(name, Arc::new(p));
        }
        Ok(Tenants { listed, limits })
    }
}

/// `[tenants.<name>]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTenant {
    key_prefix: Option<String>,
    topics: Option<Vec<String>>,
    clients: Option<Vec<String>>,
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

impl RawTenant {
    /// Tenant `name`'s policy: this section over the defaults.
    fn build(self, name: &str, global: &InvokeLimits) -> anyhow::Result<TenantPolicy> {
        check_tenant_name(name)?;
        let base = default_policy(name, global.clone());
        let limits = self.limits(global)?;
        let topics = self.topics.unwrap_or(base.topics.clone());
        for f in &topics {
            crate::topic::validate_filter(f).map_err(|e| anyhow::anyhow!("topics: {f:?}: {e}"))?;
        }
        let allowed = match self.commands {
            Some(names) => resolve_allowed(&names).map_err(|e| anyhow::anyhow!("commands: {e}"))?,
            None => resolve_allowed(&default_allowed()).map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        let prefix = self
            .key_prefix
            .unwrap_or_else(|| String::from_utf8_lossy(&base.key_prefix).into_owned());
        let q = default_quarantine();
        let quarantine = Quarantine {
            failures: self.quarantine_failures.unwrap_or(q.failures).max(1),
            window: self
                .quarantine_window_secs
                .map_or(q.window, Duration::from_secs),
            backoff: self
                .quarantine_backoff_secs
                .map_or(q.backoff, Duration::from_secs),
        };
        let cpu = cpu_budget(self.cpu_share_percent, self.cpu_window_ms, base.cpu)?;
        let clients = self.clients.unwrap_or(base.clients.clone());
        if clients.iter().any(String::is_empty) {
            bail!("clients: an empty prefix would be every client; list prefixes");
        }
        Ok(TenantPolicy::new(
            name,
            &prefix,
            allowed,
            topics,
            limits,
            self.dead_letter_maxlen.unwrap_or(base.dead_letter_maxlen),
            quarantine,
        )
        .with_cpu_budget(cpu)
        .with_clients(clients))
    }

    /// The tenant's invocation limits: the global ones unless set, at most the
    /// engine's memory cap.
    fn limits(&self, global: &InvokeLimits) -> anyhow::Result<InvokeLimits> {
        let limits = InvokeLimits {
            timeout: self
                .timeout_ms
                .map_or(global.timeout, Duration::from_millis),
            max_memory: self.max_memory_mb.map_or(global.max_memory, |m| m << 20),
            max_commands: self.max_commands.unwrap_or(global.max_commands),
            max_output_bytes: self.max_output_bytes.unwrap_or(global.max_output_bytes),
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
        Ok(limits)
    }
}

/// A tenant is a directory under the rules directory.
pub(crate) fn check_tenant_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !valid {
        bail!("tenant name {name:?} must be a directory name of A-Z a-z 0-9 - _ .");
    }
    Ok(())
}

/// A CPU budget from the section's share and window over `base`; checked.
fn cpu_budget(
    share_percent: Option<u32>,
    window_ms: Option<u64>,
    base: CpuBudget,
) -> anyhow::Result<CpuBudget> {
    let cpu = CpuBudget {
        share_percent: share_percent.unwrap_or(base.share_percent),
        window: window_ms.map_or(base.window, Duration::from_millis),
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
    Ok(cpu)
}

fn default_allowed() -> Vec<String> {
    DEFAULT_ALLOWED.iter().map(|s| s.to_string()).collect()
}

fn default_quarantine() -> Quarantine {
    Quarantine {
        failures: 20,
        window: Duration::from_secs(60),
        backoff: Duration::from_secs(60),
    }
}

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
    let allowed = resolve_allowed(&default_allowed()).unwrap_or_default();
    let (prefix, topics, clients) = if tenant == DEFAULT_TENANT {
        (
            String::new(),
            vec!["#".to_owned(), "$events/#".to_owned(), "$SYS/#".to_owned()],
            vec![String::new()],
        )
    } else {
        (
            format!("{tenant}:"),
            vec![format!("{tenant}/#")],
            Vec::new(),
        )
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
    .with_clients(clients)
}
