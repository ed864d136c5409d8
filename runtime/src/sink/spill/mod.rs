//! The optional write-ahead spill (`[redis.spill]`): while Redis is unreachable, batches
//! of QoS 0 messages go to a bounded on-disk log instead of stopping the pipeline, and
//! are replayed in order when Redis returns.
//!
//! Why: without it, a Redis outage fills wasmrule's bounded queues and the MQTT reader
//! stops reading. The broker keeps QoS 1/2 messages for a slow subscriber, but drops
//! QoS 0 ones (mosquitto past `max_queued_messages`). With the spill, wasmrule keeps
//! reading; QoS 0 messages wait on wasmrule's disk rather than being dropped by the
//! broker.
//!
//! What is spilled: a worker's batch whose messages are all untracked (QoS 0, nothing to
//! acknowledge). A batch holding a QoS 1/2 message is never written to disk: its
//! acknowledgement must follow its Redis write, and the broker keeps it anyway. Such a
//! batch waits in memory, in its place in the order (see below), and once a bounded
//! amount waits in memory the writer stops taking batches: the same backpressure as
//! without the spill.
//!
//! # Order
//!
//! Redis must see one topic's commands in publish order. A topic's messages reach the
//! writer in order, in one channel, so it is enough that the writer writes batches in
//! the order it takes them. Once anything is spilled, every later batch goes behind it:
//! untracked ones into the log, tracked ones into memory tagged with the log position
//! they belong at (the log's end when they arrived). Replay walks the log from its start
//! and writes each in-memory batch when it reaches that batch's position, so records and
//! in-memory batches come out exactly in arrival order. New batches keep going into the
//! log during replay and only when it is empty do they take the direct path again. The
//! alternative, writing new batches directly while replaying old ones, would let a new
//! command for a topic overtake a spilled one for the same topic.
//!
//! # Full
//!
//! When a batch does not fit in `max_bytes`, it waits in memory like a tracked one; once
//! the in-memory bound is reached the writer stops taking batches, the queues fill, the
//! MQTT reader stops reading and the broker drops QoS 0 messages as it would without
//! the spill. The episode is counted (`wasmrule_spill_full_total`) and logged once;
//! spilling resumes when replay frees a segment. Nothing already spilled is dropped.
//!
//! # Layout
//!
//! - `format.rs`: the directory's files (segments, cursor, lock) and their format.
//! - [`log`]: the append-only log over them: records, checksums, the cursor, the bound.
//! - [`backlog`]: the log plus the in-memory batches: what goes where, and replay
//!   chunks in order.
//! - `sync`: the thread that `fdatasync`s the log in the background.
//! - `config.rs`: the `[redis.spill]` section.
//!
//! The Redis writer's outage-and-replay loop (`sink/redis/outage.rs`) drives the
//! backlog when the spill is configured; the spill comes into use when a write fails for
//! want of a connection. The spill does not know Redis.

pub mod backlog;
mod config;
mod format;
pub mod log;
mod sync;

pub use backlog::Backlog;
pub(crate) use config::RawSpill;
pub use config::{DEFAULT_SPILL_MAX_BYTES, DEFAULT_SPILL_SEGMENT_BYTES, SpillConfig};
pub use log::SpillLog;
