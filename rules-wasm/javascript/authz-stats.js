// authz-stats, in JavaScript: the EMQX demo's authorization statistics (same behaviour
// as the Rust rule in rules-wasm/authz-stats).
//
//   SELECT * FROM "$events/client_check_authz_complete"
//   HINCRBY authz_source ${authz_source} 1
//   HINCRBY authz_result ${result}:${action} 1

import { RuleError, hincrby, rule } from "../../guest-sdk/javascript/wasmrule.js";

function authzStats(event) {
  const fields = JSON.parse(event.json);
  const field = (name) => {
    if (typeof fields[name] !== "string") {
      throw new RuleError(`event has no string field \`${name}\``);
    }
    return fields[name];
  };
  const source = field("authz_source");
  const result = field("result");
  const action = field("action");
  return [
    hincrby("authz_source", source, "1"),
    hincrby("authz_result", `${result}:${action}`, "1"),
  ];
}

export const handler = rule(
  { name: "authz-stats", version: "0.1.0", filters: ["$events/client_check_authz_complete"] },
  authzStats,
);
