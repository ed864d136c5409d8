//! `wasmrule new NAME --lang LANG`: create a rule project (`wasmrule::scaffold`).

use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Rule name: a-z, 0-9 and '-'.
    name: String,
    /// Language of the project.
    #[arg(long, value_enum, default_value = "rust")]
    lang: wasmrule::scaffold::Lang,
    /// Rule ABI: 1 (commands out), or 2 (the rule also reads Redis and returns MQTT
    /// actions).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
    abi: u32,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    wasmrule::scaffold::create(Path::new("."), name, args.lang, args.abi)?;
    println!("created {name}/: cd {name} && ./build.sh && wasmrule test {name}.wasm cases.json");
    Ok(ExitCode::SUCCESS)
}
