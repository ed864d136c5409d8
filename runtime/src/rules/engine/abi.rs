//! Rule ABIs v1 and v2: the only file that knows export names, pointers, the result
//! layouts and the ABI versions (`docs/abi.md` is the user-facing statement of the same
//! contract; v2's host functions are `host.rs`).
//!
//! A rule is a core wasm module that imports nothing and exports:
//!
//! | export                   | type              | role                                   |
//! |--------------------------|-------------------|----------------------------------------|
//! | `memory`                 | memory            | the one linear memory                  |
//! | `wasmrule_abi_version_1` | `func`            | version marker, never called           |
//! | `wasmrule_manifest`      | `func() -> i64`   | packed (ptr, len) of the manifest JSON |
//! | `wasmrule_alloc`         | `func(i32) -> i32`| buffer for the event, 0 on failure     |
//! | `wasmrule_on_event`      | `func(i32, i32) -> i64` | handle the event, packed result  |
//!
//! Packed values carry the pointer in the high 32 bits and the length in the low 32.
//!
//! Version 2 has the same exports under the marker `wasmrule_abi_version_2`, may import
//! `wasmrule.redis_read` and `wasmrule.redis_reply`, and returns actions (a kind byte
//! before each) instead of bare commands.

use serde::Deserialize;
use wasmtime::{ExternType, Module, ValType};

use super::host;
use super::{LoadError, RuleError};
use crate::actions::{MqttAction, Publish};
use crate::commands::Commands;
use crate::topic::validate_filter;

/// The newest ABI version this runtime implements; it loads every version from 1 on.
pub const ABI_VERSION: u32 = 2;

const VERSION_PREFIX: &str = "wasmrule_abi_version_";
pub(crate) const EXPORT_MEMORY: &str = "memory";
pub(crate) const EXPORT_MANIFEST: &str = "wasmrule_manifest";
pub(crate) const EXPORT_ALLOC: &str = "wasmrule_alloc";
pub(crate) const EXPORT_ON_EVENT: &str = "wasmrule_on_event";

/// First byte of a result buffer: commands follow.
const TAG_OK: u8 = 0;
/// First byte of a result buffer: a UTF-8 error message follows.
const TAG_ERROR: u8 = 1;
/// Longest error message kept from a rule; the rest is cut (logs stay readable).
const MAX_ERROR_MESSAGE: usize = 1024;
/// Longest manifest accepted (it is a name and a few filters).
pub(crate) const MAX_MANIFEST: usize = 64 * 1024;
/// Most filters one rule may declare.
const MAX_FILTERS: usize = 256;

/// What a rule declares about itself, read from the module at load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    /// Human name of the rule (`store-last-message`).
    pub name: String,
    /// Version the author gave the rule, if any.
    #[serde(default)]
    pub version: Option<String>,
    /// MQTT topic filters and event topics the rule receives.
    pub filters: Vec<String>,
    /// Which SDK built the module, if it says.
    #[serde(default)]
    pub sdk: Option<String>,
    /// What the rule needs of the runtime (`embedded-broker`); a runtime without it
    /// refuses the rule at load (`rules/reload.rs`).
    #[serde(default)]
    pub needs: Vec<String>,
}

