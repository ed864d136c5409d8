//! `wasmrule new NAME --lang rust|c|assemblyscript`: a rule project that builds with
//! `./build.sh` into `NAME.wasm` and passes `wasmrule test NAME.wasm cases.json` as
//! created. The SDK files are copied into the project (they are compiled into this
//! binary), so the project builds anywhere, with no path back to this repository.
//!
//! The starting rule counts messages per topic: filter `NAME/#`,
//! `HINCRBY NAME <topic> 1`.

use std::path::Path;

use anyhow::{Context, bail};

/// Languages `wasmrule new` can scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
    Assemblyscript,
}

const SDK_RUST: &[(&str, &str)] = &[
    (
        "wasmrule-guest/src/lib.rs",
        include_str!("../../../guest-sdk/src/lib.rs"),
    ),
    (
        "wasmrule-guest/src/abi.rs",
        include_str!("../../../guest-sdk/src/abi.rs"),
    ),
    (
        "wasmrule-guest/src/abi/v2.rs",
        include_str!("../../../guest-sdk/src/abi/v2.rs"),
    ),
    (
        "wasmrule-guest/src/abi/host.rs",
        include_str!("../../../guest-sdk/src/abi/host.rs"),
    ),
    (
        "wasmrule-guest/src/action.rs",
        include_str!("../../../guest-sdk/src/action.rs"),
    ),
    (
        "wasmrule-guest/src/alloc.rs",
        include_str!("../../../guest-sdk/src/alloc.rs"),
    ),
    (
        "wasmrule-guest/src/command.rs",
        include_str!("../../../guest-sdk/src/command.rs"),
    ),
    (
        "wasmrule-guest/src/event.rs",
        include_str!("../../../guest-sdk/src/event.rs"),
    ),
    (
        "wasmrule-guest/src/read.rs",
        include_str!("../../../guest-sdk/src/read.rs"),
    ),
    (
        "wasmrule-guest/src/testing.rs",
        include_str!("../../../guest-sdk/src/testing.rs"),
    ),
    (
        "wasmrule-guest/src/testing/fake_redis.rs",
        include_str!("../../../guest-sdk/src/testing/fake_redis.rs"),
    ),
    (
        "wasmrule-guest/src/topic.rs",
        include_str!("../../../guest-sdk/src/topic.rs"),
    ),
    (
        "wasmrule-guest/src/value.rs",
        include_str!("../../../guest-sdk/src/value.rs"),
    ),
    (
        "wasmrule-guest-macros/src/lib.rs",
        include_str!("../../../guest-sdk/macros/src/lib.rs"),
    ),
    (
        "wasmrule-topic/src/lib.rs",
        include_str!("../../../guest-sdk/topic/src/lib.rs"),
    ),
    (
        "wasmrule-redis-model/src/lib.rs",
        include_str!("../../../guest-sdk/redis-model/src/lib.rs"),
    ),
    (
        "wasmrule-redis-model/src/read_set.rs",
        include_str!("../../../guest-sdk/redis-model/src/read_set.rs"),
    ),
    (
        "wasmrule-redis-model/src/store.rs",
        include_str!("../../../guest-sdk/redis-model/src/store.rs"),
    ),
    (
        "wasmrule-redis-model/src/exec.rs",
        include_str!("../../../guest-sdk/redis-model/src/exec.rs"),
    ),
];
/// Manifests of the copied SDK crates (the repository's use workspace inheritance).
const SDK_GUEST_MANIFEST: &str = r#"[package]
name = "wasmrule-guest"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
description = "Write wasmrule rules in Rust (copied into this project by `wasmrule new`)"

[features]
default = ["bump-alloc"]
bump-alloc = []

[dependencies]
wasmrule-guest-macros = { path = "../wasmrule-guest-macros" }
wasmrule-topic = { path = "../wasmrule-topic" }
wasmrule-redis-model = { path = "../wasmrule-redis-model" }
serde = { version = "1", features = ["derive"] }
serde_json = { version = "1", features = ["raw_value"] }
"#;
const SDK_MACROS_MANIFEST: &str = r#"[package]
name = "wasmrule-guest-macros"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"

[lib]
proc-macro = true

[dependencies]
wasmrule-topic = { path = "../wasmrule-topic" }
syn = { version = "2", features = ["full"] }
quote = "1"
proc-macro2 = "1"
"#;
const SDK_TOPIC_MANIFEST: &str = r#"[package]
name = "wasmrule-topic"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
"#;
const SDK_REDIS_MODEL_MANIFEST: &str = r#"[package]
name = "wasmrule-redis-model"
version = "0.1.0"
edition = "2024"
license = "Apache-2.0"
"#;
const SDK_C: &str = include_str!("../../../guest-sdk/c/wasmrule.h");
const SDK_AS: &str = include_str!("../../../guest-sdk/assemblyscript/wasmrule.ts");
/// Linker settings every Rust rule should use (see `.cargo/config.toml` in this repo).
const RUST_CARGO_CONFIG: &str = include_str!("../../../.cargo/config.toml");

