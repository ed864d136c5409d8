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
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let name = &args.name;
    wasmrule::scaffold::create(Path::new("."), name, args.lang)?;
    println!("created {name}/: cd {name} && ./build.sh && wasmrule test {name}.wasm cases.json");
    Ok(ExitCode::SUCCESS)
}
