//! The AssemblyScript project of `wasmrule new`: the SDK copied in, the rule,
//! `package.json` and `build.sh`.

const SDK_AS: &str = include_str!("../../../../guest-sdk/assemblyscript/wasmrule.ts");

/// The starting AssemblyScript rule of ABI v1.
pub(super) fn as_rule(name: &str) -> String {
    format!(
        r#"// {name}: counts messages per topic under {name}/ in the Redis hash {name}.

import {{ Event, Output, manifest, run }} from "./wasmrule";
export {{ wasmrule_abi_version_1, wasmrule_alloc }} from "./wasmrule";

function rule(event: Event, out: Output): void {{
  out.command("HINCRBY").arg("{name}").argBytes(event.topic()).arg("1");
}}

export function wasmrule_manifest(): u64 {{
  return manifest("{name}", "0.1.0", ["{name}/#"]);
}}

export function wasmrule_on_event(ptr: usize, len: u32): u64 {{
  return run(ptr, len, rule);
}}
"#
    )
}

/// The starting AssemblyScript rule of ABI v2: a read, a write and a publish.
pub(super) fn as_rule_v2(name: &str) -> String {
    format!(
        r#"// {name}: counts messages per topic under {name}/ in the Redis hash {name}, and
// announces a topic it has not counted before on {name}-events/new-topic.

import {{ Actions, Bytes, Event, ReadCode, hget, manifest, runV2 }} from "./wasmrule";
export {{ wasmrule_abi_version_2, wasmrule_alloc }} from "./wasmrule";

function rule(event: Event, out: Actions): void {{
  const seen = hget(Bytes.of("{name}"), event.topic());
  if (seen.code != ReadCode.Ok) {{
    out.error("cannot read the count");
    return;
  }}
  out.command("HINCRBY").arg("{name}").argBytes(event.topic()).arg("1");
  if (seen.value.isNil()) out.publish(Bytes.of("{name}-events/new-topic"), event.topic());
}}

export function wasmrule_manifest(): u64 {{
  return manifest("{name}", "0.1.0", ["{name}/#"]);
}}

export function wasmrule_on_event(ptr: usize, len: u32): u64 {{
  return runV2(ptr, len, rule);
}}
"#
    )
}

pub(super) fn assemblyscript(name: &str, rule: String) -> Vec<(String, String)> {
    vec![
        ("wasmrule.ts".into(), SDK_AS.into()),
        (format!("{name}.ts"), rule),
        (
            "package.json".into(),
            format!(
                r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "devDependencies": {{
    "assemblyscript": "0.28.20"
  }}
}}
"#
            ),
        ),
        (
            "build.sh".into(),
            format!(
                r#"#!/usr/bin/env bash
# Builds {name}.wasm with AssemblyScript (installed into node_modules on first run).
# --runtime stub: no garbage collector (an instance lives for one event);
# --use abort=: an abort traps instead of importing a host function.
set -euo pipefail
cd "$(dirname "$0")"
[ -x node_modules/.bin/asc ] || npm install --no-audit --no-fund --loglevel=error
node_modules/.bin/asc {name}.ts -o {name}.wasm --runtime stub --use abort= -Oz
ls -l {name}.wasm
"#
            ),
        ),
        (".gitignore".into(), "/node_modules\n*.wasm\n".into()),
    ]
}
