// dropped-messages, in JavaScript: the EMQX demo's dropped-message statistics (same
// behaviour as the Rust rule in rules-wasm/dropped-messages).
//
//   SELECT * FROM "$events/message_dropped", "$events/delivery_dropped"
//   HINCRBY emqx_message_dropped_count ${topic} 1
//   HINCRBY message_dropped_reason ${reason} 1

import { RuleError, eventField, hincrby, rule } from "../../guest-sdk/javascript/wasmrule.js";

function droppedMessages(event) {
  const reason = eventField(event, "reason");
  if (typeof reason !== "string") throw new RuleError("event has no string field `reason`");
  return [
    hincrby("emqx_message_dropped_count", event.topic, "1"),
    hincrby("message_dropped_reason", reason, "1"),
  ];
}

export const handler = rule(
  {
    name: "dropped-messages",
    version: "0.1.0",
    filters: ["$events/message_dropped", "$events/delivery_dropped"],
  },
  droppedMessages,
);