/// Creates `dir/NAME` with a rule project in `lang` for rule ABI `abi` (1, or 2: the
/// rule also reads Redis and publishes).
///
/// # Errors
///
/// When the name is not usable as a rule, crate and key name, the directory exists, or
/// `lang` has no ABI `abi` template.
pub fn create(dir: &Path, name: &str, lang: Lang, abi: u32) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        bail!(
            "{name:?}: a rule name here is a-z, 0-9 and '-', starting with a letter (it names the crate, the file and the Redis key)"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let files = match (lang, abi) {
        (Lang::Rust, 1) => rust(name, rust_rule(name)),
        (Lang::Rust, 2) => rust(name, rust_rule_v2(name)),
        (Lang::C, 1) => c(name),
        (Lang::Assemblyscript, 1) => assemblyscript(name),
        (_, 2) => bail!("--abi 2 projects are Rust only for now"),
        (_, n) => bail!("rule ABI {n} does not exist: 1, or 2 (reads and actions)"),
    };
    let common = if abi == 2 {
        common_v2(name)
    } else {
        common(name)
    };
    for (path, text) in files.iter().chain(&common) {
        let p = root.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    make_executable(&root.join("build.sh"))?;
    Ok(())
}

#[cfg(unix)]
fn make_executable(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", p.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

fn common(name: &str) -> Vec<(String, String)> {
    let cases = format!(
        r#"{{
  "rule": "{name}",
  "cases": [
    {{
      "name": "counts a message on its topic",
      "event": {{"topic": "{name}/dev-1", "payload": "21.5"}},
      "commands": ["HINCRBY {name} {name}/dev-1 1"]
    }},
    {{
      "name": "a topic with a space is one argument",
      "event": {{"topic": "{name}/hall 2", "payload": ""}},
      "commands": ["HINCRBY {name} \"{name}/hall 2\" 1"]
    }}
  ]
}}
"#
    );
    let readme = format!(
        "# {name}\n\nA wasmrule rule: counts messages per topic under `{name}/` in the Redis hash \
         `{name}`.\n\n```sh\n./build.sh                                  # -> {name}.wasm\n\
         wasmrule test {name}.wasm cases.json        # the cases in cases.json\n\
         wasmrule check {name}.wasm                  # what the rule declares\n\
         cp {name}.wasm /path/to/rules/              # serve it\n```\n\n\
         Change the rule, add cases to `cases.json` (an event in, the commands expected out, \
         as `wasmrule eval` prints them, or `\"error\": \"text\"`), and run the tests again.\n"
    );
    vec![("cases.json".into(), cases), ("README.md".into(), readme)]
}

/// The cases of an ABI v2 project: one with the topic new to Redis, one seen before.
fn common_v2(name: &str) -> Vec<(String, String)> {
    let cases = format!(
        r#"{{
  "rule": "{name}",
  "cases": [
    {{
      "name": "the first message on a topic is announced",
      "redis": {{}},
      "event": {{"topic": "{name}/dev-1", "payload": "21.5"}},
      "reads": ["HGET {name} {name}/dev-1"],
      "actions": [
        "HINCRBY {name} {name}/dev-1 1",
        "MQTT PUBLISH {name}-events/new-topic qos=0 retain=0 payload={name}/dev-1"
      ]
    }},
    {{
      "name": "a topic seen before is only counted",
      "redis": {{"{name}": {{"hash": {{"{name}/dev-1": "3"}}}}}},
      "event": {{"topic": "{name}/dev-1", "payload": "22"}},
      "actions": ["HINCRBY {name} {name}/dev-1 1"]
    }}
  ]
}}
"#
    );
    let readme = format!(
        "# {name}\n\nA wasmrule rule (ABI v2): counts messages per topic under `{name}/` in the \
         Redis hash `{name}`, and announces a topic it has not counted before on \
         `{name}-events/new-topic`.\n\n```sh\n./build.sh                                  # -> {name}.wasm\n\
         cargo test                                  # the unit tests, reads from a FakeRedis\n\
         wasmrule test {name}.wasm cases.json        # the cases in cases.json\n\
         wasmrule check {name}.wasm                  # what the rule declares\n```\n\n\
         A case gives the Redis the rule reads (`\"redis\"`, keys to values), the event, and \
         the actions expected out, as `wasmrule eval --redis FILE` prints them.\n"
    );
    vec![("cases.json".into(), cases), ("README.md".into(), readme)]
}

