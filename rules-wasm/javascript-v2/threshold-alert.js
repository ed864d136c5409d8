// threshold-alert (rule ABI v2) as a JavaScript component of wasmrule:rule@2.0.0: the
// same behaviour as the Rust rule in rules-wasm/threshold-alert (see its lib.rs).

import {
  RuleError, fromUtf8, get, payloadText, publish, rule, setCommand,
} from "../../guest-sdk/javascript/wasmrule-v2.js";

const READING = /^(-?)(0|[1-9][0-9]{0,8})(?:\.([0-9]{1,6}))?$/;
const DEVICE = /^[A-Za-z0-9._-]{1,64}$/;

// The reading in millionths (exact: below 2^53), or null.
function parseReading(text) {
  const m = READING.exec(text);
  if (m === null) return null;
  const value = Number(m[2]) * 1000000 + Number((m[3] ?? "").padEnd(6, "0"));
  return m[1] ? -value : value;
}

function thresholdAlert(event) {
  const device = event.topic.slice(event.topic.lastIndexOf("/") + 1);
  if (!DEVICE.test(device)) {
    throw new RuleError("the device (last topic level) is not 1 to 64 of A-Z a-z 0-9 - _ .");
  }
  const text = fromUtf8(payloadText(event));
  const current = parseReading(text);
  if (current === null) {
    throw new RuleError("payload is not a reading: a decimal of at most 9.6 digits");
  }
  const key = `last:${device}`;
  const previousBytes = get(key);
  const out = [setCommand(key, text)];
  if (previousBytes instanceof Uint8Array) {
    const previousText = fromUtf8(previousBytes);
    const previous = previousText === null ? null : parseReading(previousText);
    if (previous !== null && Math.abs(current - previous) * 10 > Math.abs(previous)) {
      const payload = `{"device":"${device}","previous":${previousText},"current":${text}}`;
      out.push(publish(`alerts/${device}`, payload, { qos: 1 }));
    }
  }
  return out;
}

export const handler = rule(
  { name: "threshold-alert", version: "0.1.0", filters: ["readings/+"] },
  thresholdAlert,
);
