//! The files of a recording and the records in them.
//!
//! # Files
//!
//! A recording is a directory of segment files `<id>.wrec` (`id` in 20 digits,
//! increasing). A segment starts with the 8-byte header `WRREC\0\0` + format version 1,
//! then records: `len: u32 LE`, `crc: u32 LE`, `len` bytes of payload, where `crc` is
//! CRC-32 (IEEE) over the length bytes and the payload. A segment is closed at
//! `record.segment_bytes`; the oldest are deleted while the directory holds more than
//! `record.max_bytes`. A torn last record (the process died mid-write) is reported by
//! the reader and ends that segment; the next segment is read on.
//!
//! # Records
//!
//! The payload is written by hand, little-endian, every variable part length-prefixed
//! (`u32` lengths): serde formats in the dependency tree are text or would need a new
//! crate, and the record is on the workers' path.
//!
//! - `1` an event: `time_ms: u64`, `topic`, `event` (the JSON the rules were given,
//!   exactly), `count: u32` invocations, each: `rule` (its id), `version`, `count: u32`
//!   reads (`request`: `count: u32` arguments; `reply`: `0` + an ABI reply encoding
//!   (`docs/abi.md`) or `1` + `code: i32`), the output (`count: u32` commands of
//!   `count: u32` arguments; `count: u32` actions; `error`: `0` or `1` + kind).
//! - `2` a gap: `time_ms: u64`, `lost: u64` events the recorder could not keep up with.

use crate::actions::{MqttAction, Publish};
use crate::commands::Commands;
use crate::rules::engine::{ReadCode, Reply};

use super::{Output, ReadEntry};

/// Segment header: magic and format version.
pub const SEGMENT_MAGIC: &[u8; 8] = b"WRREC\0\0\x01";
/// Record header: length and checksum.
pub const RECORD_HEADER: usize = 8;
/// The suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".wrec";
/// A record longer than this is damage, not a record (events are at most the MQTT
/// packet limit plus what rules returned).
pub const MAX_RECORD: usize = 256 << 20;

const EVENT: u8 = 1;
const GAP: u8 = 2;

/// One record of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Event(EventRecord),
    /// Events the recorder dropped here because it could not keep up.
    Gap {
        time_ms: u64,
        lost: u64,
    },
}

/// An event and what each rule made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Receipt, in ms since the Unix epoch.
    pub time_ms: u64,
    /// The topic it was dispatched on (`$events/...` for broker events).
    pub topic: String,
    /// The event as rules were given it.
    pub event: Vec<u8>,
    pub invocations: Vec<Invocation>,
}

/// One rule's invocation on a recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The rule's id (`store-last-message`, `acme/counter`).
    pub rule: String,
    /// Its manifest version, or "".
    pub version: String,
    pub reads: Vec<ReadEntry>,
    pub output: Output,
}

/// Appends records' payloads to a buffer.
pub struct Encoder<'a>(pub &'a mut Vec<u8>);