/// Checks the module's version marker, imports and exports against its ABI, and
/// returns the version (1 or 2).
///
/// # Errors
///
/// A [`LoadError`] naming the first thing that does not match.
pub fn check_module(module: &Module) -> Result<u32, LoadError> {
    let versions: Vec<String> = module
        .exports()
        .filter_map(|e| e.name().strip_prefix(VERSION_PREFIX).map(str::to_owned))
        .collect();
    let version = match versions.as_slice() {
        [] => return Err(LoadError::NotARule),
        [v] if v == "1" => 1,
        [v] if v == "2" => 2,
        [v] => {
            return Err(LoadError::AbiVersion {
                found: v.clone(),
                supported: ABI_VERSION,
            });
        }
        _ => {
            return Err(LoadError::Abi(format!(
                "exports several ABI versions ({})",
                versions.join(", ")
            )));
        }
    };
    check_imports(module, version)?;

    let mut memories = 0;
    // The map memory of a module rewritten to mark its writes (`reuse_marks.rs`) is
    // the host's, not the rule's.
    let map = matches!(
        module.get_export(super::reuse_marks::DIRTY_MAP),
        Some(ExternType::Memory(_))
    );
    for export in module.exports() {
        if export.name() == super::reuse_marks::DIRTY_MAP {
            continue;
        }
        if let ExternType::Memory(m) = export.ty() {
            memories += 1;
            if m.is_64() || m.is_shared() {
                return Err(LoadError::Abi(format!(
                    "memory `{}` is 64-bit or shared; rules use one plain 32-bit memory",
                    export.name()
                )));
            }
        }
    }
    if memories > 1 {
        return Err(LoadError::Abi("exports more than one memory".into()));
    }
    // Multi-memory is on in the engine (components need it); a core rule still has
    // exactly one memory, exported or not.
    let defined = module.resources_required().num_memories - u32::from(map);
    if defined > 1 {
        return Err(LoadError::Abi(format!(
            "defines {defined} memories; a rule has one"
        )));
    }
    match module.get_export(EXPORT_MEMORY) {
        Some(ExternType::Memory(_)) => {}
        Some(_) => return Err(wrong_type(EXPORT_MEMORY, "a memory")),
        None => return Err(LoadError::MissingExport(EXPORT_MEMORY)),
    }
    expect_func(module, EXPORT_MANIFEST, &[], &[ValType::I64])?;
    expect_func(module, EXPORT_ALLOC, &[ValType::I32], &[ValType::I32])?;
    expect_func(
        module,
        EXPORT_ON_EVENT,
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
    )?;
    Ok(version)
}

/// v1 imports nothing; v2 only the host functions of `host.rs`, with their types.
fn check_imports(module: &Module, version: u32) -> Result<(), LoadError> {
    for import in module.imports() {
        let named = |e: fn(String, String) -> LoadError| {
            Err(e(import.module().to_owned(), import.name().to_owned()))
        };
        if version < 2 {
            return named(|module, name| LoadError::Import { module, name });
        }
        let known = import.module() == host::IMPORT_MODULE
            && [host::IMPORT_READ, host::IMPORT_REPLY].contains(&import.name());
        if !known {
            return named(|module, name| LoadError::UnknownHostImport { module, name });
        }
        let ExternType::Func(f) = import.ty() else {
            return Err(LoadError::Abi(format!(
                "import `{}::{}` must be a function (i32, i32) -> (i32)",
                import.module(),
                import.name()
            )));
        };
        let params: Vec<ValType> = f.params().collect();
        let results: Vec<ValType> = f.results().collect();
        let i32s = |v: &[ValType], n: usize| v.len() == n && v.iter().all(|t| t.is_i32());
        if !(i32s(&params, 2) && i32s(&results, 1)) {
            return Err(LoadError::Abi(format!(
                "import `{}::{}` must be a function (i32, i32) -> (i32)",
                import.module(),
                import.name()
            )));
        }
    }
    Ok(())
}

fn expect_func(
    module: &Module,
    name: &'static str,
    params: &[ValType],
    results: &[ValType],
) -> Result<(), LoadError> {
    let sig = || {
        let list = |v: &[ValType]| {
            v.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("a function ({}) -> ({})", list(params), list(results))
    };
    let Some(ty) = module.get_export(name) else {
        return Err(LoadError::MissingExport(name));
    };
    let ExternType::Func(f) = ty else {
        return Err(wrong_type(name, &sig()));
    };
    let same = |got: &mut dyn ExactSizeIterator<Item = ValType>, want: &[ValType]| {
        got.len() == want.len() && got.zip(want).all(|(g, w)| ValType::eq(&g, w))
    };
    if same(&mut f.params(), params) && same(&mut f.results(), results) {
        Ok(())
    } else {
        Err(wrong_type(name, &sig()))
    }
}

fn wrong_type(name: &str, want: &str) -> LoadError {
    LoadError::Abi(format!("export `{name}` must be {want}"))
}

/// Splits a packed `i64` into (pointer, length).
pub fn unpack(packed: i64) -> (u32, u32) {
    let v = packed as u64;
    ((v >> 32) as u32, v as u32)
}

/// Returns `memory[ptr..ptr + len]`, or an ABI error naming `what`.
pub fn guest_slice<'m>(
    memory: &'m [u8],
    ptr: u32,
    len: u32,
    what: &str,
) -> Result<&'m [u8], RuleError> {
    let start = ptr as usize;
    start
        .checked_add(len as usize)
        .and_then(|end| memory.get(start..end))
        .ok_or_else(|| {
            RuleError::Abi(format!(
                "{what} at {ptr}..+{len} is outside linear memory ({} bytes)",
                memory.len()
            ))
        })
}

