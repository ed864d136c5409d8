//! `[rules]` and `[limits]`: which directory holds the rules, how fast to react to its
//! changes, how big a rule file and how long its compilation may be, where compiled
//! code is cached, and what one invocation may use. The
//! sections as written ([`RawRules`], [`RawLimits`]), their checks, and the validated
//! [`RulesConfig`] and engine [`Limits`] (whose defaults are the engine's own,
//! `engine/mod.rs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use crate::config::check::positive;
use crate::rules::engine::{GUEST_THREAD_STACK, Limits, MAX_WASM_STACK, ReadBudget};

pub const DEFAULT_RULES_DIR: &str = "rules";
/// Default `rules.max_file_bytes`: 64 MiB, over three times the largest rule built here
/// (a Python component, about 18 MB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
/// Default `rules.compile_timeout_ms`: 2 minutes, several times what a Python component
/// takes to compile on a loaded 2-core machine (about 13 s).
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Which directory holds the rules and how fast to react to changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    pub dir: PathBuf,
    /// Quiet time after the last change to a file before it is (re)loaded.
    pub debounce: Duration,
    /// Where compiled rules are cached; `None` turns the cache off.
    pub cache_dir: Option<PathBuf>,
    /// Largest rule file loaded; a bigger one is refused before it is read.
    pub max_file_bytes: u64,
    /// Longest a rule's compilation (and manifest read) may take before it is refused.
    pub compile_timeout: Duration,
    /// Entries kept (about) in a canary's diff stream in Redis (`MAXLEN ~`).
    pub canary_stream_maxlen: u64,
    /// Differences a second, per canary, written to its diff stream; the others are
    /// counted but not written.
    pub canary_samples_per_second: u32,
}

/// Default `rules.canary_stream_maxlen`.
pub const DEFAULT_CANARY_STREAM_MAXLEN: u64 = 1000;
/// Default `rules.canary_samples_per_second`: a 100%-diff canary adds at most this many
/// writes a second to Redis.
pub const DEFAULT_CANARY_SAMPLES_PER_SECOND: u32 = 10;

/// `[rules]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRules {
    dir: Option<PathBuf>,
    debounce_ms: Option<u64>,
    cache_dir: Option<String>,
    max_file_bytes: Option<u64>,
    compile_timeout_ms: Option<u64>,
    canary_stream_maxlen: Option<u64>,
    canary_samples_per_second: Option<u32>,
}

impl RawRules {
    /// Fills in defaults (`rules`, 50 ms, [`default_cache_dir`],
    /// [`DEFAULT_MAX_FILE_BYTES`], [`DEFAULT_COMPILE_TIMEOUT`]); errors name the key.
    pub(crate) fn build(self) -> anyhow::Result<RulesConfig> {
        Ok(RulesConfig {
            dir: self.dir.unwrap_or_else(|| DEFAULT_RULES_DIR.into()),
            debounce: Duration::from_millis(self.debounce_ms.unwrap_or(50)),
            cache_dir: match self.cache_dir.as_deref() {
                Some("off") => None,
                Some(dir) => Some(dir.into()),
                None => default_cache_dir(),
            },
            max_file_bytes: positive(
                self.max_file_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES),
                "rules.max_file_bytes",
            )?,
            compile_timeout: Duration::from_millis(positive(
                self.compile_timeout_ms
                    .unwrap_or(DEFAULT_COMPILE_TIMEOUT.as_millis() as u64),
                "rules.compile_timeout_ms",
            )?),
            canary_stream_maxlen: positive(
                self.canary_stream_maxlen
                    .unwrap_or(DEFAULT_CANARY_STREAM_MAXLEN),
                "rules.canary_stream_maxlen",
            )?,
            // 0 is allowed: differences are then counted and kept in memory only.
            canary_samples_per_second: self
                .canary_samples_per_second
                .unwrap_or(DEFAULT_CANARY_SAMPLES_PER_SECOND),
        })
    }
}

/// `[limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    timeout_ms: Option<u64>,
    max_memory_mb: Option<usize>,
    max_wasm_stack_kb: Option<usize>,
    max_commands: Option<usize>,
    max_output_bytes: Option<usize>,
    max_reads: Option<u32>,
    max_read_bytes: Option<usize>,
    max_read_wait_ms: Option<u64>,
}

impl RawLimits {
    /// Validates the section over the engine's defaults; errors name the key.
    pub(crate) fn build(self) -> anyhow::Result<Limits> {
        let d = Limits::default();
        let l = self;
        let limits = Limits {
            timeout: Duration::from_millis(positive(
                l.timeout_ms.unwrap_or(d.timeout.as_millis() as u64),
                "limits.timeout_ms",
            )?),
            max_memory: positive(
                l.max_memory_mb.unwrap_or(d.max_memory >> 20),
                "limits.max_memory_mb",
            )? << 20,
            max_wasm_stack: positive(
                l.max_wasm_stack_kb.unwrap_or(d.max_wasm_stack >> 10),
                "limits.max_wasm_stack_kb",
            )? << 10,
            max_commands: positive(
                l.max_commands.unwrap_or(d.max_commands),
                "limits.max_commands",
            )?,
            max_output_bytes: positive(
                l.max_output_bytes.unwrap_or(d.max_output_bytes),
                "limits.max_output_bytes",
            )?,
            reads: ReadBudget {
                max_reads: l.max_reads.unwrap_or(d.reads.max_reads),
                max_bytes: positive(
                    l.max_read_bytes.unwrap_or(d.reads.max_bytes),
                    "limits.max_read_bytes",
                )?,
                max_wait: Duration::from_millis(positive(
                    l.max_read_wait_ms
                        .unwrap_or(d.reads.max_wait.as_millis() as u64),
                    "limits.max_read_wait_ms",
                )?),
            },
            ..d
        };
        if limits.max_memory > 4 << 30 {
            bail!("limits.max_memory_mb: at most 4096 (32-bit linear memory)");
        }
        if limits.max_wasm_stack > MAX_WASM_STACK {
            bail!(
                "limits.max_wasm_stack_kb: {} is above {}: the wasm stack must stay well \
                 below the {} KiB native stack of the threads that run rules (at most a \
                 quarter), or a deep recursion could overflow the thread instead of \
                 failing with `stack`",
                limits.max_wasm_stack >> 10,
                MAX_WASM_STACK >> 10,
                GUEST_THREAD_STACK >> 10
            );
        }
        Ok(limits)
    }
}

/// `$XDG_CACHE_HOME/wasmrule`, else `$HOME/.cache/wasmrule`, else no cache.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("wasmrule"))
}
