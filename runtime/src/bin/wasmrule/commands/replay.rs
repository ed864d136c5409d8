//! `wasmrule replay FILES... --rules DIR (--dry-run | --redis-url URL)`: recorded
//! events through a rules directory, compared with what was recorded, and with
//! `--redis-url` written to Redis (`wasmrule::replay`, docs/replay.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use wasmrule::replay::{ReplayOptions, parse_time, replay};

use super::shared::offline_engine;

#[derive(clap::Args)]
pub struct Args {
    /// Recording directories (`--record DIR`, `wasmrule record --out DIR`) or segment
    /// files, read in the order given.
    #[arg(required = true, value_name = "FILES")]
    files: Vec<PathBuf>,
    /// The rules to replay through, laid out as `wasmrule run`'s rules directory.
    #[arg(long, value_name = "DIR")]
    rules: PathBuf,
    /// Write nothing; answer reads from the recording; report the differences.
    #[arg(long, conflicts_with = "redis_url")]
    dry_run: bool,
    /// Write the rules' commands to this Redis (and read from it): to rebuild or repair
    /// state.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// The config file whose tenants (key prefixes, command sets, limits) apply, as
    /// `wasmrule run --config` would.
    #[arg(long, env = "WASMRULE_CONFIG")]
    config: Option<PathBuf>,
    /// Only events received at or after this time: ms since the Unix epoch, or RFC 3339
    /// in UTC (2026-12-02T11:00:00Z).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Only events received before this time.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Examples of differences shown per rule.
    #[arg(long, default_value_t = 3)]
    examples: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when some rule's output differs from the recording.
    #[arg(long)]
    exit_code: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if !args.dry_run && args.redis_url.is_none() {
        bail!(
            "say what to do with the rules' output: --dry-run to compare it with the \
             recording, or --redis-url URL to write it"
        );
    }
    let time = |t: &Option<String>, flag: &str| {
        t.as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|e| e.context(flag.to_owned()))
    };
    let opts = ReplayOptions {
        files: args.files.clone(),
        rules_dir: args.rules.clone(),
        config: args.config.clone(),
        redis_url: args.redis_url.clone(),
        from_ms: time(&args.from, "--from")?,
        to_ms: time(&args.to, "--to")?,
        examples: args.examples,
    };
    let config = wasmrule::Config::load(opts.config.as_deref(), &wasmrule::Overrides::default())?;
    let engine = offline_engine(config.limits.clone())?;
    let report = replay(&engine, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if args.exit_code && report.differs() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
