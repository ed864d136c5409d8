// store-last-message, in AssemblyScript: the EMQX demo's first rule (same behaviour as
// the Rust rule in rules-wasm/store-last-message; fixtures in guest-sdk/conformance).
//
//   HSET emqx_messages <clientid, or the last topic level> <payload.temp>
//
// A numeric temp is stored as the device wrote it (21.50 stays 21.50), a string temp as
// its unescaped text; anything else is an error.

import {
  Event, Found, Output, jsonIsNumber, jsonMember, jsonString, manifest, run, topicLastLevel,
} from "../../guest-sdk/assemblyscript/wasmrule";
export { wasmrule_abi_version_1, wasmrule_alloc } from "../../guest-sdk/assemblyscript/wasmrule";

function storeLastMessage(event: Event, out: Output): void {
  let client = event.clientid();
  if (client == null) {
    client = topicLastLevel(event.topic());
    if (client.len == 0) {
      return out.error("no clientid in the event and no last topic level to use instead");
    }
  }
  if (event.payloadIsBase64()) return out.error("payload is binary (base64), not JSON text");
  const payload = event.payloadText();
  if (payload == null) return out.error("event has no payload");
  const temp = jsonMember(payload, "temp");
  if (temp.found == Found.No) return out.error("payload has no top-level temp");
  if (temp.found == Found.Invalid) return out.error("payload is not a valid JSON object");
  // A number keeps the text as written: 21.50 stays 21.50.
  const value = jsonIsNumber(temp.raw) ? temp.raw : jsonString(temp.raw);
  if (value == null) return out.error("payload.temp is not a number or a string");
  out.command("HSET").arg("emqx_messages").argBytes(client).argBytes(value);
}

export function wasmrule_manifest(): u64 {
  return manifest("store-last-message", "0.1.0", ["store-last-message/+"]);
}

export function wasmrule_on_event(ptr: usize, len: u32): u64 {
  return run(ptr, len, storeLastMessage);
}
