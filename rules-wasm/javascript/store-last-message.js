// store-last-message, in JavaScript: the EMQX demo's
// HSET emqx_messages ${clientid} ${payload.temp} (same behaviour as the Rust rule in
// rules-wasm/store-last-message).
//
// The client is the event's client id, or else the last topic level; a numeric temp is
// stored as the device wrote it (21.50 stays 21.50), a string temp as its text.

import {
  RuleError, clientid, hset, jsonMembers, payloadText, rule, topicLastLevel,
} from "../../guest-sdk/javascript/wasmrule.js";

function storeLastMessage(event) {
  const client = clientid(event) ?? topicLastLevel(event.topic);
  if (client === null) {
    throw new RuleError("no clientid in the event and no last topic level to use instead");
  }
  const { temp } = jsonMembers(payloadText(event), ["temp"]);
  if (temp === undefined) throw new RuleError("payload has no top-level temp");
  // A number keeps the text as written: 21.50 stays 21.50.
  const value = temp.kind === "number" ? temp.raw : temp.string();
  if (value === null) throw new RuleError("payload.temp is not a number or a string");
  return hset("emqx_messages", client, value);
}

export const handler = rule(
  { name: "store-last-message", version: "0.1.0", filters: ["store-last-message/+"] },
  storeLastMessage,
);
