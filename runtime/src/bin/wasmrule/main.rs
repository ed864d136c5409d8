//! The `wasmrule` command: parses flags, sets up logging, and runs the subcommand
//! (`commands/`, one file each). Everything else is the library's.

mod commands;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::Command;

// Every event allocates a wasmtime Store and frees it; compiling rules allocates a lot
// and frees it. mimalloc is faster at the first and returns memory better after the
// second than glibc's allocator (docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wasmrule",
    version,
    about = "Run WebAssembly rules on MQTT messages and write the results to Redis"
)]
struct Cli {
    /// Log lines as text (the default) or as JSON objects, one a line, with the
    /// event's fields (tenant, rule, version, topic, ...) as keys.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    disable_huge_pages();
    let cli = Cli::parse();
    init_logging(cli.command.default_log_filter(), cli.log_format);
    match cli.command.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Transparent huge pages make the allocator's and wasmtime's mostly-idle regions cost
/// 2 MiB of RSS each; wasmrule's memory is many small live objects, so opt out.
fn disable_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn init_logging(default: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WASMRULE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // tracing's JSON layer, the fields at the top level next to `timestamp`,
        // `level` and `message` (wasmrule logs no spans).
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
