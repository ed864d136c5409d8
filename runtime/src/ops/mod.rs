//! For the operator: [`metrics`] (what the runtime did: process-wide atomics, the
//! per-rule and per-tenant series of [`rule_metrics`], the lock-free [`histogram`]),
//! [`exposition`] (all of it as Prometheus text, with prometheus-client), [`status`]
//! (the same as JSON) and the [`http`] endpoint that serves them with `/healthz`,
//! `/readyz` and the web console (`console.html`). docs/observability.md lists every
//! metric.
//!
//! Owns counting and reporting; does not own deciding anything from the counts.

pub mod canary_metrics;
pub mod exposition;
pub mod histogram;
pub mod http;
pub mod metrics;
pub mod rule_metrics;
pub mod status;
