//! Why a module is not a usable rule ([`LoadError`]) and why one invocation failed
//! ([`RuleError`]): closed sets the reload log, the dead-letter stream and the metrics
//! name by kind. Deciding which applies is the engine's (`mod.rs`).

use std::time::Duration;

/// Why a module could not be loaded as a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly module (the file does not start with the `\\0asm` header)")]
    NotWasm,
    #[error(
        "is WebAssembly text, not binary; assemble it first (`wat2wasm rule.wat -o rule.wasm`)"
    )]
    WasmText,
    #[error(
        "imports `{0}`, but rules may import nothing (build the component with --stub-wasi, \
         or without WASI)"
    )]
    ComponentImport(String),
    #[error(
        "built for the component world wasmrule:rule@{found}, but this wasmrule supports \
         @{supported}; rebuild it against guest-sdk/wit/rule.wit (or wit-v2/rule.wit)"
    )]
    ComponentVersion {
        found: String,
        supported: &'static str,
    },
    #[error(
        "not a wasmrule rule component: it does not export wasmrule:rule/handler (exports: {0})"
    )]
    NotARuleComponent(String),
    #[error("invalid WebAssembly (truncated, half-written or corrupt?): {0}")]
    Invalid(String),
    #[error(
        "declares a linear memory of {bytes} bytes ({pages} pages) at start, above the \
         limit of {limit} bytes ({} MiB, limits.max_memory_mb)",
        limit >> 20
    )]
    MemoryTooLarge {
        pages: u64,
        bytes: u64,
        limit: usize,
    },
    #[error(
        "declares a table of {elements} elements at start, above the limit of {limit} \
         elements (fixed, not a setting)"
    )]
    TableTooLarge { elements: u64, limit: usize },
    #[error("does not fit the engine's limits ([limits] in the config): {0}")]
    OverLimits(String),
    #[error("not a wasmrule rule: it exports no `wasmrule_abi_version_N` marker (see docs/abi.md)")]
    NotARule,
    #[error(
        "built for rule ABI version {found}, but this wasmrule supports versions 1 to \
         {supported}; rebuild the rule with an SDK for ABI v{supported} (docs/abi.md)"
    )]
    AbiVersion { found: String, supported: u32 },
    #[error(
        "imports `{module}::{name}`, but rules may import nothing (no WASI: build for \
         wasm32-unknown-unknown or with --stub-wasi)"
    )]
    Import { module: String, name: String },
    #[error(
        "imports `{module}::{name}`, which ABI v2 does not offer: a v2 rule may import only \
         `wasmrule::redis_read` and `wasmrule::redis_reply` (docs/abi.md)"
    )]
    UnknownHostImport { module: String, name: String },
    #[error("missing export `{0}` (docs/abi.md lists the required exports)")]
    MissingExport(&'static str),
    #[error("ABI violation: {0}")]
    Abi(String),
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("failed while reading its manifest: {0}")]
    Start(RuleError),
    #[error("cannot start a thread to read its manifest: {0}")]
    Thread(String),
}

/// Why one invocation failed. It affects only that event and that rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule reported an error: {0}")]
    Rule(String),
    #[error("timed out: used all of its {0:?} CPU-time deadline (limits.timeout_ms)")]
    Timeout(Duration),
    /// Not the rule's failure: the invocation got too little CPU for too long (the
    /// machine is overloaded, or the process was paused), so the wall-clock backstop
    /// ended it. Callers run the event again rather than fail it.
    #[error(
        "stalled: {wall:?} of wall time passed with only {cpu:?} of CPU for the rule; \
         the host is overloaded or was paused"
    )]
    Stalled { wall: Duration, cpu: Duration },
    #[error("ran out of fuel")]
    OutOfFuel,
    #[error(
        "memory limit: tried to grow linear memory to {desired} bytes, limit is {limit} \
         ({} MiB, limits.max_memory_mb)",
        limit >> 20
    )]
    Memory { desired: usize, limit: usize },
    #[error("wasm stack exhausted (limit {0} bytes, limits.max_wasm_stack_kb)")]
    Stack(usize),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("output too large: {bytes} bytes, limit is {max} (limits.max_output_bytes)")]
    OutputTooLarge { bytes: usize, max: usize },
    #[error("returned {count} commands, limit is {max} (limits.max_commands)")]
    TooManyCommands { count: usize, max: usize },
    #[error("ABI violation: {0}")]
    Abi(String),
    #[error("could not instantiate: {0}")]
    Instantiate(String),
}

impl RuleError {
    /// A short stable name for counting and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RuleError::Rule(_) => "rule_error",
            RuleError::Timeout(_) => "timeout",
            RuleError::Stalled { .. } => "stalled",
            RuleError::OutOfFuel => "out_of_fuel",
            RuleError::Memory { .. } => "memory",
            RuleError::Stack(_) => "stack",
            RuleError::Trap(_) => "trap",
            RuleError::OutputTooLarge { .. } => "output_too_large",
            RuleError::TooManyCommands { .. } => "too_many_commands",
            RuleError::Abi(_) => "abi",
            RuleError::Instantiate(_) => "instantiate",
        }
    }
}
