//! For the operator: [`metrics`] (counters of what the runtime did) and the [`http`]
//! endpoint that serves them with `/healthz` and `/readyz`.
//!
//! Owns counting and reporting; does not own deciding anything from the counts.

pub mod http;
pub mod metrics;
