//! `wasmrule status`: a terminal summary of a running wasmrule (`wasmrule::status`).

use std::process::ExitCode;

use super::shared::async_runtime;

#[derive(clap::Args)]
pub struct Args {
    /// The running instance's HTTP endpoint (its `http_addr`).
    #[arg(long, default_value = wasmrule::DEFAULT_HTTP_ADDR)]
    http_addr: String,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let addr = args.http_addr.parse().map_err(|_| {
        anyhow::anyhow!(
            "--http-addr: {:?} is not an address like 127.0.0.1:9464",
            args.http_addr
        )
    })?;
    let text = async_runtime()?.block_on(wasmrule::status::summary(addr))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
