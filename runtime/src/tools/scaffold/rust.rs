//! The Rust project of `wasmrule new`: the SDK crates copied in, a crate for the rule,
//! its unit test and `build.sh`.

const SDK_RUST: &[(&str, &str)] = &[
    (
        "wasmrule-guest/src/lib.rs",
        include_str!("../../../../guest-sdk/src/lib.rs"),
    ),
    (
        "wasmrule-guest/src/abi.rs",
        include_str!("../../../../guest-sdk/src/abi.rs"),
    ),
    (
        "wasmrule-guest/src/abi/v2.rs",
        include_str!("../../../../guest-sdk/src/abi/v2.rs"),
    ),
    (
        "wasmrule-guest/src/abi/host.rs",
        include_str!("../../../../guest-sdk/src/abi/host.rs"),
    ),
    (
        "wasmrule-guest/src/action.rs",
        include_str!("../../../../guest-sdk/src/action.rs"),
    ),
    (
        "wasmrule-guest/src/alloc.rs",
        include_str!("../../../../guest-sdk/src/alloc.rs"),
    ),
    (
        "wasmrule-guest/src/command.rs",
        include_str!("../../../../guest-sdk/src/command.rs"),
    ),
    (
        "wasmrule-guest/src/event.rs",
        include_str!("../../../../guest-sdk/src/event.rs"),
    ),
    (
        "wasmrule-guest/src/read.rs",
        include_str!("../../../../guest-sdk/src/read.rs"),
    ),
    (
        "wasmrule-guest/src/testing.rs",
        include_str!("../../../../guest-sdk/src/testing.rs"),
    ),
    (
        "wasmrule-guest/src/testing/fake_redis.rs",
        include_str!("../../../../guest-sdk/src/testing/fake_redis.rs"),
    ),
    (
        "wasmrule-guest/src/topic.rs",
        include_str!("../../../../guest-sdk/src/topic.rs"),
    ),
    (
        "wasmrule-guest/src/value.rs",
        include_str!("../../../../guest-sdk/src/value.rs"),
    ),
    (
        "wasmrule-guest-macros/src/lib.rs",
        include_str!("../../../../guest-sdk/macros/src/lib.rs"),
    ),
    (
        "wasmrule-topic/src/lib.rs",
        include_str!("../../../../guest-sdk/topic/src/lib.rs"),
    ),
    (
        "wasmrule-redis-model/src/lib.rs",
        include_str!("../../../../guest-sdk/redis-model/src/lib.rs"),
    ),
    (
        "wasmrule-redis-model/src/read_set.rs",
        include_str!("../../../../guest-sdk/redis-model/src/read_set.rs"),
    ),
    (
        "wasmrule-redis-model/src/store.rs",
        include_str!("../../../../guest-sdk/redis-model/src/store.rs"),
    ),
    (
        "wasmrule-redis-model/src/write.rs",
        include_str!("../../../../guest-sdk/redis-model/src/write.rs"),
    ),
    (
        "wasmrule-redis-model/src/exec.rs",
        include_str!("../../../../guest-sdk/redis-model/src/exec.rs"),
    ),
    (
        "wasmrule-redis-model/src/exec/sort.rs",
        include_str!("../../../../guest-sdk/redis-model/src/exec/sort.rs"),
    ),
    (
        "wasmrule-redis-model/src/exec/sorted.rs",
        include_str!("../../../../guest-sdk/redis-model/src/exec/sorted.rs"),
    ),
    (
        "wasmrule-redis-model/src/exec/stream.rs",
        include_str!("../../../../guest-sdk/redis-model/src/exec/stream.rs"),
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
/// Linker settings every Rust rule should use (see `.cargo/config.toml` in this repo).
const RUST_CARGO_CONFIG: &str = include_str!("../../../../.cargo/config.toml");

/// The starting rule of ABI v2: a read, a write and a publish, with its unit test.
pub(super) fn rust_rule_v2(name: &str) -> String {
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

pub(super) fn rust(name: &str, rule: String) -> Vec<(String, String)> {
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
pub(super) fn rust_manifest(name: &str) -> String {
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
pub(super) fn rust_rule(name: &str) -> String {
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
pub(super) fn rust_build_script(name: &str, crate_name: &str) -> String {
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