/// Parses and validates the manifest bytes.
///
/// # Errors
///
/// When the manifest is not JSON of the documented shape, or declares no filter, an
/// invalid one, or too many.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, LoadError> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| LoadError::Manifest(format!("not valid manifest JSON: {e}")))?;
    let name_ok = !m.name.is_empty()
        && m.name.len() <= 128
        && m.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(LoadError::Manifest(format!(
            "name {:?} must be 1 to 128 characters of A-Z a-z 0-9 - _ .",
            m.name
        )));
    }
    if m.filters.is_empty() {
        return Err(LoadError::Manifest(
            "declares no filters: it would never run".into(),
        ));
    }
    if m.filters.len() > MAX_FILTERS {
        return Err(LoadError::Manifest(format!(
            "declares {} filters; at most {MAX_FILTERS}",
            m.filters.len()
        )));
    }
    for f in &m.filters {
        validate_filter(f)
            .map_err(|e| LoadError::Manifest(format!("filter {f:?} is invalid: {e}")))?;
        check_redis_filter(f).map_err(|e| LoadError::Manifest(format!("filter {f:?}: {e}")))?;
    }
    Ok(m)
}

/// A `$redis/` filter names one channel or stream exactly.
fn check_redis_filter(f: &str) -> Result<(), &'static str> {
    let Some(rest) = f.strip_prefix("$redis/") else {
        return Ok(());
    };
    let name = rest
        .strip_prefix("channel/")
        .or_else(|| rest.strip_prefix("stream/"))
        .ok_or("events from Redis are `$redis/channel/NAME` or `$redis/stream/NAME`")?;
    if name.is_empty() || name.contains(['+', '#']) {
        return Err("names one Redis channel or stream, without wildcards");
    }
    Ok(())
}

/// Output limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    pub max_commands: usize,
    pub max_args: usize,
}

/// Decodes a result buffer, appending commands to `out`.
///
/// On any error nothing is appended: a rule's output is taken whole or not at all.
///
/// # Errors
///
/// [`RuleError::Rule`] when the rule reported an error, [`RuleError::TooManyCommands`]
/// past the limit, [`RuleError::Abi`] for any malformed buffer.
pub fn decode_result(
    buf: &[u8],
    limits: OutputLimits,
    out: &mut Commands,
) -> Result<usize, RuleError> {
    let mark = out.mark();
    let r = decode_into(buf, limits, out);
    if r.is_err() {
        out.truncate(mark);
    }
    r
}

fn decode_into(buf: &[u8], limits: OutputLimits, out: &mut Commands) -> Result<usize, RuleError> {
    let mut rest = take_tag(buf)?;
    let count = take_u32(&mut rest, "command count")? as usize;
    if count > limits.max_commands {
        return Err(RuleError::TooManyCommands {
            count,
            max: limits.max_commands,
        });
    }
    for i in 0..count {
        let argc = take_u32(&mut rest, "argument count")? as usize;
        take_command(&mut rest, i, argc, limits, out)?;
    }
    if !rest.is_empty() {
        return Err(RuleError::Abi(format!(
            "{} bytes left over after {count} commands",
            rest.len()
        )));
    }
    Ok(count)
}

/// Action kinds of a v2 result buffer (`docs/abi.md`, "Actions").
const ACTION_REDIS: u8 = 0;
const ACTION_PUBLISH: u8 = 1;
const ACTION_SUBSCRIBE: u8 = 2;
const ACTION_UNSUBSCRIBE: u8 = 3;
const ACTION_DELIVER: u8 = 4;
/// `deliver` with MQTT 5 user properties (kind 4 has none).
const ACTION_DELIVER_PROPS: u8 = 5;
/// Most MQTT 5 user properties on one publish.
const MAX_PROPERTIES: usize = 64;

