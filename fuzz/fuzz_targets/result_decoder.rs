//! The decoder of a rule's result buffer, the first thing that reads guest-controlled
//! bytes: it never panics or over-allocates, refuses a buffer whole, and what it accepts
//! encodes back to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmrule::Commands;
use wasmrule::engine::abi::{OutputLimits, decode_result};

fuzz_target!(|data: &[u8]| {
    let limits = OutputLimits {
        max_commands: 1000,
        max_args: 64,
    };
    let mut out = Commands::new();
    out.push(["KEEP"]);
    match decode_result(data, limits, &mut out) {
        Err(_) => assert_eq!(out.len(), 1, "a refused buffer left commands behind"),
        Ok(n) => {
            assert_eq!(out.len(), 1 + n);
            let mut enc = vec![0u8];
            enc.extend((n as u32).to_le_bytes());
            for c in out.iter().skip(1) {
                enc.extend((c.args().len() as u32).to_le_bytes());
                for a in c.args() {
                    enc.extend((a.len() as u32).to_le_bytes());
                    enc.extend(a);
                }
            }
            assert_eq!(enc, data);
        }
    }
});
