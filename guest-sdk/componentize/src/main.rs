//! `wasmrule-componentize`: turns a core module built with the `wit-bindgen` guest crate
//! (for `wasm32-unknown-unknown`) into a component, validated, as
//! `wasm-tools component new` does, without installing wasm-tools.
//!
//! The core module carries its WIT world in a `component-type` custom section that
//! `wit_bindgen::generate!` embeds; `wit-component` reads it, lifts the module's exports
//! to the world's typed functions and checks the result. A module that imports WASI
//! needs an adapter, which this tool does not supply: wasmrule rules import nothing, so
//! build them for `wasm32-unknown-unknown`.
//!
//! Usage: `wasmrule-componentize MODULE.wasm -o COMPONENT.wasm`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use wit_component::ComponentEncoder;

const USAGE: &str = "usage: wasmrule-componentize MODULE.wasm -o COMPONENT.wasm";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasmrule-componentize: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let (input, output) = parse_args(std::env::args().skip(1))?;
    let module =
        std::fs::read(&input).with_context(|| format!("cannot read {}", input.display()))?;
    let component = componentize(&module)
        .with_context(|| format!("cannot make a component of {}", input.display()))?;
    std::fs::write(&output, &component)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}

/// The input module and the output path from the command line.
fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (mut input, mut output) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-o" | "--output" => output = args.next().map(PathBuf::from),
            "-h" | "--help" => bail!("{USAGE}"),
            _ if a.starts_with('-') => bail!("unknown option {a}\n{USAGE}"),
            _ if input.is_none() => input = Some(PathBuf::from(a)),
            _ => bail!("more than one input\n{USAGE}"),
        }
    }
    match (input, output) {
        (Some(i), Some(o)) => Ok((i, o)),
        _ => bail!("{USAGE}"),
    }
}

/// The component of `module`, a core module with an embedded `component-type` section.
///
/// # Errors
///
/// When the module has no WIT world embedded, does not match it (a missing or mistyped
/// export), imports what no adapter provides, or the component fails validation.
fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    // wit-component would make an empty component of a module without a world, which
    // wasmrule then refuses far from the cause: say it here.
    if !has_world(module)? {
        bail!(
            "no `component-type` custom section: the module embeds no WIT world \
             (generate its bindings with wit_bindgen::generate!, and check that the build \
             does not strip custom sections)"
        );
    }
    ComponentEncoder::default()
        .module(module)?
        .validate(true)
        .encode()
}

/// Whether `module` has the `component-type:...` section(s) wit-bindgen embeds.
fn has_world(module: &[u8]) -> anyhow::Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::CustomSection(s) = payload?
            && s.name().starts_with("component-type")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = String> {
        a.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn parses_input_and_output_in_any_order() {
        let (i, o) = parse_args(args(&["-o", "out.wasm", "in.wasm"])).unwrap();
        assert_eq!(
            (i.to_str(), o.to_str()),
            (Some("in.wasm"), Some("out.wasm"))
        );
        assert!(parse_args(args(&["in.wasm"])).is_err());
        assert!(parse_args(args(&["a.wasm", "b.wasm", "-o", "c"])).is_err());
        assert!(parse_args(args(&["--nope", "a.wasm", "-o", "c"])).is_err());
    }

    #[test]
    fn a_module_without_a_world_is_refused() {
        // The smallest valid core module: no `component-type` section to lift from.
        let err = componentize(b"\0asm\x01\0\0\0").unwrap_err();
        assert!(format!("{err:#}").contains("component-type"), "{err:#}");
    }
}