/// Decodes a v2 result buffer: Redis commands to `out`, MQTT actions to `actions`.
///
/// On any error nothing is appended to either.
///
/// # Errors
///
/// As [`decode_result`]; `max_commands` bounds actions of every kind together.
pub fn decode_result_v2(
    buf: &[u8],
    limits: OutputLimits,
    out: &mut Commands,
    actions: &mut Vec<MqttAction>,
) -> Result<usize, RuleError> {
    let mark = out.mark();
    let before = actions.len();
    let r = decode_v2_into(buf, limits, out, actions);
    if r.is_err() {
        out.truncate(mark);
        actions.truncate(before);
    }
    r
}

fn decode_v2_into(
    buf: &[u8],
    limits: OutputLimits,
    out: &mut Commands,
    actions: &mut Vec<MqttAction>,
) -> Result<usize, RuleError> {
    let mut rest = take_tag(buf)?;
    let count = take_u32(&mut rest, "action count")? as usize;
    if count > limits.max_commands {
        return Err(RuleError::TooManyCommands {
            count,
            max: limits.max_commands,
        });
    }
    for i in 0..count {
        let (&kind, tail) = rest
            .split_first()
            .ok_or_else(|| RuleError::Abi(format!("result ends before action {i}")))?;
        rest = tail;
        let mut field = |what: &str| take_bytes(&mut rest, i, what);
        match kind {
            ACTION_REDIS => {
                let argc = take_u32(&mut rest, "argument count")? as usize;
                take_command(&mut rest, i, argc, limits, out)?;
            }
            ACTION_PUBLISH => {
                let topic = text(field("topic")?, i, "topic")?;
                let payload = field("payload")?.to_vec();
                let (qos, retain) = take_qos_retain(&mut rest, i)?;
                let properties = take_properties(&mut rest, i)?;
                actions.push(MqttAction::Publish(Publish {
                    topic,
                    payload,
                    qos,
                    retain,
                    properties,
                }));
            }
            ACTION_SUBSCRIBE => {
                let client = text(field("client id")?, i, "client id")?;
                let filter = text(field("filter")?, i, "filter")?;
                let qos = take_qos(&mut rest, i)?;
                actions.push(MqttAction::Subscribe {
                    client,
                    filter,
                    qos,
                });
            }
            ACTION_UNSUBSCRIBE => {
                let client = text(field("client id")?, i, "client id")?;
                let filter = text(field("filter")?, i, "filter")?;
                actions.push(MqttAction::Unsubscribe { client, filter });
            }
            ACTION_DELIVER | ACTION_DELIVER_PROPS => {
                let client = text(field("client id")?, i, "client id")?;
                let topic = text(field("topic")?, i, "topic")?;
                let payload = field("payload")?.to_vec();
                let (qos, retain) = take_qos_retain(&mut rest, i)?;
                let properties = if kind == ACTION_DELIVER_PROPS {
                    take_properties(&mut rest, i)?
                } else {
                    Vec::new()
                };
                actions.push(MqttAction::Deliver {
                    client,
                    message: Publish {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties,
                    },
                });
            }
            k => {
                return Err(RuleError::Abi(format!(
                    "action {i} has kind {k}; kinds are 0 (redis) to 5 (deliver with properties)"
                )));
            }
        }
    }
    if !rest.is_empty() {
        return Err(RuleError::Abi(format!(
            "{} bytes left over after {count} actions",
            rest.len()
        )));
    }
    Ok(count)
}

/// The buffer after an ok tag; a rule error or an unknown tag is the error.
fn take_tag(buf: &[u8]) -> Result<&[u8], RuleError> {
    let (&tag, rest) = buf
        .split_first()
        .ok_or_else(|| RuleError::Abi("result buffer is empty".into()))?;
    match tag {
        TAG_OK => Ok(rest),
        TAG_ERROR => {
            let msg = &rest[..rest.len().min(MAX_ERROR_MESSAGE)];
            Err(RuleError::Rule(String::from_utf8_lossy(msg).into_owned()))
        }
        t => Err(RuleError::Abi(format!(
            "result tag {t} is neither 0 (ok) nor 1 (error)"
        ))),
    }
}

