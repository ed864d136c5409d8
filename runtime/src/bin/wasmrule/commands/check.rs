//! `wasmrule check FILE...`: validate rule modules and print each one's manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use super::shared::{exit_code, load_rule, offline_engine};

#[derive(clap::Args)]
pub struct Args {
    /// Rule files (.wasm).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let engine = offline_engine(wasmrule::engine::Limits::default())?;
    let mut failed = 0;
    for f in &args.files {
        match load_rule(&engine, f) {
            Ok(rule) => print_rule(f, &rule),
            Err(e) => {
                eprintln!("error: {}: {e:#}", f.display());
                failed += 1;
            }
        }
    }
    Ok(exit_code(failed))
}

fn print_rule(f: &std::path::Path, rule: &wasmrule::engine::Rule) {
    let m = rule.manifest();
    println!("{}: ok", f.display());
    println!("  name:    {}", m.name);
    if let Some(v) = &m.version {
        println!("  version: {v}");
    }
    match rule.kind_name() {
        "component" => println!("  abi:     component wasmrule:rule@{}.0.0", rule.abi()),
        _ => println!("  abi:     {}", rule.abi()),
    }
    println!("  filters: {}", m.filters.join(" "));
    if let Some(sdk) = &m.sdk {
        println!("  sdk:     {sdk}");
    }
    println!("  size:    {} bytes", rule.size());
}
