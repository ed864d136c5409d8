//! Tenants: a rule in `rules/<tenant>/` belongs to that tenant. What a tenant's rules
//! may do ([`policy`]: commands, key namespace, topics, limits), how much worker time
//! they may take ([`cpu_budget`]), and taking a failing rule out of service
//! ([`quarantine`]).
//!
//! Owns the decisions; does not own where they are applied (`dispatch/` on each event,
//! `rules/reload.rs` on each load).

pub mod cpu_budget;
pub mod policy;
pub mod quarantine;
