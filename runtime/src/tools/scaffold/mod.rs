//! `wasmrule new NAME --lang rust|c|assemblyscript [--abi 2]`: a rule project that
//! builds with `./build.sh` into `NAME.wasm` and passes `wasmrule test NAME.wasm
//! cases.json` as created. The SDK files are copied into the project (they are compiled
//! into this binary), so the project builds anywhere, with no path back to this
//! repository.
//!
//! The starting rule counts messages per topic: filter `NAME/#`,
//! `HINCRBY NAME <topic> 1`; with `--abi 2` it also reads `HGET NAME <topic>` first and
//! announces a topic it has not counted before on `NAME-events/new-topic`.
//!
//! This file owns the choice and the files every project has; `rust.rs`, `c.rs` and
//! `assemblyscript.rs` each one language's files.

mod assemblyscript;
mod c;
mod rust;

use std::path::Path;

use anyhow::{Context, bail};

use assemblyscript::{as_rule, as_rule_v2, assemblyscript};
use c::{c, c_rule, c_rule_v2};
use rust::{rust, rust_rule, rust_rule_v2};

/// Languages `wasmrule new` can scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    C,
    Assemblyscript,
}

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
        (Lang::C, 1) => c(name, c_rule(name)),
        (Lang::C, 2) => c(name, c_rule_v2(name)),
        (Lang::Assemblyscript, 1) => assemblyscript(name, as_rule(name)),
        (Lang::Assemblyscript, 2) => assemblyscript(name, as_rule_v2(name)),
        (_, n) => bail!("rule ABI {n} does not exist: 1, or 2 (reads and actions)"),
    };
    let common = if abi == 2 {
        common_v2(name, lang)
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
fn common_v2(name: &str, lang: Lang) -> Vec<(String, String)> {
    let unit_tests = if lang == Lang::Rust {
        "cargo test                                  # the unit tests, reads from a FakeRedis\n"
    } else {
        ""
    };
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
         {unit_tests}\
         wasmrule test {name}.wasm cases.json        # the cases in cases.json\n\
         wasmrule check {name}.wasm                  # what the rule declares\n```\n\n\
         A case gives the Redis the rule reads (`\"redis\"`, keys to values), the event, and \
         the actions expected out, as `wasmrule eval --redis FILE` prints them.\n"
    );
    vec![("cases.json".into(), cases), ("README.md".into(), readme)]
}
