//! The command policy: whatever a rule returns, what passes has an allowed name, a
//! valid arity and every key and channel under the tenant's prefix; what fails leaves
//! nothing behind.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wasmrule::Commands;
use wasmrule::{DEFAULT_ALLOWED, InvokeLimits, Quarantine, SPECS, TenantPolicy, resolve_allowed};

#[derive(Arbitrary, Debug)]
struct Input {
    // Each command: a name chosen among known and unknown ones, then raw arguments.
    commands: Vec<(u8, Vec<Vec<u8>>)>,
}

const EXTRA: &[&str] = &["FLUSHALL", "EVAL", "RENAME", "hset", "Set", "CONFIG", ""];

fuzz_target!(|i: Input| {
    let allowed: Vec<String> = DEFAULT_ALLOWED.iter().map(|s| s.to_string()).collect();
    let policy = TenantPolicy::new(
        "acme",
        "acme:",
        resolve_allowed(&allowed).unwrap(),
        vec!["acme/#".into()],
        InvokeLimits {
            timeout: Duration::from_millis(10),
            max_memory: 1 << 20,
            max_commands: 1000,
            max_output_bytes: 1 << 20,
        },
        1000,
        Quarantine {
            failures: 1,
            window: Duration::from_secs(1),
            backoff: Duration::from_secs(1),
        },
    );
    let mut input = Commands::new();
    for (pick, args) in &i.commands {
        let p = *pick as usize;
        let name = if p < SPECS.len() { SPECS[p].name } else { EXTRA[p % EXTRA.len()] };
        input.begin_command();
        input.push_arg(name.as_bytes());
        for a in args {
            input.push_arg(a);
        }
    }
    let mut out = Commands::new();
    match policy.apply(&input, &mut out) {
        Err(_) => assert!(out.is_empty()),
        Ok(()) => {
            assert_eq!(out.len(), input.len());
            for (c, original) in out.iter().zip(input.iter()) {
                let name = std::str::from_utf8(c.name()).unwrap();
                let spec = SPECS.iter().find(|s| s.name == name).expect("allowed name");
                assert!(DEFAULT_ALLOWED.contains(&name));
                let argc = c.args().len();
                assert_eq!(argc, original.args().len());
                let last = if spec.last_key < 0 { (argc as i32 + spec.last_key) as usize } else { spec.last_key as usize };
                for (k, (a, o)) in c.args().zip(original.args()).enumerate().skip(1) {
                    let is_key = k >= spec.first_key && k <= last && (k - spec.first_key) % spec.step == 0;
                    if is_key {
                        assert!(a.starts_with(b"acme:") && &a[5..] == o, "key not namespaced");
                    } else {
                        assert_eq!(a, o);
                    }
                }
            }
        }
    }
});