impl Encoder<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: usize) {
        self.0.extend_from_slice(&(v as u32).to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len());
        self.0.extend_from_slice(b);
    }

    /// An event record's head; then [`Encoder::invocations`] and invocations.
    pub fn event(&mut self, time_ms: u64, topic: &str, event: &[u8]) {
        self.u8(EVENT);
        self.u64(time_ms);
        self.bytes(topic.as_bytes());
        self.bytes(event);
    }

    /// The number of invocations that follow.
    pub fn invocations(&mut self, count: usize) {
        self.u32(count);
    }

    /// One invocation: the rule, its reads, and what it returned (`error` set: it
    /// failed, or its output was refused, and `commands` and `actions` are not written).
    pub fn invocation(
        &mut self,
        rule: &str,
        version: &str,
        reads: &[ReadEntry],
        commands: &Commands,
        actions: &[MqttAction],
        error: Option<&str>,
    ) {
        self.bytes(rule.as_bytes());
        self.bytes(version.as_bytes());
        self.u32(reads.len());
        for r in reads {
            self.u32(r.request.len());
            for a in &r.request {
                self.bytes(a);
            }
            match &r.reply {
                Ok(reply) => {
                    self.u8(0);
                    let mut enc = Vec::with_capacity(reply.encoded_len());
                    reply.encode(&mut enc);
                    self.bytes(&enc);
                }
                Err(code) => {
                    self.u8(1);
                    self.0.extend_from_slice(&code.code().to_le_bytes());
                }
            }
        }
        let (commands, actions) = match error {
            Some(_) => (&Commands::new(), &[][..]),
            None => (commands, actions),
        };
        self.u32(commands.len());
        for c in commands.iter() {
            let args = c.args();
            self.u32(args.len());
            for a in args {
                self.bytes(a);
            }
        }
        self.u32(actions.len());
        for a in actions {
            self.action(a);
        }
        match error {
            None => self.u8(0),
            Some(kind) => {
                self.u8(1);
                self.bytes(kind.as_bytes());
            }
        }
    }

    fn action(&mut self, a: &MqttAction) {
        match a {
            MqttAction::Publish(p) => {
                self.u8(0);
                self.publish(p);
            }
            MqttAction::Subscribe {
                client,
                filter,
                qos,
            } => {
                self.u8(1);
                self.bytes(client.as_bytes());
                self.bytes(filter.as_bytes());
                self.u8(*qos);
            }
            MqttAction::Unsubscribe { client, filter } => {
                self.u8(2);
                self.bytes(client.as_bytes());
                self.bytes(filter.as_bytes());
            }
            MqttAction::Deliver { client, message } => {
                self.u8(3);
                self.bytes(client.as_bytes());
                self.publish(message);
            }
        }
    }

    fn publish(&mut self, p: &Publish) {
        self.bytes(p.topic.as_bytes());
        self.bytes(&p.payload);
        self.u8(p.qos);
        self.u8(u8::from(p.retain));
        self.u32(p.properties.len());
        for (k, v) in &p.properties {
            self.bytes(k.as_bytes());
            self.bytes(v.as_bytes());
        }
    }

    /// A gap of `lost` events.
    pub fn gap(&mut self, time_ms: u64, lost: u64) {
        self.u8(GAP);
        self.u64(time_ms);
        self.u64(lost);
    }
}

