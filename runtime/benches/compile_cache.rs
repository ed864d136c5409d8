//! Cold compile against cached load, per language: how long `Engine::compile` takes for
//! each language's `store-last-message` with an empty compiled-code cache, and again
//! from the cache that first compile filled (a restart, or the same file dropped in
//! again), plus what one event then costs (a fresh instance, as always).
//!
//! Run: `rules-wasm/build.sh && cargo bench -p wasmrule --bench compile_cache`
//! (`ONLY=py` for one language; `EVENTS=20000` for a longer last column, to profile the
//! events: docs/performance.md, section 3).
//!
//! Each round uses a new cache directory and new engines, so nothing is shared but the
//! files on disk; the median of the rounds counts. A language whose module does not
//! load is reported in its row, and the bench then exits non-zero.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use wasmrule::Commands;
use wasmrule::engine::cache::Cache;
use wasmrule::engine::{Engine, Limits, Rule};
use wasmrule::{EventEncoder, Message};

/// Language, suffix of its module in rules-wasm/dist (as in build.sh).
const LANGS: [(&str, &str); 8] = [
    ("rust", ""),
    ("c", "-c"),
    ("as", "-as"),
    ("zig", "-zig"),
    ("wat", "-wat"),
    ("py", "-py"),
    ("js", "-js"),
    ("component", "-component"),
];
const ROUNDS: usize = 3;
const EVENTS: usize = 21;

fn main() -> ExitCode {
    // `cargo test --benches` runs bench targets too; one round is enough there.
    let quick = std::env::args().any(|a| a == "--test");
    let rounds = if quick { 1 } else { ROUNDS };
    // Limits as the runtime's defaults, but a deadline long enough to time a slow event
    // instead of failing it.
    let limits = Limits {
        timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let event = demo_event();
    let events_per_round = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(EVENTS);

    println!(
        "store-last-message, median of {rounds} rounds ({events_per_round} events for the last column)"
    );
    println!(
        "{:<10} {:<9} {:>10} {:>10} {:>10} {:>7} {:>9}",
        "language", "kind", "bytes", "cold ms", "cached ms", "ratio", "event ms"
    );
    let mut failed = 0;
    for (lang, suffix) in LANGS {
        if std::env::var("ONLY").is_ok_and(|o| o != lang) {
            continue;
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "../rules-wasm/dist/store-last-message{suffix}.wasm"
        ));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run rules-wasm/build.sh first", path.display()));
        match catch_unwind(AssertUnwindSafe(|| {
            measure(&bytes, &limits, &event, rounds, events_per_round)
        })) {
            Ok(Ok(m)) => println!(
                "{lang:<10} {:<9} {:>10} {:>10.1} {:>10.1} {:>7.0} {:>9.2}",
                m.kind,
                bytes.len(),
                ms(m.cold),
                ms(m.cached),
                m.cold.as_secs_f64() / m.cached.as_secs_f64(),
                ms(m.event),
            ),
            Ok(Err(e)) => {
                failed += 1;
                println!("{lang:<10} {:>21}  does not load: {e}", bytes.len());
            }
            Err(_) => {
                failed += 1;
                println!("{lang:<10} {:>21}  compiling it panicked", bytes.len());
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} language(s) did not load");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

struct Measured {
    kind: &'static str,
    cold: Duration,
    cached: Duration,
    event: Duration,
}

/// Medians over `rounds` of a cold compile, a load from the cache it filled, and one
/// event on the cached rule.
fn measure(
    bytes: &[u8],
    limits: &Limits,
    event: &[u8],
    rounds: usize,
    events_per_round: usize,
) -> Result<Measured, String> {
    let (mut cold, mut cached, mut events) = (Vec::new(), Vec::new(), Vec::new());
    let mut kind = "";
    for _ in 0..rounds {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (t, rule) = timed_compile(limits, dir.path(), bytes)?;
        if rule.from_cache() {
            return Err("the first compile came from an empty cache".into());
        }
        cold.push(t);
        let (t, rule) = timed_compile(limits, dir.path(), bytes)?;
        if !rule.from_cache() {
            return Err("the second compile did not come from the cache".into());
        }
        cached.push(t);
        kind = rule.kind_name();
        let mut out = Commands::new();
        for _ in 0..events_per_round {
            out.clear();
            let t0 = Instant::now();
            rule.invoke(event, &mut out).map_err(|e| e.to_string())?;
            events.push(t0.elapsed());
        }
        let got = out.get(0).map(|c| c.to_string());
        if got.as_deref() != Some("HSET emqx_messages emqx_c 44.37") {
            return Err(format!("unexpected result {got:?}"));
        }
    }
    Ok(Measured {
        kind,
        cold: median(cold),
        cached: median(cached),
        event: median(events),
    })
}

/// One `Engine::compile` with a fresh engine on the cache in `dir`, timed without the
/// engine's own setup.
fn timed_compile(limits: &Limits, dir: &Path, bytes: &[u8]) -> Result<(Duration, Rule), String> {
    let cache = Cache::open(dir).map_err(|e| format!("{e:#}"))?;
    let engine = Engine::new(limits.clone(), 4)
        .map_err(|e| format!("{e:#}"))?
        .with_cache(cache);
    let t0 = Instant::now();
    let rule = engine.compile(bytes).map_err(|e| e.to_string())?;
    Ok((t0.elapsed(), rule))
}

/// The EMQX demo's device message as the runtime encodes it.
fn demo_event() -> Vec<u8> {
    let mut m = Message::new(
        "store-last-message/emqx_c",
        &br#"{"message":"this is a stored message","clientId":"emqx_c","duration":"102s","temp":44.37,"hum":32.52}"#[..],
        1,
        false,
    );
    m.clientid = None;
    let mut event = Vec::new();
    EventEncoder::new("wasmrule@bench").publish_event(&m, &mut event);
    event
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