/// One command of `argc` arguments from `rest` into `out`.
fn take_command(
    rest: &mut &[u8],
    i: usize,
    argc: usize,
    limits: OutputLimits,
    out: &mut Commands,
) -> Result<(), RuleError> {
    if argc == 0 {
        return Err(RuleError::Abi(format!("command {i} has no name")));
    }
    if argc > limits.max_args {
        return Err(RuleError::Abi(format!(
            "command {i} has {argc} arguments; at most {}",
            limits.max_args
        )));
    }
    out.begin_command();
    for _ in 0..argc {
        let len = take_u32(rest, "argument length")? as usize;
        if rest.len() < len {
            return Err(RuleError::Abi(format!(
                "command {i}: argument of {len} bytes runs past the end of the result"
            )));
        }
        let (arg, tail) = rest.split_at(len);
        out.push_arg(arg);
        *rest = tail;
    }
    Ok(())
}

fn take_bytes<'b>(rest: &mut &'b [u8], i: usize, what: &str) -> Result<&'b [u8], RuleError> {
    let len = take_u32(rest, what)? as usize;
    if rest.len() < len {
        return Err(RuleError::Abi(format!(
            "action {i}: {what} of {len} bytes runs past the end of the result"
        )));
    }
    let (b, tail) = rest.split_at(len);
    *rest = tail;
    Ok(b)
}

fn text(b: &[u8], i: usize, what: &str) -> Result<String, RuleError> {
    String::from_utf8(b.to_vec())
        .map_err(|_| RuleError::Abi(format!("action {i}: the {what} is not UTF-8")))
}

fn take_byte(rest: &mut &[u8], i: usize, what: &str) -> Result<u8, RuleError> {
    let (&b, tail) = rest
        .split_first()
        .ok_or_else(|| RuleError::Abi(format!("action {i}: result ends before its {what}")))?;
    *rest = tail;
    Ok(b)
}

fn take_qos(rest: &mut &[u8], i: usize) -> Result<u8, RuleError> {
    match take_byte(rest, i, "QoS")? {
        q @ (0 | 1) => Ok(q),
        q => Err(RuleError::Abi(format!(
            "action {i}: QoS {q}; actions take QoS 0 or 1"
        ))),
    }
}

fn take_qos_retain(rest: &mut &[u8], i: usize) -> Result<(u8, bool), RuleError> {
    let qos = take_qos(rest, i)?;
    match take_byte(rest, i, "retain flag")? {
        r @ (0 | 1) => Ok((qos, r == 1)),
        r => Err(RuleError::Abi(format!(
            "action {i}: retain flag {r}; it is 0 or 1"
        ))),
    }
}

fn take_properties(rest: &mut &[u8], i: usize) -> Result<Vec<(String, String)>, RuleError> {
    let n = take_u32(rest, "property count")? as usize;
    if n > MAX_PROPERTIES {
        return Err(RuleError::Abi(format!(
            "action {i}: {n} user properties; at most {MAX_PROPERTIES}"
        )));
    }
    (0..n)
        .map(|_| {
            let k = text(take_bytes(rest, i, "property name")?, i, "property name")?;
            let v = text(take_bytes(rest, i, "property value")?, i, "property value")?;
            Ok((k, v))
        })
        .collect()
}

