//! Tenants: a rule in `rules/<tenant>/` belongs to that tenant. What a tenant's rules
//! may do ([`policy`]: commands, key namespace, topics, limits; the [`command_table`]
//! of commands it can allow), how much worker time
//! they may take ([`cpu_budget`]), and taking a failing rule out of service
//! ([`quarantine`]).
//!
//! Also the `[tenants.<name>]` sections and the defaults of an unlisted tenant
//! (`config.rs`).
//!
//! Owns the decisions; does not own where they are applied (`dispatch/` on each event,
//! `rules/reload.rs` on each load).

pub mod command_table;
mod config;
pub mod cpu_budget;
pub mod policy;
pub mod quarantine;
pub mod read_table;

pub use config::{DEFAULT_CPU_SHARE_PERCENT, DEFAULT_CPU_WINDOW, Tenants};
pub(crate) use config::{RawTenant, check_tenant_name};
