//! Component rules of ABI v2: the WIT world `wasmrule:rule@2.0.0`
//! (`guest-sdk/wit-v2/rule.wit`), core ABI v2 with typed functions: the component may
//! import `wasmrule:rule/redis` (reads, answered through the invocation's read state,
//! `host.rs`) and returns actions. Events are built as for version 1 (`component.rs`).

use wasmtime::Store;
use wasmtime::component::{Component, HasSelf};

use super::host::{self, ReadCode, Reply};
use super::{Ctx, Engine, Failure, InvokeLimits, LoadError, Manifest, RuleError, abi};
use crate::actions::{MqttAction, Publish};
use crate::commands::Commands;

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit-v2",
        world: "rule",
    });
}

use bindings::exports::wasmrule::rule::handler;
use bindings::wasmrule::rule::redis;

/// The world version of this file.
pub const WORLD_VERSION: &str = "2.0.0";
/// The one interface a v2 component may import.
pub const REDIS: &str = "wasmrule:rule/redis@2.0.0";

/// A checked, pre-linked v2 component.
pub(super) struct Parts {
    pub(super) pre: bindings::RulePre<Ctx>,
    /// Where the handler's exports are, found once.
    pub(super) indices: bindings::RuleIndices,
}

/// Defines the `redis` import in the component linker.
pub(super) fn define(linker: &mut wasmtime::component::Linker<Ctx>) -> anyhow::Result<()> {
    redis::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, |c| c)?;
    Ok(())
}

/// Checks that `component` imports nothing but [`REDIS`] and pre-links it.
pub(super) fn prepare(engine: &Engine, component: &Component) -> Result<Parts, LoadError> {
    let w = &engine.inner.wasmtime;
    if let Some((name, _)) = component
        .component_type()
        .imports(w)
        .find(|(n, _)| *n != REDIS)
    {
        return Err(LoadError::ComponentImport(name.to_owned()));
    }
    let pre = engine
        .inner
        .component_linker
        .instantiate_pre(component)
        .and_then(bindings::RulePre::new)
        .map_err(super::compile_error)?;
    let indices = bindings::RuleIndices::new(pre.instance_pre()).map_err(super::compile_error)?;
    Ok(Parts { pre, indices })
}

impl redis::Host for Ctx {
    fn read(&mut self, command: Vec<Vec<u8>>) -> Result<Vec<redis::Node>, redis::ReadError> {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        if args.is_empty() {
            self.reads.refused += 1;
            return Err(redis::ReadError::BadRequest);
        }
        match host::read_typed(&mut self.reads, &args) {
            Ok(reply) => {
                let mut nodes = Vec::new();
                preorder(reply, &mut nodes);
                Ok(nodes)
            }
            Err(code) => {
                self.reads.refused += 1;
                Err(match code {
                    ReadCode::NotAllowed => redis::ReadError::NotAllowed,
                    ReadCode::BadRequest => redis::ReadError::BadRequest,
                    ReadCode::OverBudget => redis::ReadError::OverBudget,
                    ReadCode::RedisError => redis::ReadError::RedisError,
                    ReadCode::Unavailable | ReadCode::NoReply | ReadCode::ShortBuffer => {
                        redis::ReadError::Unavailable
                    }
                })
            }
        }
    }
}

/// A reply as the world's nodes: each array node followed by its elements.
fn preorder(reply: Reply, out: &mut Vec<redis::Node>) {
    match reply {
        Reply::Nil => out.push(redis::Node::Nil),
        Reply::Int(i) => out.push(redis::Node::Integer(i)),
        Reply::Bulk(b) => out.push(redis::Node::Bulk(b)),
        Reply::Array(items) => {
            out.push(redis::Node::Array(items.len() as u32));
            for i in items {
                preorder(i, out);
            }
        }
    }
}

/// Instantiates the component once and calls `manifest`.
pub(super) fn read_manifest(parts: &Parts, store: &mut Store<Ctx>) -> Result<Manifest, Failure> {
    let rule = parts
        .pre
        .instantiate(&mut *store)
        .map_err(|e| RuleError::Instantiate(format!("{e:#}")))?;
    let m = rule.wasmrule_rule_handler().call_manifest(&mut *store)?;
    let json = serde_json::json!({ "name": m.name, "version": m.version, "filters": m.filters });
    abi::parse_manifest(json.to_string().as_bytes())
        .map_err(|e| Failure::Rule(RuleError::Abi(e.to_string())))
}

