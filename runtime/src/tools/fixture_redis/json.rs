//! A fixture's JSON (docs/writing-rules.md, "Redis fixtures") into the model's typed
//! values: a string, or an object with one type member and an optional `pttl`.

use anyhow::{Context, bail};
use serde_json::Value as Json;
use wasmrule_redis_model::{Data, Store};

/// Text of a JSON scalar used as a Redis string: strings as they are, numbers as
/// written.
fn text(v: &Json) -> anyhow::Result<String> {
    match v {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        other => bail!("expected a string or a number, got {other}"),
    }
}

fn texts(v: &Json) -> anyhow::Result<Vec<String>> {
    match v {
        Json::Array(items) => items.iter().map(text).collect(),
        other => bail!("expected an array of strings, got {other}"),
    }
}

/// Field-value pairs: an object (fields in name order, as JSON objects have no
/// order here) or an array of `[field, value]` pairs (in that order).
fn pairs(v: &Json) -> anyhow::Result<Vec<(String, String)>> {
    match v {
        Json::Object(m) => m.iter().map(|(k, v)| Ok((k.clone(), text(v)?))).collect(),
        Json::Array(items) => items
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([f, v]) => Ok((text(f)?, text(v)?)),
                _ => bail!("expected [field, value], got {p}"),
            })
            .collect(),
        other => bail!("expected an object or an array of [field, value] pairs, got {other}"),
    }
}

fn score(v: &Json) -> anyhow::Result<f64> {
    match v {
        Json::Number(n) => n.as_f64().context("a score out of range"),
        Json::String(s) => match s.as_str() {
            "inf" | "+inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            s => s
                .parse()
                .ok()
                .filter(|x: &f64| !x.is_nan())
                .context("a score is a number"),
        },
        other => bail!("a score is a number, got {other}"),
    }
}

fn stream_id(s: &str) -> anyhow::Result<(u64, u64)> {
    let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
    Ok((
        ms.parse().context("a stream id is <ms>-<seq>")?,
        seq.parse().context("a stream id is <ms>-<seq>")?,
    ))
}

/// One key of the fixture: a string, or an object with one type member and an optional
/// `pttl`.
pub(super) fn add(store: &mut Store, key: &str, value: &Json) -> anyhow::Result<()> {
    let obj = match value {
        Json::String(_) | Json::Number(_) => {
            store.set(key, text(value)?);
            return Ok(());
        }
        Json::Object(obj) => obj,
        other => bail!("expected a string, a number or an object, got {other}"),
    };
    let mut kinds = obj.iter().filter(|(k, _)| *k != "pttl");
    let (Some((kind, v)), None) = (kinds.next(), kinds.next()) else {
        bail!(
            "an object value has exactly one of string, hash, list, set, zset, stream, \
             hyperloglog (and optionally pttl)"
        );
    };
    let data = match kind.as_str() {
        "string" => Data::String(text(v)?.into_bytes()),
        "hash" => {
            let mut h: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for (f, val) in pairs(v)? {
                h.retain(|(x, _)| x != f.as_bytes());
                h.push((f.into_bytes(), val.into_bytes()));
            }
            Data::Hash(h)
        }
        "list" => Data::List(texts(v)?.into_iter().map(String::into_bytes).collect()),
        "set" | "hyperloglog" => {
            let mut members: Vec<Vec<u8>> = Vec::new();
            for m in texts(v)? {
                if !members.iter().any(|x| *x == m.as_bytes()) {
                    members.push(m.into_bytes());
                }
            }
            if kind == "set" {
                Data::Set(members)
            } else {
                Data::HyperLogLog(members)
            }
        }
        "zset" => {
            let members: Vec<(String, f64)> = match v {
                Json::Object(m) => m
                    .iter()
                    .map(|(k, s)| Ok((k.clone(), score(s)?)))
                    .collect::<anyhow::Result<_>>()?,
                Json::Array(items) => items
                    .iter()
                    .map(|p| match p.as_array().map(Vec::as_slice) {
                        Some([m, s]) => Ok((text(m)?, score(s)?)),
                        _ => bail!("expected [member, score], got {p}"),
                    })
                    .collect::<anyhow::Result<_>>()?,
                other => bail!("a zset is an object of members to scores, got {other}"),
            };
            store.insert(key, Data::ZSet(Vec::new()));
            for (m, s) in members {
                store.zadd(key, s, m);
            }
            return pttl(store, key, obj);
        }
        "stream" => {
            let Json::Array(entries) = v else {
                bail!("a stream is an array of {{\"id\": \"<ms>-<seq>\", \"fields\": ...}}");
            };
            store.insert(key, Data::Stream(Vec::new()));
            for e in entries {
                let id = e
                    .get("id")
                    .and_then(Json::as_str)
                    .context("a stream entry has an id")?;
                let fields = pairs(e.get("fields").context("a stream entry has fields")?)?;
                store.xadd(key, stream_id(id)?, fields);
            }
            return pttl(store, key, obj);
        }
        other => {
            bail!("unknown type {other:?}: string, hash, list, set, zset, stream or hyperloglog")
        }
    };
    store.insert(key, data);
    pttl(store, key, obj)
}

fn pttl(store: &mut Store, key: &str, obj: &serde_json::Map<String, Json>) -> anyhow::Result<()> {
    if let Some(ms) = obj.get("pttl") {
        let ms = ms
            .as_i64()
            .filter(|ms| *ms > 0)
            .context("pttl is a positive number of ms")?;
        store.pexpire(key, ms);
    }
    Ok(())
}
