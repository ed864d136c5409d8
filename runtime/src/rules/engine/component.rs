//! Component rules: the WIT world `wasmrule:rule@1.0.0` (`guest-sdk/wit/rule.wit`), the
//! same contract as the core ABI with typed functions. Checked at load (no imports, the
//! handler interface at a supported version), then invoked in a fresh instance per
//! event like core modules, under the same limits. A component exporting the handler
//! of `wasmrule:rule@2.0.0` is ABI v2's (`component_v2.rs`); this file tells them apart
//! and builds the event record both take.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Deserialize;
use wasmtime::Store;
use wasmtime::component::Component;

use super::component_v2;
use super::reuse::Pool;
use super::reuse_component::WarmComponent;
use super::reuse_component_plan::{ACCESS, ComponentPlan};
use super::{Ctx, Engine, Failure, InvokeLimits, LoadError, Manifest, RuleError, abi};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "rule",
    });
}

use bindings::exports::wasmrule::rule::handler;

/// The interface a component rule exports, with the version this runtime supports.
pub const HANDLER: &str = "wasmrule:rule/handler";
pub const WORLD_VERSION: &str = "1.0.0";
/// Every world version this runtime loads, for messages.
const SUPPORTED: &str = "1.0.0 and @2.0.0";

/// A checked, pre-linked component, of world version 1 or 2, with its warm instances
/// if it can be reset in place (`reuse_component.rs`).
pub(super) struct ComponentParts {
    world: World,
    pub(super) plan: Option<ComponentPlan>,
    pub(super) pool: Pool<WarmComponent>,
}

/// The pre-linked component and where its handler's exports are (found once, not per
/// instance).
enum World {
    V1(bindings::RulePre<Ctx>, bindings::RuleIndices),
    V2(component_v2::Parts),
}

/// The handler export of one instance.
pub(super) enum Handler {
    V1(bindings::Rule),
    V2(component_v2::bindings::Rule),
}

impl ComponentParts {
    /// The core ABI version the component's world matches.
    pub(super) fn abi(&self) -> u32 {
        match self.world {
            World::V1(..) => 1,
            World::V2(_) => 2,
        }
    }

    /// A new instance in `store` and its handler.
    pub(super) fn instantiate(
        &self,
        store: &mut Store<Ctx>,
    ) -> Result<(wasmtime::component::Instance, Handler), Failure> {
        let failed = |e: wasmtime::Error| RuleError::Instantiate(format!("{e:#}"));
        let instance = match &self.world {
            World::V1(pre, _) => pre.instance_pre().instantiate(&mut *store),
            World::V2(v2) => v2.pre.instance_pre().instantiate(&mut *store),
        }
        .map_err(failed)?;
        let handler = match &self.world {
            World::V1(_, indices) => indices.load(&mut *store, &instance).map(Handler::V1),
            World::V2(v2) => v2.indices.load(&mut *store, &instance).map(Handler::V2),
        }
        .map_err(failed)?;
        Ok((instance, handler))
    }
}

/// Checks `component` (the handler at a supported version; for version 1 no imports)
/// and pre-links it; `plan` says how to reset its instances, if they can be.
pub(super) fn prepare(
    engine: &Engine,
    component: &Component,
    plan: Option<ComponentPlan>,
) -> Result<ComponentParts, LoadError> {
    let world = world(engine, component)?;
    Ok(ComponentParts {
        world,
        plan,
        pool: Pool::default(),
    })
}

fn world(engine: &Engine, component: &Component) -> Result<World, LoadError> {
    let w = &engine.inner.wasmtime;
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(w)
        .map(|(n, _)| n.to_owned())
        .filter(|n| n != ACCESS)
        .collect();
    if exports.contains(&format!("{HANDLER}@{}", component_v2::WORLD_VERSION)) {
        return component_v2::prepare(engine, component).map(World::V2);
    }
    if let Some((name, _)) = ty.imports(w).next() {
        return Err(LoadError::ComponentImport(name.to_owned()));
    }
    let wanted = format!("{HANDLER}@{WORLD_VERSION}");
    if !exports.contains(&wanted) {
        let found = exports
            .iter()
            .find_map(|n| n.strip_prefix(HANDLER).and_then(|v| v.strip_prefix('@')));
        return Err(match found {
            Some(v) => LoadError::ComponentVersion {
                found: v.to_owned(),
                supported: SUPPORTED,
            },
            None => LoadError::NotARuleComponent(exports.join(", ")),
        });
    }
    let pre = engine
        .inner
        .component_linker
        .instantiate_pre(component)
        .and_then(bindings::RulePre::new)
        .map_err(super::compile_error)?;
    let indices = bindings::RuleIndices::new(pre.instance_pre()).map_err(super::compile_error)?;
    Ok(World::V1(pre, indices))
}

