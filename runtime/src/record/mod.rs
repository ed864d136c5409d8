//! Recording what rules saw and did, and comparing it: the pieces that `wasmrule run
//! --record`, `wasmrule record`, `wasmrule replay` and canary rules share
//! (docs/replay.md).
//!
//! - `format.rs`: the files of a recording (rotating, checksummed segments) and the
//!   records in them ([`Record`]).
//! - `writer.rs`: the recorder thread the workers hand records to.
//! - `reader.rs`: reading a recording back, segment by segment, checking every record.
//! - `diff.rs`: what one output has that another has not ([`diff::compare`]).
//! - `reads.rs`: a [`RedisReads`](crate::rules::engine::RedisReads) that answers from
//!   recorded reads.
//!
//! Does not run rules (`dispatch/`, `tools/replay.rs`).

pub mod config;
pub mod diff;
pub mod format;
pub mod reader;
pub mod reads;
pub mod writer;

use crate::actions::MqttAction;
use crate::commands::Commands;
use crate::rules::engine::{ReadCode, Reply};

/// One read a rule made, as the rule asked for it (before namespacing), with what it
/// got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    /// The command name and arguments, as the rule passed them.
    pub request: Vec<Vec<u8>>,
    pub reply: Result<Reply, ReadCode>,
}

/// What one invocation returned: its Redis commands and MQTT actions as the rule
/// returned them (before the tenant's policy namespaced them), or why it failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub commands: Commands,
    pub actions: Vec<MqttAction>,
    /// The failure's stable kind (`timeout`, `trap`, `command_not_allowed`, ...); the
    /// commands and actions are then empty.
    pub error: Option<String>,
}

impl Output {
    /// Every line of it: the commands in `redis-cli` syntax, the actions as `wasmrule
    /// eval` prints them, then `ERROR <kind>` for a failure.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.commands.iter().map(|c| c.to_string()).collect();
        lines.extend(self.actions.iter().map(ToString::to_string));
        if let Some(kind) = &self.error {
            lines.push(format!("ERROR {kind}"));
        }
        lines
    }
}
