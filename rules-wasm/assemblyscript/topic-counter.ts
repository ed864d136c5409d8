// topic-counter, in AssemblyScript: counts messages per topic in the hash
// mqtt_topic_count (same behaviour as the Rust rule in rules-wasm/topic-counter).
//
//   HINCRBY mqtt_topic_count <topic> 1
//
// The filter # matches every topic except $-topics ($SYS/...), as MQTT requires.

import { Event, Output, manifest, run } from "../../guest-sdk/assemblyscript/wasmrule";
export { wasmrule_abi_version_1, wasmrule_alloc } from "../../guest-sdk/assemblyscript/wasmrule";

function topicCounter(event: Event, out: Output): void {
  out.command("HINCRBY").arg("mqtt_topic_count").argBytes(event.topic()).arg("1");
}

export function wasmrule_manifest(): u64 {
  return manifest("topic-counter", "0.1.0", ["#"]);
}

export function wasmrule_on_event(ptr: usize, len: u32): u64 {
  return run(ptr, len, topicCounter);
}
