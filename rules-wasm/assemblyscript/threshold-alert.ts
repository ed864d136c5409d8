// threshold-alert (rule ABI v2), in AssemblyScript: the same behaviour as the Rust rule
// in rules-wasm/threshold-alert (see its lib.rs for the definition).
//
// On readings/<device> with a decimal reading as the payload: GET last:<device>, then
// SET last:<device> <payload>, and when |cur - prev| > 0.1 * |prev| an MQTT publish on
// alerts/<device> (QoS 1) of {"device":"<device>","previous":<prev>,"current":<cur>}.
// Readings are compared exactly, as integers in millionths.

import {
  Actions, Bytes, Event, ReadCode, ValueType, get, manifest, runV2, topicLastLevel,
} from "../../guest-sdk/assemblyscript/wasmrule";
export { wasmrule_abi_version_2, wasmrule_alloc } from "../../guest-sdk/assemblyscript/wasmrule";

let parsedOk = false;

// A reading -?(0|[1-9][0-9]*)(.[0-9]+)? of at most 9 integer and 6 fraction digits, in
// millionths; sets parsedOk.
function parseReading(t: Bytes): i64 {
  parsedOk = false;
  let i: u32 = 0;
  let digits: u32 = 0;
  let frac: u32 = 0;
  const neg = t.len > 0 && t.at(0) == 0x2d;
  if (neg) i++;
  let v: i64 = 0;
  for (; i < t.len && t.at(i) >= 0x30 && t.at(i) <= 0x39; i++, digits++) {
    if (digits == 1 && v == 0) return 0; // a leading zero
    v = v * 10 + <i64>(t.at(i) - 0x30);
  }
  if (digits == 0 || digits > 9) return 0;
  if (i < t.len) {
    if (t.at(i++) != 0x2e) return 0;
    for (; i < t.len; i++, frac++) {
      if (t.at(i) < 0x30 || t.at(i) > 0x39 || frac == 6) return 0;
      v = v * 10 + <i64>(t.at(i) - 0x30);
    }
    if (frac == 0) return 0;
  }
  for (; frac < 6; frac++) v *= 10;
  parsedOk = true;
  return neg ? -v : v;
}

function validDevice(d: Bytes): bool {
  if (d.len == 0 || d.len > 64) return false;
  for (let i: u32 = 0; i < d.len; i++) {
    const b = d.at(i);
    const ok = (b >= 0x30 && b <= 0x39) || ((b | 0x20) >= 0x61 && (b | 0x20) <= 0x7a) ||
      b == 0x2d || b == 0x5f || b == 0x2e;
    if (!ok) return false;
  }
  return true;
}

function concat(parts: StaticArray<Bytes>): Bytes {
  let n: u32 = 0;
  for (let i = 0; i < parts.length; i++) n += parts[i].len;
  const buf = heap.alloc(n);
  let at = buf;
  for (let i = 0; i < parts.length; i++) {
    memory.copy(at, parts[i].ptr, parts[i].len);
    at += parts[i].len;
  }
  return new Bytes(buf, n);
}

function abs64(x: i64): i64 {
  return x < 0 ? -x : x;
}

function thresholdAlert(event: Event, out: Actions): void {
  const device = topicLastLevel(event.topic());
  if (!validDevice(device)) {
    out.error("the device (last topic level) is not 1 to 64 of A-Z a-z 0-9 - _ .");
    return;
  }
  if (event.payloadIsBase64()) {
    out.error("payload is binary (base64), not a reading");
    return;
  }
  const text = event.payloadText();
  if (text == null) {
    out.error("payload is not a reading: a decimal of at most 9.6 digits");
    return;
  }
  const cur = parseReading(text);
  if (!parsedOk) {
    out.error("payload is not a reading: a decimal of at most 9.6 digits");
    return;
  }
  const key = concat([Bytes.of("last:"), device]);
  const previous = get(key);
  if (previous.code != ReadCode.Ok) {
    out.error("redis read failed");
    return;
  }
  out.command("SET").argBytes(key).argBytes(text);
  if (previous.value.type != ValueType.Bulk) return;
  const prevText = previous.value.bulk;
  const prev = parseReading(prevText);
  if (!parsedOk || abs64(cur - prev) * 10 <= abs64(prev)) return;
  // Neither the device nor a reading holds a character JSON escapes.
  const json = concat([
    Bytes.of('{"device":"'), device, Bytes.of('","previous":'), prevText,
    Bytes.of(',"current":'), text, Bytes.of("}"),
  ]);
  out.publish(concat([Bytes.of("alerts/"), device]), json, 1, false);
}

export function wasmrule_manifest(): u64 {
  return manifest("threshold-alert", "0.1.0", ["readings/+"]);
}

export function wasmrule_on_event(ptr: usize, len: u32): u64 {
  return runV2(ptr, len, thresholdAlert);
}