/// Reads a record's payload; every read is bounds-checked, a short or malformed
/// payload is `None`.
struct Decoder<'a>(&'a [u8]);

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    /// A count of items that each take at least `min` bytes: more than the rest could
    /// hold is damage.
    fn count(&mut self, min: usize) -> Option<usize> {
        let n = self.u32()?;
        (n.saturating_mul(min) <= self.0.len()).then_some(n)
    }

    fn invocation(&mut self) -> Option<Invocation> {
        let rule = self.string()?;
        let version = self.string()?;
        let mut reads = Vec::new();
        for _ in 0..self.count(5)? {
            let mut request = Vec::new();
            for _ in 0..self.count(4)? {
                request.push(self.bytes()?.to_vec());
            }
            let reply = match self.u8()? {
                0 => {
                    let enc = self.bytes()?;
                    let (reply, used) = Reply::decode(enc)?;
                    if used != enc.len() {
                        return None;
                    }
                    Ok(reply)
                }
                1 => Err(ReadCode::from_code(i32::from_le_bytes(
                    self.take(4)?.try_into().ok()?,
                ))?),
                _ => return None,
            };
            reads.push(ReadEntry { request, reply });
        }
        let mut commands = Commands::new();
        for _ in 0..self.count(4)? {
            commands.begin_command();
            for _ in 0..self.count(4)? {
                commands.push_arg(self.bytes()?);
            }
        }
        let mut actions = Vec::new();
        for _ in 0..self.count(1)? {
            actions.push(self.action()?);
        }
        let error = match self.u8()? {
            0 => None,
            1 => Some(self.string()?),
            _ => return None,
        };
        Some(Invocation {
            rule,
            version,
            reads,
            output: Output {
                commands,
                actions,
                error,
            },
        })
    }

    fn action(&mut self) -> Option<MqttAction> {
        Some(match self.u8()? {
            0 => MqttAction::Publish(self.publish()?),
            1 => MqttAction::Subscribe {
                client: self.string()?,
                filter: self.string()?,
                qos: self.u8()?,
            },
            2 => MqttAction::Unsubscribe {
                client: self.string()?,
                filter: self.string()?,
            },
            3 => MqttAction::Deliver {
                client: self.string()?,
                message: self.publish()?,
            },
            _ => return None,
        })
    }

    fn publish(&mut self) -> Option<Publish> {
        let topic = self.string()?;
        let payload = self.bytes()?.to_vec();
        let qos = self.u8()?;
        let retain = self.u8()? != 0;
        let mut properties = Vec::new();
        for _ in 0..self.count(8)? {
            properties.push((self.string()?, self.string()?));
        }
        Some(Publish {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
    }
}

/// Decodes one record's payload; `None` when it is not a well-formed record.
pub fn decode(payload: &[u8]) -> Option<Record> {
    let mut d = Decoder(payload);
    let record = match d.u8()? {
        EVENT => {
            let time_ms = d.u64()?;
            let topic = d.string()?;
            let event = d.bytes()?.to_vec();
            let mut invocations = Vec::new();
            for _ in 0..d.count(16)? {
                invocations.push(d.invocation()?);
            }
            Record::Event(EventRecord {
                time_ms,
                topic,
                event,
                invocations,
            })
        }
        GAP => Record::Gap {
            time_ms: d.u64()?,
            lost: d.u64()?,
        },
        _ => return None,
    };
    d.0.is_empty().then_some(record)
}

/// The frame of one record: its header (length, checksum) and payload.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Whether `crc` is the checksum of a record of `len` bytes with this payload.
pub fn checks(len: [u8; 4], crc: u32, payload: &[u8]) -> bool {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    h.finalize() == crc
}

/// The file name of segment `id`.
pub fn segment_name(id: u64) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

/// The id of a segment file name, or `None` for any other file.
pub fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_as_written() {
        let mut commands = Commands::new();
        commands.push(["HSET", "emqx_messages", "d1", "21.5"]);
        let actions = vec![
            MqttAction::Publish(Publish {
                topic: "alerts/d1".into(),
                payload: b"hot".to_vec(),
                qos: 1,
                retain: false,
                properties: vec![("k".into(), "v".into())],
            }),
            MqttAction::Unsubscribe {
                client: "c".into(),
                filter: "a/#".into(),
            },
        ];
        let reads = vec![
            ReadEntry {
                request: vec![b"GET".to_vec(), b"k".to_vec()],
                reply: Ok(Reply::Array(vec![Reply::Nil, Reply::Int(-3)])),
            },
            ReadEntry {
                request: vec![b"GET".to_vec()],
                reply: Err(ReadCode::OverBudget),
            },
        ];
        let mut buf = Vec::new();
        let mut e = Encoder(&mut buf);
        e.event(17, "store-last-message/d1", br#"{"a":1}"#);
        e.invocations(2);
        e.invocation("r1", "0.1.0", &reads, &commands, &actions, None);
        e.invocation("r2", "", &[], &commands, &actions, Some("trap"));
        let Some(Record::Event(ev)) = decode(&buf) else {
            panic!("not an event: {:?}", decode(&buf));
        };
        assert_eq!(
            (ev.time_ms, ev.topic.as_str()),
            (17, "store-last-message/d1")
        );
        assert_eq!(ev.event, br#"{"a":1}"#);
        assert_eq!(ev.invocations[0].reads, reads);
        assert_eq!(ev.invocations[0].output.commands, commands);
        assert_eq!(ev.invocations[0].output.actions, actions);
        let failed = &ev.invocations[1].output;
        assert!(failed.commands.is_empty() && failed.actions.is_empty());
        assert_eq!(failed.error.as_deref(), Some("trap"));

        let mut gap = Vec::new();
        Encoder(&mut gap).gap(5, 12);
        assert_eq!(
            decode(&gap),
            Some(Record::Gap {
                time_ms: 5,
                lost: 12
            })
        );
    }

    #[test]
    fn damaged_payloads_are_refused() {
        let mut buf = Vec::new();
        let mut e = Encoder(&mut buf);
        e.event(1, "t", b"{}");
        e.invocations(0);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), None, "cut at {cut}");
        }
        let mut long = buf.clone();
        long.push(0);
        assert_eq!(decode(&long), None);
        assert!(decode(&buf).is_some());
    }

    #[test]
    fn frames_check_length_and_payload() {
        let mut f = Vec::new();
        frame(b"abc", &mut f);
        let len: [u8; 4] = f[..4].try_into().unwrap();
        let crc = u32::from_le_bytes(f[4..8].try_into().unwrap());
        assert!(checks(len, crc, b"abc"));
        assert!(!checks(len, crc, b"abd"));
        assert!(!checks(4u32.to_le_bytes(), crc, b"abc"));
        assert_eq!(segment_id(&segment_name(42)), Some(42));
        assert_eq!(segment_id("42.wrec"), None);
    }
}
