//! `wasmrule test RULE.wasm CASES.json`: run a rule against a case file
//! (`wasmrule::rule_test`) and print what passed and a diff of what did not.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::shared::{ServingArgs, exit_code, load_rule, offline_engine};

#[derive(clap::Args)]
pub struct Args {
    /// The rule (.wasm).
    rule: PathBuf,
    /// Case file (JSON, see docs/writing-rules.md).
    cases: PathBuf,
    #[command(flatten)]
    serving: ServingArgs,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let (rule_path, cases_path) = (&args.rule, &args.cases);
    let serving = args.serving.serving()?;
    let engine = offline_engine(serving.engine_limits().clone())?;
    let rule = load_rule(&engine, rule_path).with_context(|| format!("{}", rule_path.display()))?;
    serving.check_load(&rule).map_err(|e| {
        anyhow::anyhow!(
            "{}: wasmrule run would refuse to load it: {e}",
            rule_path.display()
        )
    })?;
    let text = std::fs::read_to_string(cases_path)
        .with_context(|| format!("cannot read case file {}", cases_path.display()))?;
    let file = wasmrule::rule_test::parse(&text)
        .with_context(|| format!("case file {}", cases_path.display()))?;
    if let Some(name) = &file.rule
        && *name != rule.manifest().name
    {
        anyhow::bail!(
            "{} is rule {:?}, but the case file {} is for rule {name:?}",
            rule_path.display(),
            rule.manifest().name,
            cases_path.display()
        );
    }
    let results = wasmrule::rule_test::run(&rule, &serving, &file);
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for r in &results {
        match &r.failure {
            None => println!("ok    {}", r.name),
            Some(why) => println!("FAIL  {}\n{}", r.name, why.trim_end()),
        }
    }
    println!(
        "{}: {} passed, {failed} failed",
        rule_path.display(),
        results.len() - failed
    );
    Ok(exit_code(failed))
}
