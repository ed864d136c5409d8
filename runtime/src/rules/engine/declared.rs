//! What a module declares before any of it runs: the initial size of its memories and
//! tables, checked against the engine's limits before compiling, so that a valid module
//! that asks for more than the limits is refused as that (naming the setting), not as
//! invalid WebAssembly by the pooling allocator. Components are checked module by
//! module (the parser walks nested modules).
//!
//! Owns this pre-check only; growth at run time is refused by the store's limiter
//! (`mod.rs`, `Ctx`).

use super::{Limits, LoadError};

/// Checks every memory and table the module (or component) defines. (Imported ones are
/// refused anyway: rules may import nothing.)
/// Malformed bytes pass: compiling reports them with wasmtime's own message.
///
/// # Errors
///
/// [`LoadError::MemoryTooLarge`] or [`LoadError::TableTooLarge`] for the first that
/// starts above the limits.
pub(super) fn check(bytes: &[u8], limits: &Limits) -> Result<(), LoadError> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        match payload {
            wasmparser::Payload::MemorySection(reader) => {
                for memory in reader.into_iter().flatten() {
                    check_memory(&memory, limits)?;
                }
            }
            wasmparser::Payload::TableSection(reader) => {
                for table in reader.into_iter().flatten() {
                    check_table(table.ty.initial, limits)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_memory(memory: &wasmparser::MemoryType, limits: &Limits) -> Result<(), LoadError> {
    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
    let bytes = memory.initial.saturating_mul(page);
    if bytes > limits.max_memory as u64 {
        return Err(LoadError::MemoryTooLarge {
            pages: memory.initial,
            bytes,
            limit: limits.max_memory,
        });
    }
    Ok(())
}

fn check_table(initial: u64, limits: &Limits) -> Result<(), LoadError> {
    if initial > limits.max_table_elements as u64 {
        return Err(LoadError::TableTooLarge {
            elements: initial,
            limit: limits.max_table_elements,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_over_the_limits_are_named() {
        let limits = Limits::default();
        let ok = wat::parse_str("(module (memory 2) (table 10 funcref))").unwrap();
        assert!(check(&ok, &limits).is_ok());
        let big = wat::parse_str("(module (memory 60000))").unwrap();
        let e = check(&big, &limits).unwrap_err().to_string();
        assert!(
            e.contains("3932160000 bytes (60000 pages)")
                && e.contains("limit of 33554432 bytes (32 MiB, ")
                && e.contains("limits.max_memory_mb"),
            "{e}"
        );
        assert!(!e.contains("0x") && !e.contains("invalid"), "{e}");
        let table = wat::parse_str("(module (table 10000000 funcref))").unwrap();
        let e = check(&table, &limits).unwrap_err().to_string();
        assert!(
            e.contains("10000000 elements") && e.contains("limit of 10000 elements"),
            "{e}"
        );
        // Not WebAssembly at all: left to the compiler's message.
        assert!(check(b"\0asm\x01\0\0\0\x05\xff", &limits).is_ok());
    }
}
