//! The unit of work between a worker and the Redis writer: commands, where each came
//! from, and the messages to acknowledge once they are written. Also the batch's byte
//! encoding for the on-disk spill (`spill/`), which only untracked batches ever take.
//!
//! This file does not send anything to Redis (`sink/redis/`) or decide what is
//! spilled (`spill/backlog.rs`).

use std::sync::Arc;

use crate::actions::MqttAction;
use crate::commands::Commands;
use crate::rules::engine::{ReadCode, Reply};
use crate::rules::ruleset::LoadedRule;

/// Commands from one worker, with where each came from (for error reports).
#[derive(Default)]
pub struct WriteBatch {
    pub commands: Commands,
    /// Messages (sequence numbers) fully handled in this batch, to acknowledge once its
    /// commands are written. Empty for a batch of QoS 0 messages only.
    pub done: Vec<u64>,
    origins: Vec<Origin>,
    // For each origin, the index of its first command; commands are contiguous.
    first_command: Vec<usize>,
    /// MQTT actions (ABI v2) to take, in order, once the commands are written; the
    /// batch's messages are done only after them.
    pub actions: Vec<MqttAction>,
    /// A rule's read (ABI v2) to run once the commands are written, so that it sees
    /// them (`dispatch/reads.rs`).
    pub read: Option<Box<ReadRequest>>,
    /// When the batch's oldest message was received (milliseconds since the Unix
    /// epoch, `Message::received_at`), 0 if unknown: for the end-to-end latency
    /// (`wasmrule_message_latency_seconds`). Not spilled.
    pub received_at: u64,
}

/// A read waiting behind a batch's writes, and where its reply goes. Answered once:
/// later answers are ignored.
pub struct ReadRequest {
    /// One command, checked and namespaced.
    pub command: Commands,
    /// Give up (and answer `unavailable`) after this.
    pub deadline: std::time::Instant,
    /// The worker blocks on the other end; taken by the first answer.
    reply: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<Result<Reply, ReadCode>>>>,
}

impl ReadRequest {
    /// A read of `command` whose worker waits on `reply` until `deadline`.
    pub fn new(
        command: Commands,
        deadline: std::time::Instant,
        reply: std::sync::mpsc::SyncSender<Result<Reply, ReadCode>>,
    ) -> ReadRequest {
        ReadRequest {
            command,
            deadline,
            reply: std::sync::Mutex::new(Some(reply)),
        }
    }

    /// Whether the read still waits for an answer and its worker still waits for it.
    pub fn waiting(&self) -> bool {
        self.reply.lock().is_ok_and(|r| r.is_some()) && std::time::Instant::now() < self.deadline
    }

    /// Answers the read, if it was not answered yet; a worker that stopped waiting is
    /// fine.
    pub fn answer(&self, r: Result<Reply, ReadCode>) {
        if let Some(tx) = self.reply.lock().ok().and_then(|mut g| g.take()) {
            let _ = tx.try_send(r);
        }
    }
}

/// The rule (id and load generation) and topic that produced some commands. Kept by name rather than as
/// the loaded rule, so that it outlives the rule and survives the spill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub rule: Arc<str>,
    /// [`LoadedRule::generation`].
    pub generation: u64,
    /// [`LoadedRule::version`], the author's (`""` if none).
    pub version: Arc<str>,
    pub topic: String,
}

impl WriteBatch {
    /// Whether there is nothing to write and nothing to acknowledge.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
            && self.done.is_empty()
            && self.actions.is_empty()
            && self.read.is_none()
    }

    /// Notes that a message received at `received_at` is in the batch.
    #[inline]
    pub fn note_received(&mut self, received_at: u64) {
        if self.received_at == 0 || received_at < self.received_at {
            self.received_at = received_at;
        }
    }

    /// Whether some message in the batch waits for these writes to be acknowledged
    /// (QoS 1/2), or MQTT actions wait for them. Such a batch must never be written
    /// anywhere but Redis (the spill keeps neither).
    pub fn is_tracked(&self) -> bool {
        !self.done.is_empty() || !self.actions.is_empty()
    }

    /// Notes that the last `n` commands came from `rule` handling a message on `topic`.
    pub fn record_origin(&mut self, rule: &LoadedRule, topic: &str, n: usize) {
        self.first_command.push(self.commands.len() - n);
        self.origins.push(Origin {
            rule: rule.id.clone(),
            generation: rule.generation,
            version: rule.version_shared.clone(),
            topic: topic.to_owned(),
        });
    }

    /// Where command `command` came from, if recorded.
    pub fn origin_of(&self, command: usize) -> Option<&Origin> {
        let i = self
            .first_command
            .partition_point(|&first| first <= command);
        i.checked_sub(1).map(|i| &self.origins[i])
    }

    /// Appends the batch's commands and origins to `out` (not `done`: a batch that has
    /// messages to acknowledge is never spilled). Integers are little-endian; lengths
    /// are u32, which every command fits (arguments are indexed by u32 in `Commands`).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(ENCODING_VERSION);
        put_u32(out, self.commands.len());
        for c in self.commands.iter() {
            let args = c.args();
            put_u32(out, args.len());
            for a in args {
                put_bytes(out, a);
            }
        }
        put_u32(out, self.origins.len());
        for (o, &first) in self.origins.iter().zip(&self.first_command) {
            put_u32(out, first);
            put_bytes(out, o.rule.as_bytes());
            out.extend_from_slice(&o.generation.to_le_bytes());
            put_bytes(out, o.version.as_bytes());
            put_bytes(out, o.topic.as_bytes());
        }
    }

    /// The batch [`WriteBatch::encode`] wrote into `bytes` (with `done` empty).
    ///
    /// # Errors
    ///
    /// When `bytes` is not such an encoding: truncated, an unknown version, trailing
    /// bytes, or origins that do not point at its commands. Never panics on bad input.
    pub fn decode(bytes: &[u8]) -> Result<WriteBatch, DecodeError> {
        let mut r = Reader(bytes);
        let encoding = r.take(1)?[0];
        // Version 1 (before origins carried the author's version) is still read, so
        // that a spill written by an older wasmrule replays.
        if encoding != ENCODING_VERSION && encoding != 1 {
            return Err(DecodeError("unknown encoding version"));
        }
        let mut b = WriteBatch::default();
        for _ in 0..r.count()? {
            b.commands.begin_command();
            for _ in 0..r.count()? {
                let arg = r.bytes()?;
                b.commands.push_arg(arg);
            }
        }
        for _ in 0..r.count()? {
            let first = r.u32()? as usize;
            let rule =
                std::str::from_utf8(r.bytes()?).map_err(|_| DecodeError("rule id is not UTF-8"))?;
            let generation = u64::from_le_bytes(
                r.take(8)?
                    .try_into()
                    .map_err(|_| DecodeError("truncated"))?,
            );
            let version = if encoding == 1 {
                ""
            } else {
                std::str::from_utf8(r.bytes()?)
                    .map_err(|_| DecodeError("rule version is not UTF-8"))?
            };
            let topic =
                std::str::from_utf8(r.bytes()?).map_err(|_| DecodeError("topic is not UTF-8"))?;
            let in_order = b.first_command.last().is_none_or(|&last| last <= first);
            if first >= b.commands.len() || !in_order {
                return Err(DecodeError("origin does not point at a command"));
            }
            b.first_command.push(first);
            b.origins.push(Origin {
                rule: rule.into(),
                generation,
                version: version.into(),
                topic: topic.to_owned(),
            });
        }
        if !r.0.is_empty() {
            return Err(DecodeError("trailing bytes"));
        }
        Ok(b)
    }
}

