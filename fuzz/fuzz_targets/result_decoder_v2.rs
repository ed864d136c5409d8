//! The ABI v2 result decoder (actions): never panics or over-allocates, refuses a
//! buffer whole (neither commands nor actions left behind), and what it accepts, put
//! back into the v2 layout (commands first, then MQTT actions), decodes to the same
//! commands and actions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmrule::engine::abi::{OutputLimits, decode_result_v2};
use wasmrule::{Commands, MqttAction, Publish};

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend((b.len() as u32).to_le_bytes());
    out.extend(b);
}

fn put_message(out: &mut Vec<u8>, p: &Publish) {
    put(out, p.topic.as_bytes());
    put(out, &p.payload);
    out.push(p.qos);
    out.push(p.retain as u8);
}

fn encode(commands: &Commands, actions: &[MqttAction]) -> Vec<u8> {
    let mut b = vec![0u8];
    b.extend(((commands.len() + actions.len()) as u32).to_le_bytes());
    for c in commands.iter() {
        b.push(0);
        b.extend((c.args().len() as u32).to_le_bytes());
        for a in c.args() {
            put(&mut b, a);
        }
    }
    for a in actions {
        match a {
            MqttAction::Publish(p) => {
                b.push(1);
                put_message(&mut b, p);
                b.extend((p.properties.len() as u32).to_le_bytes());
                for (k, v) in &p.properties {
                    put(&mut b, k.as_bytes());
                    put(&mut b, v.as_bytes());
                }
            }
            MqttAction::Subscribe { client, filter, qos } => {
                b.push(2);
                put(&mut b, client.as_bytes());
                put(&mut b, filter.as_bytes());
                b.push(*qos);
            }
            MqttAction::Unsubscribe { client, filter } => {
                b.push(3);
                put(&mut b, client.as_bytes());
                put(&mut b, filter.as_bytes());
            }
            MqttAction::Deliver { client, message } => {
                b.push(4);
                put(&mut b, client.as_bytes());
                put_message(&mut b, message);
            }
        }
    }
    b
}

fuzz_target!(|data: &[u8]| {
    let limits = OutputLimits {
        max_commands: 1000,
        max_args: 64,
    };
    let mut out = Commands::new();
    out.push(["KEEP"]);
    let mut actions = Vec::new();
    match decode_result_v2(data, limits, &mut out, &mut actions) {
        Err(_) => {
            assert_eq!(out.len(), 1, "a refused buffer left commands behind");
            assert!(actions.is_empty(), "a refused buffer left actions behind");
        }
        Ok(n) => {
            assert_eq!(out.len() - 1 + actions.len(), n);
            let mut mine = Commands::new();
            for c in out.iter().skip(1) {
                mine.begin_command();
                for a in c.args() {
                    mine.push_arg(a);
                }
            }
            let again = encode(&mine, &actions);
            let (mut out2, mut actions2) = (Commands::new(), Vec::new());
            decode_result_v2(&again, limits, &mut out2, &mut actions2).expect("re-encoded");
            assert_eq!(out2, mine);
            assert_eq!(actions2, actions);
        }
    }
});
