//! The C project of `wasmrule new`: the header copied in, the rule and `build.sh`.

const SDK_C: &str = include_str!("../../../../guest-sdk/c/wasmrule.h");

/// The starting C rule of ABI v1.
pub(super) fn c_rule(name: &str) -> String {
    let ident = name.replace('-', "_");
    format!(
        r#"/* {name}: counts messages per topic under {name}/ in the Redis hash {name}. */
#include "wasmrule.h"

static int {ident}(const wr_event *ev) {{
    wr_command("HINCRBY");
    wr_arg_str("{name}");
    wr_arg(wr_event_topic(ev));
    wr_arg_str("1");
    return WR_OK;
}}

WASMRULE_RULE("{name}", "0.1.0", "[\"{name}/#\"]", {ident})
"#
    )
}

/// The starting C rule of ABI v2: a read, a write and a publish.
pub(super) fn c_rule_v2(name: &str) -> String {
    let ident = name.replace('-', "_");
    format!(
        r#"/* {name}: counts messages per topic under {name}/ in the Redis hash {name}, and
 * announces a topic it has not counted before on {name}-events/new-topic. */
#include "wasmrule.h"

static int {ident}(const wr_event *ev) {{
    wr_value seen;
    if (wr_hget(wr_cstr("{name}"), wr_event_topic(ev), &seen) != WR_READ_OK)
        return wr_error("cannot read the count");
    wr_command("HINCRBY");
    wr_arg_str("{name}");
    wr_arg(wr_event_topic(ev));
    wr_arg_str("1");
    if (seen.type == WR_NIL)
        wr_publish(wr_cstr("{name}-events/new-topic"), wr_event_topic(ev), 0, false);
    return WR_OK;
}}

WASMRULE_RULE_V2("{name}", "0.1.0", "[\"{name}/#\"]", {ident})
"#
    )
}

pub(super) fn c(name: &str, rule: String) -> Vec<(String, String)> {
    vec![
        ("wasmrule.h".into(), SDK_C.into()),
        (format!("{name}.c"), rule),
        (
            "build.sh".into(),
            format!(
                r#"#!/usr/bin/env bash
# Builds {name}.wasm with clang and lld (apt-get install -y clang lld); no libc.
set -euo pipefail
cd "$(dirname "$0")"
clang --target=wasm32 -nostdlib -ffreestanding -O2 -mbulk-memory -Wall -Wextra -Werror \
    -Wl,--no-entry -Wl,--strip-all -I . -o {name}.wasm {name}.c
ls -l {name}.wasm
"#
            ),
        ),
        (".gitignore".into(), "*.wasm\n".into()),
    ]
}