fn take_u32(rest: &mut &[u8], what: &str) -> Result<u32, RuleError> {
    let (n, tail) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| RuleError::Abi(format!("result ends inside a {what}")))?;
    *rest = tail;
    Ok(u32::from_le_bytes(*n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OutputLimits = OutputLimits {
        max_commands: 3,
        max_args: 8,
    };

    fn encode(cmds: &[&[&[u8]]]) -> Vec<u8> {
        let mut b = vec![TAG_OK];
        b.extend((cmds.len() as u32).to_le_bytes());
        for c in cmds {
            b.extend((c.len() as u32).to_le_bytes());
            for a in *c {
                b.extend((a.len() as u32).to_le_bytes());
                b.extend(*a);
            }
        }
        b
    }

    #[test]
    fn decodes_binary_safe_commands() {
        let buf = encode(&[&[b"HSET", b"k", b"\0\r\n", b""]]);
        let mut out = Commands::new();
        assert_eq!(decode_result(&buf, LIMITS, &mut out).unwrap(), 1);
        let args: Vec<&[u8]> = out.get(0).unwrap().args().collect();
        assert_eq!(args, vec![&b"HSET"[..], b"k", b"\0\r\n", b""]);
    }

    #[test]
    fn rejects_malformed_buffers_and_appends_nothing() {
        let mut out = Commands::new();
        out.push(["KEEP"]);
        let good = encode(&[&[b"SET", b"a", b"b"]]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (vec![7], "tag 7"),
            (vec![TAG_OK, 1, 0], "ends inside a command count"),
            (good[..good.len() - 1].to_vec(), "runs past the end"),
            ([good.clone(), vec![0]].concat(), "left over"),
            (encode(&[&[]]), "has no name"),
            (encode(&[&[b"A"], &[b"B"], &[b"C"], &[b"D"]]), "4 commands"),
            (encode(&[&[&b"A"[..]; 9]]), "9 arguments"),
            // A count far beyond the buffer must fail on the limit, not allocate.
            (
                [vec![TAG_OK], u32::MAX.to_le_bytes().to_vec()].concat(),
                "commands",
            ),
        ];
        for (buf, want) in cases {
            let err = decode_result(&buf, LIMITS, &mut out)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
            assert_eq!(out.len(), 1, "partial output kept for {want}");
        }
    }

    /// Kind 5 is a deliver with user properties; kind 4 one without; kind 6 is none.
    #[test]
    fn deliveries_with_and_without_properties() {
        let s = |b: &mut Vec<u8>, v: &[u8]| {
            b.extend((v.len() as u32).to_le_bytes());
            b.extend(v);
        };
        let mut buf = vec![TAG_OK];
        buf.extend(2u32.to_le_bytes());
        for kind in [ACTION_DELIVER, ACTION_DELIVER_PROPS] {
            buf.push(kind);
            s(&mut buf, b"dev-1");
            s(&mut buf, b"queue/a");
            s(&mut buf, b"hi");
            buf.extend([1, 0]);
        }
        buf.extend(1u32.to_le_bytes());
        s(&mut buf, b"wasmrule-msgid");
        s(&mut buf, b"0123");
        let (mut out, mut actions) = (Commands::new(), Vec::new());
        decode_result_v2(&buf, LIMITS, &mut out, &mut actions).unwrap();
        let shown: Vec<String> = actions.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "MQTT DELIVER dev-1 queue/a qos=1 retain=0 payload=hi",
                "MQTT DELIVER dev-1 queue/a qos=1 retain=0 prop:wasmrule-msgid=0123 payload=hi",
            ]
        );
        let mut bad = vec![TAG_OK];
        bad.extend(1u32.to_le_bytes());
        bad.push(6);
        let err = decode_result_v2(&bad, LIMITS, &mut out, &mut actions).unwrap_err();
        assert!(
            err.to_string().contains("kinds are 0 (redis) to 5"),
            "{err}"
        );
    }

    #[test]
    fn rule_errors_carry_the_message() {
        let mut out = Commands::new();
        let err = decode_result(b"\x01payload: expected value", LIMITS, &mut out).unwrap_err();
        assert_eq!(err, RuleError::Rule("payload: expected value".into()));
        let long = [vec![TAG_ERROR], vec![b'x'; 5000]].concat();
        let RuleError::Rule(m) = decode_result(&long, LIMITS, &mut out).unwrap_err() else {
            panic!()
        };
        assert_eq!(m.len(), MAX_ERROR_MESSAGE);
    }

    #[test]
    fn manifest_validation() {
        let ok = parse_manifest(br#"{"name":"r","filters":["a/+"],"extra":1}"#).unwrap();
        assert_eq!(ok.filters, vec!["a/+"]);
        for (bad, want) in [
            (&br#"{"filters":["a"]}"#[..], "missing field `name`"),
            (br#"{"name":"r","filters":[]}"#, "no filters"),
            (br#"{"name":"r","filters":["a/#/b"]}"#, "invalid"),
            (br#"{"name":"a b","filters":["a"]}"#, "name"),
            (b"\xff", "not valid manifest JSON"),
        ] {
            let err = parse_manifest(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }

    #[test]
    fn slices_are_bounds_checked() {
        let mem = [0u8; 16];
        assert!(guest_slice(&mem, 8, 8, "x").is_ok());
        assert!(guest_slice(&mem, 8, 9, "x").is_err());
        assert!(guest_slice(&mem, u32::MAX, u32::MAX, "x").is_err());
        assert_eq!(unpack(0x0000_0010_0000_0020), (0x10, 0x20));
        assert_eq!(unpack(-1), (u32::MAX, u32::MAX));
    }
}
