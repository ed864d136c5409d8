// disconnect-reasons, in JavaScript: the EMQX demo's disconnect statistics (same
// behaviour as the Rust rule in rules-wasm/disconnect-reasons).
//
//   SELECT * FROM "$events/client_disconnected"
//   HINCRBY disconnected_reason ${reason} 1

import { RuleError, eventField, hincrby, rule } from "../../guest-sdk/javascript/wasmrule.js";

function disconnectReasons(event) {
  const reason = eventField(event, "reason");
  if (typeof reason !== "string") throw new RuleError("event has no string field `reason`");
  return hincrby("disconnected_reason", reason, "1");
}

export const handler = rule(
  { name: "disconnect-reasons", version: "0.1.0", filters: ["$events/client_disconnected"] },
  disconnectReasons,
);
