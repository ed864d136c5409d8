//! The guest side of the rule ABI (`docs/abi.md`): how an event comes in and how the
//! result goes out. This folder is the only place in the SDK that knows the wire
//! format; the `#[rule]` macro only wires exports to [`alloc`] and [`on_event`] (v1)
//! or [`v2::on_event`] (v2). This file is version 1 and what both versions share;
//! [`v2`] is version 2's reads and actions, `host` (wasm32 only) its imports.
//!
//! Result buffer of v1 (all integers little-endian `u32`):
//!
//! ```text
//! ok:    0x00  count  { argc  { len  bytes[len] } * argc } * count
//! error: 0x01  utf-8 message
//! ```

use crate::{Command, Event, IntoOutput, RuleError};

#[cfg(target_arch = "wasm32")]
pub(crate) mod host;
pub mod v2;

/// The ABI version of rules whose function takes only the event: the module exports
/// `wasmrule_abi_version_1`. Rules that also take a `Context` are [`v2::ABI_VERSION`].
pub const ABI_VERSION: u32 = 1;

/// First byte of a result buffer holding commands.
pub const TAG_OK: u8 = 0;
/// First byte of a result buffer holding an error message.
pub const TAG_ERROR: u8 = 1;

/// Runs `handler` on one event given as JSON and returns the encoded result buffer.
///
/// This is exactly what the wasm export does, minus the pointers, so native tests and
/// benchmarks exercise the same code as the module.
pub fn handle_json<R: IntoOutput>(input: &[u8], handler: impl Fn(&Event<'_>) -> R) -> Vec<u8> {
    let mut out = Vec::new();
    encode_result(&run(input, handler), &mut out);
    out
}

fn run<R: IntoOutput>(
    input: &[u8],
    handler: impl Fn(&Event<'_>) -> R,
) -> Result<Vec<Command>, RuleError> {
    let event = Event::from_json(input)
        .map_err(|e| RuleError::new(format!("event is not valid JSON for this SDK: {e}")))?;
    handler(&event).into_output()
}

/// Appends the encoding of `result` to `out`.
pub fn encode_result(result: &Result<Vec<Command>, RuleError>, out: &mut Vec<u8>) {
    match result {
        Ok(commands) => {
            let size: usize = commands.iter().map(|c| 4 + c.encoded().len()).sum();
            out.reserve(5 + size);
            out.push(TAG_OK);
            out.extend_from_slice(&(commands.len() as u32).to_le_bytes());
            for c in commands {
                out.extend_from_slice(&c.argc().to_le_bytes());
                out.extend_from_slice(c.encoded());
            }
        }
        Err(e) => {
            out.push(TAG_ERROR);
            out.extend_from_slice(e.message().as_bytes());
        }
    }
}

/// Packs a pointer and a length into the `i64` the ABI returns: pointer in the high 32
/// bits, length in the low 32 bits.
pub const fn pack(ptr: u32, len: u32) -> u64 {
    ((ptr as u64) << 32) | len as u64
}

/// Packed pointer and length of a static byte string (the manifest).
pub fn static_bytes(bytes: &'static [u8]) -> u64 {
    pack(bytes.as_ptr() as usize as u32, bytes.len() as u32)
}

/// `wasmrule_alloc`: a buffer of `len` bytes for the host to write the event into, or 0
/// when the allocation fails. Ownership passes to [`on_event`], which frees it.
pub fn alloc(len: u32) -> u32 {
    let Ok(layout) = std::alloc::Layout::from_size_align(len.max(1) as usize, 1) else {
        return 0;
    };
    // SAFETY: the layout has a non-zero size.
    unsafe { std::alloc::alloc(layout) as usize as u32 }
}

/// `wasmrule_on_event`: handles the event the host wrote at `ptr..ptr+len` (a buffer
/// from [`alloc`]) and returns the packed location of the result buffer, which stays
/// valid until the next call.
///
/// # Safety
///
/// `ptr` and `len` must be a buffer returned by [`alloc`] that is not used afterwards.
pub unsafe fn on_event<R: IntoOutput>(
    ptr: u32,
    len: u32,
    handler: impl Fn(&Event<'_>) -> R,
) -> u64 {
    let ptr = ptr as usize as *mut u8;
    // SAFETY: the caller passes a live allocation of `len` bytes.
    let input = unsafe { std::slice::from_raw_parts(ptr, len as usize) };
    let result = run(input, handler);
    // SAFETY: the input is not used after this point.
    unsafe { free_input(ptr, len) };
    OUTPUT.with(|cell| {
        let mut out = cell.borrow_mut();
        out.clear();
        encode_result(&result, &mut out);
        pack(out.as_ptr() as usize as u32, out.len() as u32)
    })
}

/// Frees the event buffer `ptr..ptr+len` from [`alloc`].
///
/// # Safety
///
/// `ptr` and `len` must be a live allocation from [`alloc`], not used afterwards.
#[inline(always)]
pub(crate) unsafe fn free_input(ptr: *mut u8, len: u32) {
    // SAFETY: same layout as in `alloc`.
    unsafe {
        std::alloc::dealloc(
            ptr,
            std::alloc::Layout::from_size_align_unchecked(len.max(1) as usize, 1),
        )
    };
}

/// Encodes the result with `encode` into the buffer kept for the host, and returns its
/// packed location, valid until the next call.
// Used by the v2 export, which exists on wasm32 only.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) fn with_output(encode: impl FnOnce(&mut Vec<u8>)) -> u64 {
    OUTPUT.with(|cell| {
        let mut out = cell.borrow_mut();
        out.clear();
        encode(&mut out);
        pack(out.as_ptr() as usize as u32, out.len() as u32)
    })
}

thread_local! {
    // The result of the last call; kept so its memory outlives the export's return.
    static OUTPUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd;

    #[test]
    fn encodes_commands_in_the_documented_layout() {
        let mut out = Vec::new();
        encode_result(&Ok(vec![cmd::hset("k", "f", "v")]), &mut out);
        let mut want = vec![TAG_OK, 1, 0, 0, 0, 4, 0, 0, 0];
        for arg in ["HSET", "k", "f", "v"] {
            want.extend_from_slice(&(arg.len() as u32).to_le_bytes());
            want.extend_from_slice(arg.as_bytes());
        }
        assert_eq!(out, want);
    }

    #[test]
    fn encodes_errors_as_tag_and_message() {
        let mut out = Vec::new();
        encode_result(&Err(RuleError::new("no temp")), &mut out);
        assert_eq!(out, b"\x01no temp");
    }

    #[test]
    fn invalid_event_json_becomes_a_rule_error() {
        let out = handle_json(b"not json", |_e: &Event| Vec::<Command>::new());
        assert_eq!(out[0], TAG_ERROR);
        assert!(String::from_utf8_lossy(&out[1..]).contains("event is not valid JSON"));
    }

    #[test]
    fn pack_puts_pointer_high() {
        assert_eq!(pack(0x10, 0x20), 0x0000_0010_0000_0020);
    }
}
