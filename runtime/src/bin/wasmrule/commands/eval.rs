//! `wasmrule eval RULE.wasm --event FILE [--redis FIXTURE]`: run one rule on one event,
//! offline, and print its commands in `redis-cli` syntax and its MQTT actions
//! (`wasmrule::offline::action_line`); an ABI v2 rule's reads are answered from the
//! fixture.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::shared::{ServingArgs, load_rule, offline_engine};

#[derive(clap::Args)]
pub struct Args {
    /// The rule (.wasm).
    rule: PathBuf,
    /// Event JSON file, or `-` for standard input. Missing fields get defaults, so
    /// {"topic":"a/b","payload":"..."} is enough.
    #[arg(long)]
    event: PathBuf,
    /// The Redis an ABI v2 rule's reads see: a JSON file of keys to values (see
    /// docs/writing-rules.md, "Redis fixtures"). Without it, every key is missing.
    #[arg(long, value_name = "FILE")]
    redis: Option<PathBuf>,
    /// Also print each read the rule made, and its reply, on standard error.
    #[arg(long)]
    show_reads: bool,
    #[command(flatten)]
    serving: ServingArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (rule_path, event_path) = (&args.rule, &args.event);
    let serving = args.serving.serving()?;
    let engine = offline_engine(serving.engine_limits().clone())?;
    let rule = load_rule(&engine, rule_path).with_context(|| format!("{}", rule_path.display()))?;
    if let Err(e) = serving.check_load(&rule) {
        eprintln!("error: wasmrule run would refuse to load this rule: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let redis = match &args.redis {
        Some(path) => wasmrule::fixture_redis::Fixture::load(path)?,
        None => wasmrule::fixture_redis::Fixture::empty(),
    };
    let event = wasmrule::complete_event(&read_event(event_path)?, "wasmrule@eval")
        .with_context(|| format!("event {}", event_path.display()))?;
    // A broker event is matched on its `$events/...` topic, a message on its `topic`.
    let topic = wasmrule::routing_topic(&event)?;
    let filters = &rule.manifest().filters;
    if !filters.iter().any(|f| wasmrule::topic_matches(f, &topic)) {
        let what = if topic.starts_with("$events/") {
            "event topic"
        } else {
            "topic"
        };
        eprintln!(
            "note: {what} {topic:?} matches none of the rule's filters ({}); a running \
             wasmrule would not call it. Running it anyway.",
            filters.join(" ")
        );
    }
    match serving.run(&rule, &event, &redis) {
        Ok(out) => {
            if args.show_reads {
                for r in &out.reads {
                    eprintln!("read: {r}");
                }
            }
            for line in out.lines() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: rule {}: {e}", rule.manifest().name);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The event file's bytes, or standard input's for `-`.
fn read_event(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read the event from standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read event file {}", path.display()))
    }
}