/// A spilled batch that cannot be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed spilled batch: {0}")]
pub struct DecodeError(&'static str);

/// First byte of every encoding, so that the format can change without misreading old
/// spills.
/// 2: origins carry the rule's version (the author's) after its generation.
const ENCODING_VERSION: u8 = 2;

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Counts and lengths come from `Commands`, whose indices are u32, and from topics
    // and rule ids, which MQTT and file names keep far below 4 GiB.
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count of items that each take at least 4 bytes: bounded by what is left, so a
    /// corrupt count cannot make the decoder loop for long.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > self.0.len() / 4 {
            return Err(DecodeError("count larger than the record"));
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WriteBatch {
        let mut b = WriteBatch::default();
        b.commands.push(["SETBIT", "seen", "7", "1"]);
        b.commands.push(["INCR", "writes"]);
        b.first_command.push(0);
        b.origins.push(Origin {
            rule: "seq-counter".into(),
            generation: 3,
            version: "0.1.0".into(),
            topic: "seq/7".into(),
        });
        b.commands.push([&b"SET"[..], b"bin\x00\xff", b""]);
        b.first_command.push(2);
        b.origins.push(Origin {
            rule: "acme/echo".into(),
            generation: 1,
            version: "".into(),
            topic: "acme/x".into(),
        });
        b
    }

    #[test]
    fn round_trip() {
        let b = sample();
        let mut bytes = Vec::new();
        b.encode(&mut bytes);
        let back = WriteBatch::decode(&bytes).unwrap();
        assert_eq!(back.commands, b.commands);
        assert_eq!(back.origins, b.origins);
        assert_eq!(back.first_command, b.first_command);
        assert!(back.done.is_empty());
        assert_eq!(back.origin_of(1).unwrap().rule.as_ref(), "seq-counter");
        assert_eq!(back.origin_of(2).unwrap().topic, "acme/x");
        assert_eq!(back.origin_of(1).unwrap().version.as_ref(), "0.1.0");
    }

    #[test]
    fn version_1_encodings_still_decode() {
        // SET k v from rule r (generation 2) on topic t, as wasmrule wrote it before
        // origins carried the author's version.
        let mut v1 = vec![1];
        put_u32(&mut v1, 1);
        put_u32(&mut v1, 3);
        for a in ["SET", "k", "v"] {
            put_bytes(&mut v1, a.as_bytes());
        }
        put_u32(&mut v1, 1);
        put_u32(&mut v1, 0);
        put_bytes(&mut v1, b"r");
        v1.extend_from_slice(&2u64.to_le_bytes());
        put_bytes(&mut v1, b"t");
        let b = WriteBatch::decode(&v1).unwrap();
        let o = b.origin_of(0).unwrap();
        assert_eq!(
            (o.rule.as_ref(), o.generation, o.version.as_ref()),
            ("r", 2, "")
        );
        assert_eq!(o.topic, "t");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut bytes = Vec::new();
        sample().encode(&mut bytes);
        // Every truncation, and every single-byte change, either decodes or errs.
        for n in 0..bytes.len() {
            assert!(WriteBatch::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0xff;
            let _ = WriteBatch::decode(&b);
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            WriteBatch::decode(&trailing).err(),
            Some(DecodeError("trailing bytes"))
        );
        bytes[0] = 9;
        assert_eq!(
            WriteBatch::decode(&bytes).err(),
            Some(DecodeError("unknown encoding version"))
        );
    }
}
