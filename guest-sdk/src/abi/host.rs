//! The imports of rule ABI v2 on wasm32 (`docs/abi.md`, "Reading Redis"): the only code
//! in the SDK that calls the host. Natively there is no host; reads go to whatever
//! [`Reads`] the test gives the rule (`testing::FakeRedis`).

use crate::Reads;

#[link(wasm_import_module = "wasmrule")]
unsafe extern "C" {
    /// Runs the request at `ptr..ptr+len`; the reply's length, or a negative code.
    fn redis_read(ptr: *const u8, len: usize) -> i32;
    /// Copies the held reply to `dst` if it fits in `cap`; its length, or a negative
    /// code.
    fn redis_reply(dst: *mut u8, cap: usize) -> i32;
}

/// Reads through the host's imports.
pub(crate) struct HostReads;

impl Reads for HostReads {
    fn call(&mut self, request: &[u8]) -> Result<Vec<u8>, i32> {
        // SAFETY: the host reads `request.len()` bytes at its address, which is ours.
        let n = unsafe { redis_read(request.as_ptr(), request.len()) };
        if n < 0 {
            return Err(n);
        }
        let mut reply = vec![0u8; n as usize];
        // SAFETY: the host writes at most `reply.len()` bytes into `reply`.
        let copied = unsafe { redis_reply(reply.as_mut_ptr(), reply.len()) };
        if copied < 0 {
            return Err(copied);
        }
        reply.truncate(copied as usize);
        Ok(reply)
    }
}
