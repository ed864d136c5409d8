//! The limits one invocation runs under: the engine's ([`Limits`], from
//! `[limits]`) and a tenant's ([`InvokeLimits`], at most the engine's). Applying them is
//! the engine's (`mod.rs`, `deadline.rs`); the defaults' documentation is
//! docs/configuration.md.

use std::time::Duration;

use super::host::ReadBudget;

/// Per-invocation limits. Defaults are in `config.rs` and `docs/configuration.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU-time budget of one invocation: the time the worker thread spends running it,
    /// not the wall time it takes (`deadline.rs`; checked at each 1 ms epoch tick).
    pub timeout: Duration,
    /// Largest linear memory a rule may grow to, in bytes.
    pub max_memory: usize,
    /// Largest table, in elements.
    pub max_table_elements: usize,
    /// Largest wasm call stack, in bytes.
    pub max_wasm_stack: usize,
    /// Most commands one invocation may return.
    pub max_commands: usize,
    /// Most arguments (name included) in one command.
    pub max_args: usize,
    /// Largest result buffer, in bytes.
    pub max_output_bytes: usize,
    /// What an ABI v2 rule's Redis reads may use per invocation.
    pub reads: ReadBudget,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(10),
            max_memory: 32 << 20,
            max_table_elements: 10_000,
            max_wasm_stack: 512 << 10,
            max_commands: 1_000,
            max_args: 1_024,
            max_output_bytes: 1 << 20,
            reads: ReadBudget::default(),
        }
    }
}

/// Limits one invocation runs under (a tenant's), at most the engine's [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeLimits {
    pub timeout: Duration,
    pub max_memory: usize,
    pub max_commands: usize,
    pub max_output_bytes: usize,
}

impl From<&Limits> for InvokeLimits {
    fn from(l: &Limits) -> Self {
        InvokeLimits {
            timeout: l.timeout,
            max_memory: l.max_memory,
            max_commands: l.max_commands,
            max_output_bytes: l.max_output_bytes,
        }
    }
}
