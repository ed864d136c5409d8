//! The typed reply of an ABI v2 read (`docs/abi.md`, "The reply") that the host encodes
//! into guest memory: decoding any bytes never panics or over-allocates, and a reply
//! that decodes encodes back to exactly its bytes, with `encoded_len` telling its size
//! (the host checks the read budget with it before encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmrule::engine::Reply;

fuzz_target!(|data: &[u8]| {
    if let Some((reply, used)) = Reply::decode(data) {
        let mut again = Vec::new();
        reply.encode(&mut again);
        assert_eq!(again, &data[..used]);
        assert_eq!(reply.encoded_len(), used);
    }
});
