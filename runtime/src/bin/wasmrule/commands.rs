//! The subcommands: one file each under `commands/`, holding its flags (a clap `Args`
//! struct) and its `run`; what several share (the async runtime, the shutdown signal,
//! the offline engine) is `commands/shared.rs`. This file is the thin match.

mod check;
mod demo;
mod eval;
mod new;
mod promote;
mod record;
mod replay;
mod run;
mod shared;
mod simulate;
mod status;
mod test;

use std::process::ExitCode;

use clap::Subcommand;

use shared::on_guest_stack;

#[derive(Subcommand)]
pub enum Command {
    /// Connect to MQTT and Redis and serve the rules in a directory, reloading them as
    /// files change.
    Run(run::Args),
    /// Validate rule modules and print what each declares.
    Check(check::Args),
    /// Run a rule against a file of cases (event in, commands or error out); print a
    /// diff for each mismatch and exit non-zero if any case fails.
    Test(test::Args),
    /// Create a rule project in ./NAME that builds with ./build.sh into NAME.wasm and
    /// passes `wasmrule test NAME.wasm cases.json`.
    New(new::Args),
    /// The EMQX "MQTT to Redis" demo in one command: embedded broker, the demo's rules,
    /// simulated devices, and a live summary of what lands in Redis.
    Demo(demo::Args),
    /// Simulate the EMQX demo's devices (readings and misbehaviour), or generate load
    /// with --count.
    Simulate(simulate::Args),
    /// Run one rule on one event, offline, and print the commands it returns.
    Eval(eval::Args),
    /// Record a broker's messages into a recording, without running rules, to replay
    /// later.
    Record(record::Args),
    /// Run recorded events through a rules directory: compare what the rules return
    /// with the recording (--dry-run), or write it to Redis (--redis-url).
    Replay(replay::Args),
    /// Summarise a running wasmrule (rules, tenants, rates, errors) from its HTTP
    /// endpoint.
    Status(status::Args),
    /// Make a rule's canary (NAME.canary.wasm) its live version (NAME.wasm), by a
    /// rename the running wasmrule swaps in without losing an event.
    Promote(promote::Args),
}

impl Command {
    /// The log filter unless `WASMRULE_LOG` or `RUST_LOG` says otherwise. The demo and
    /// the simulator misbehave on purpose; the client library's and the broker's
    /// warnings about it would only bury the screen.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Demo(_) | Command::Simulate(_) => "warn,rumqttc=error,rmqtt=error",
            _ => "info",
        }
    }

    /// Runs the subcommand; the exit code says whether what it checked passed.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Run(args) => run::run(args),
            Command::Simulate(args) => simulate::run(args),
            Command::Demo(args) => demo::run(args),
            Command::Check(args) => on_guest_stack(move || check::run(&args)),
            Command::Eval(args) => on_guest_stack(move || eval::run(&args)),
            Command::Test(args) => on_guest_stack(move || test::run(&args)),
            Command::New(args) => new::run(&args),
            Command::Status(args) => status::run(&args),
            Command::Record(args) => record::run(&args),
            Command::Replay(args) => on_guest_stack(move || replay::run(&args)),
            Command::Promote(args) => on_guest_stack(move || promote::run(&args)),
        }
    }
}