/// One event in the instance `rule` belongs to; Redis commands to `out`, MQTT actions
/// to `actions`.
pub(super) fn call(
    rule: &bindings::Rule,
    store: &mut Store<Ctx>,
    event: &[u8],
    output: super::core::Output<'_>,
    limits: &InvokeLimits,
    max_args: usize,
) -> Result<usize, Failure> {
    let v1 = super::component::event_record(event)?;
    let record = handler::Event {
        event: v1.event,
        id: v1.id,
        clientid: v1.clientid,
        username: v1.username,
        topic: v1.topic,
        qos: v1.qos,
        retain: v1.retain,
        payload: v1.payload,
        timestamp: v1.timestamp,
        node: v1.node,
        json: v1.json,
    };
    let result = rule
        .wasmrule_rule_handler()
        .call_on_event(&mut *store, &record)?;
    let list = result.map_err(super::component::rule_error)?;
    let bytes: usize = list.iter().map(size).sum();
    super::component::check_output(list.len(), bytes, limits)?;
    let n = list.len();
    let (mark, before) = (output.out.mark(), output.actions.len());
    let r = take(list, output.out, output.actions, max_args);
    if r.is_err() {
        output.out.truncate(mark);
        output.actions.truncate(before);
    }
    r?;
    Ok(n)
}

/// Bytes an action takes in the core ABI's layout, for `max_output_bytes`.
fn size(a: &handler::Action) -> usize {
    match a {
        handler::Action::Redis(c) => 5 + c.iter().map(|x| x.len() + 4).sum::<usize>(),
        handler::Action::Publish(m) => {
            11 + m.topic.len()
                + m.payload.len()
                + m.properties
                    .iter()
                    .map(|(k, v)| 8 + k.len() + v.len())
                    .sum::<usize>()
        }
        handler::Action::Subscribe(s) => 10 + s.clientid.len() + s.filter.len(),
        handler::Action::Unsubscribe(u) => 9 + u.clientid.len() + u.filter.len(),
        handler::Action::Deliver(d) => 15 + d.clientid.len() + d.topic.len() + d.payload.len(),
    }
}

fn qos(q: u8, i: usize) -> Result<u8, RuleError> {
    match q {
        0 | 1 => Ok(q),
        q => Err(RuleError::Abi(format!(
            "action {i}: QoS {q}; actions take QoS 0 or 1"
        ))),
    }
}

/// The actions into `out` (Redis commands) and `actions` (MQTT), checked as the core
/// decoder checks them.
fn take(
    list: Vec<handler::Action>,
    out: &mut Commands,
    actions: &mut Vec<MqttAction>,
    max_args: usize,
) -> Result<(), RuleError> {
    for (i, a) in list.into_iter().enumerate() {
        match a {
            handler::Action::Redis(c) => {
                if c.is_empty() || c.len() > max_args {
                    return Err(RuleError::Abi(format!(
                        "command {i} has {} arguments (1 to {max_args})",
                        c.len()
                    )));
                }
                out.push(c.iter());
            }
            handler::Action::Publish(m) => actions.push(MqttAction::Publish(Publish {
                qos: qos(m.qos, i)?,
                topic: m.topic,
                payload: m.payload,
                retain: m.retain,
                properties: m.properties,
            })),
            handler::Action::Subscribe(s) => actions.push(MqttAction::Subscribe {
                qos: qos(s.qos, i)?,
                client: s.clientid,
                filter: s.filter,
            }),
            handler::Action::Unsubscribe(u) => actions.push(MqttAction::Unsubscribe {
                client: u.clientid,
                filter: u.filter,
            }),
            handler::Action::Deliver(d) => actions.push(MqttAction::Deliver {
                client: d.clientid,
                message: Publish {
                    qos: qos(d.qos, i)?,
                    topic: d.topic,
                    payload: d.payload,
                    retain: d.retain,
                    properties: Vec::new(),
                },
            }),
        }
    }
    Ok(())
}