/// The starting rule of ABI v2: a read, a write and a publish, with its unit test.
fn rust_rule_v2(name: &str) -> String {
    let crate_name = name.replace('-', "_");
    format!(
        r#"//! {name}: counts messages per topic under `{name}/` in the Redis hash `{name}`, and
//! announces a topic it has not counted before on `{name}-events/new-topic`.

use wasmrule_guest::{{Action, Context, Event, RuleError, action, cmd, rule}};

#[rule(filters = ["{name}/#"])]
pub fn {crate_name}(event: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {{
    let seen = ctx.hget("{name}", event.topic())?;
    let mut out = vec![cmd::hincrby("{name}", event.topic(), 1).into()];
    if seen.is_nil() {{
        out.push(action::publish("{name}-events/new-topic", event.topic()).into());
    }}
    Ok(out)
}}

#[cfg(test)]
mod tests {{
    use super::*;
    use wasmrule_guest::testing::FakeRedis;

    #[test]
    fn announces_new_topics_only() {{
        let mut redis = FakeRedis::new();
        let event = Event::message("{name}/dev-1", "21.5");
        let first = {crate_name}(&event, &mut redis.context()).unwrap();
        assert_eq!(first.len(), 2);
        redis.hset("{name}", "{name}/dev-1", "1");
        let again = {crate_name}(&event, &mut redis.context()).unwrap();
        assert_eq!(again[0].to_string(), "HINCRBY {name} {name}/dev-1 1");
        assert_eq!(again.len(), 1);
    }}
}}
"#
    )
}

fn rust(name: &str, rule: String) -> Vec<(String, String)> {
    let crate_name = name.replace('-', "_");
    let mut files: Vec<(String, String)> = SDK_RUST
        .iter()
        .map(|(p, t)| (format!("sdk/{p}"), t.to_string()))
        .collect();
    files.push((
        "sdk/wasmrule-guest/Cargo.toml".into(),
        SDK_GUEST_MANIFEST.into(),
    ));
    files.push((
        "sdk/wasmrule-guest-macros/Cargo.toml".into(),
        SDK_MACROS_MANIFEST.into(),
    ));
    files.push((
        "sdk/wasmrule-topic/Cargo.toml".into(),
        SDK_TOPIC_MANIFEST.into(),
    ));
    files.push((
        "sdk/wasmrule-redis-model/Cargo.toml".into(),
        SDK_REDIS_MODEL_MANIFEST.into(),
    ));
    files.push(("Cargo.toml".into(), rust_manifest(name)));
    files.push((".cargo/config.toml".into(), RUST_CARGO_CONFIG.into()));
    files.push(("src/lib.rs".into(), rule));
    files.push(("build.sh".into(), rust_build_script(name, &crate_name)));
    files.push((".gitignore".into(), "/target\n*.wasm\n".into()));
    files
}

/// The rule project's manifest: a cdylib for the rule, an rlib for `cargo test`.
fn rust_manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the .wasm rule; rlib: the same code native, for `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
wasmrule-guest = {{ path = "sdk/wasmrule-guest" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A project of its own, even when created inside another workspace.
[workspace]
"#
    )
}

/// The starting rule and its unit test.
fn rust_rule(name: &str) -> String {
    let crate_name = name.replace('-', "_");
    format!(
        r#"//! {name}: counts messages per topic under `{name}/` in the Redis hash `{name}`.

use wasmrule_guest::{{Command, Event, cmd, rule}};

#[rule(filters = ["{name}/#"])]
pub fn {crate_name}(event: &Event) -> Command {{
    cmd::hincrby("{name}", event.topic(), 1)
}}

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn counts_by_topic() {{
        let c = {crate_name}(&Event::message("{name}/dev-1", "21.5"));
        assert_eq!(c.to_string(), "HINCRBY {name} {name}/dev-1 1");
    }}
}}
"#
    )
}

/// `./build.sh`: the release build for wasm32, copied to `NAME.wasm`.
fn rust_build_script(name: &str, crate_name: &str) -> String {
    format!(
        r#"#!/usr/bin/env bash
# Builds {name}.wasm (needs: rustup target add wasm32-unknown-unknown).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --target wasm32-unknown-unknown
cp "${{CARGO_TARGET_DIR:-target}}/wasm32-unknown-unknown/release/{crate_name}.wasm" {name}.wasm
ls -l {name}.wasm
"#
    )
}

fn c(name: &str) -> Vec<(String, String)> {
    let ident = name.replace('-', "_");
    vec![
        ("wasmrule.h".into(), SDK_C.into()),
        (
            format!("{name}.c"),
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
            ),
        ),
        (
            "build.sh".into(),
            format!(
                r#"#!/usr/bin/env bash
# Builds {name}.wasm with clang and lld (apt-get install -y clang lld); no libc.
set -euo pipefail
cd "$(dirname "$0")"
clang --target=wasm32 -nostdlib -ffreestanding -Oz -mbulk-memory -Wall -Wextra -Werror \
    -Wl,--no-entry -Wl,--strip-all -I . -o {name}.wasm {name}.c
ls -l {name}.wasm
"#
            ),
        ),
        (".gitignore".into(), "*.wasm\n".into()),
    ]
}

fn assemblyscript(name: &str) -> Vec<(String, String)> {
    vec![
        ("wasmrule.ts".into(), SDK_AS.into()),
        (
            format!("{name}.ts"),
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
            ),
        ),
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
