//! Where commands are written: a worker's [`batch`] of commands, the [`redis`] writer
//! (pipelines, reconnects, the outage-and-replay loop) and the optional on-disk
//! [`spill`] for QoS 0 batches while Redis is down.
//!
//! Owns everything after a rule's commands passed the policy check, up to reporting
//! each message's writes complete to [`ack`](crate::ack). Does not own running rules or
//! acknowledging to the broker (`source/`).

pub mod batch;
pub mod mqtt;
pub mod redis;
pub mod spill;
