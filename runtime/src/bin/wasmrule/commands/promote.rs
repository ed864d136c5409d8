//! `wasmrule promote [--rules-dir DIR] NAME`: make a rule's canary its live version by
//! renaming `NAME.canary.wasm` over `NAME.wasm` (docs/canary.md). A rename is the
//! reloader's nothing-lost swap: the running wasmrule sees the live file replaced (the
//! new version serves the next event, in-flight events finish on the old one) and the
//! canary gone. The canary is compiled first, so a file that would not load is not
//! promoted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::shared::{load_rule, offline_engine};

#[derive(clap::Args)]
pub struct Args {
    /// Directory of rule files (as `wasmrule run --rules-dir`).
    #[arg(
        long,
        visible_alias = "rules",
        env = "WASMRULE_RULES_DIR",
        default_value = wasmrule::DEFAULT_RULES_DIR
    )]
    rules_dir: PathBuf,
    /// The rule: `NAME` (default tenant) or `TENANT/NAME`, without `.wasm`.
    name: String,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (live, canary) = paths(&args.rules_dir, &args.name)?;
    if !canary.exists() {
        bail!(
            "rule {} has no canary: {} does not exist",
            args.name,
            canary.display()
        );
    }
    let engine = offline_engine(wasmrule::engine::Limits::default())?;
    let new = load_rule(&engine, &canary)
        .with_context(|| format!("canary {} does not load; not promoted", canary.display()))?;
    // The version being replaced, if the live file is there and loads.
    let old = load_rule(&engine, &live).ok();
    std::fs::rename(&canary, &live)
        .with_context(|| format!("cannot rename {} to {}", canary.display(), live.display()))?;
    let version = |r: &wasmrule::engine::Rule| {
        r.manifest()
            .version
            .clone()
            .unwrap_or_else(|| "(no version)".to_owned())
    };
    match old {
        Some(old) => println!(
            "promoted {}: version {} replaces version {} ({} -> {})",
            args.name,
            version(&new),
            version(&old),
            canary.display(),
            live.display()
        ),
        None => println!(
            "promoted {}: version {} is live ({} -> {})",
            args.name,
            version(&new),
            canary.display(),
            live.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The live and canary files of rule `name` under `dir`.
fn paths(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let parts: Vec<&str> = name.split('/').collect();
    let valid = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if parts.len() > 2 || !parts.iter().all(|p| valid(p)) || name.ends_with(".wasm") {
        bail!(
            "{name:?} is not a rule name: give NAME or TENANT/NAME, as the file is named \
             under the rules directory, without .wasm"
        );
    }
    let base = parts.iter().fold(dir.to_owned(), |p, s| p.join(s));
    let with = |suffix: &str| {
        let mut f = base.clone().into_os_string();
        f.push(suffix);
        PathBuf::from(f)
    };
    Ok((with(".wasm"), with(".canary.wasm")))
}