/// Instantiates the component once and calls `manifest`.
pub(super) fn read_manifest(
    parts: &ComponentParts,
    store: &mut Store<Ctx>,
) -> Result<Manifest, Failure> {
    let pre = match &parts.world {
        World::V1(pre, _) => pre,
        World::V2(v2) => return component_v2::read_manifest(v2, store),
    };
    let rule = pre
        .instantiate(&mut *store)
        .map_err(|e| RuleError::Instantiate(format!("{e:#}")))?;
    let m = rule.wasmrule_rule_handler().call_manifest(&mut *store)?;
    // Validate exactly as a core module's manifest is validated.
    let json = serde_json::json!({ "name": m.name, "version": m.version, "filters": m.filters });
    abi::parse_manifest(json.to_string().as_bytes())
        .map_err(|e| Failure::Rule(RuleError::Abi(e.to_string())))
}

#[derive(Deserialize)]
struct EventFields<'a> {
    #[serde(borrow, default)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    clientid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    topic: Cow<'a, str>,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
    #[serde(borrow, default)]
    payload: Cow<'a, str>,
    #[serde(borrow, default)]
    payload_encoding: Option<Cow<'a, str>>,
    #[serde(default)]
    timestamp: u64,
    #[serde(borrow, default)]
    node: Cow<'a, str>,
}

/// The typed event record for the event JSON the host built.
pub(super) fn event_record(json: &[u8]) -> Result<handler::Event, RuleError> {
    let f: EventFields =
        serde_json::from_slice(json).map_err(|e| RuleError::Abi(format!("event JSON: {e}")))?;
    let payload = match f.payload_encoding.as_deref() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(f.payload.as_bytes())
            .map_err(|e| RuleError::Abi(format!("event payload base64: {e}")))?,
        _ => f.payload.as_bytes().to_vec(),
    };
    Ok(handler::Event {
        event: f.event.into_owned(),
        id: f.id.into_owned(),
        clientid: f.clientid.map(Cow::into_owned),
        username: f.username.map(Cow::into_owned),
        topic: f.topic.into_owned(),
        qos: f.qos,
        retain: f.retain,
        payload,
        timestamp: f.timestamp,
        node: f.node.into_owned(),
        json: String::from_utf8_lossy(json).into_owned(),
    })
}

/// The rule's own error (`Err(message)` from `on-event`), cut to 1 KiB as for core
/// modules.
pub(super) fn rule_error(msg: String) -> RuleError {
    let cut = msg.floor_char_boundary(1024);
    RuleError::Rule(msg[..cut].to_owned())
}

/// A result of `count` commands or actions taking `bytes` (in the core ABI's layout)
/// against the invocation's output limits.
pub(super) fn check_output(
    count: usize,
    bytes: usize,
    limits: &InvokeLimits,
) -> Result<(), RuleError> {
    if count > limits.max_commands {
        return Err(RuleError::TooManyCommands {
            count,
            max: limits.max_commands,
        });
    }
    if bytes > limits.max_output_bytes {
        return Err(RuleError::OutputTooLarge {
            bytes,
            max: limits.max_output_bytes,
        });
    }
    Ok(())
}

/// One event in a fresh instance; appends the commands to `output.out` (and, for a
/// version 2 component, MQTT actions to `output.actions`).
pub(super) fn invoke(
    parts: &ComponentParts,
    store: &mut Store<Ctx>,
    event: &[u8],
    output: super::core::Output<'_>,
    limits: &InvokeLimits,
    max_args: usize,
) -> Result<usize, Failure> {
    let (_, handler) = parts.instantiate(store)?;
    call(&handler, store, event, output, limits, max_args)
}

/// One event in the instance `handler` belongs to.
pub(super) fn call(
    handler: &Handler,
    store: &mut Store<Ctx>,
    event: &[u8],
    output: super::core::Output<'_>,
    limits: &InvokeLimits,
    max_args: usize,
) -> Result<usize, Failure> {
    let rule = match handler {
        Handler::V1(rule) => rule,
        Handler::V2(rule) => {
            return component_v2::call(rule, store, event, output, limits, max_args);
        }
    };
    let out = output.out;
    let record = event_record(event)?;
    let result = rule
        .wasmrule_rule_handler()
        .call_on_event(&mut *store, &record)?;
    let commands = result.map_err(rule_error)?;
    let bytes: usize = commands.iter().flatten().map(|a| a.len() + 4).sum();
    check_output(commands.len(), bytes, limits)?;
    for (i, c) in commands.iter().enumerate() {
        if c.is_empty() || c.len() > max_args {
            return Err(RuleError::Abi(format!(
                "command {i} has {} arguments (1 to {max_args})",
                c.len()
            ))
            .into());
        }
    }
    for c in &commands {
        out.push(c.iter());
    }
    Ok(commands.len())
}
