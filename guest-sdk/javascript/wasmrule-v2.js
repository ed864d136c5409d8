// wasmrule-v2.js: write wasmrule rules of ABI v2 in JavaScript: components of the WIT
// world wasmrule:rule@2.0.0 (guest-sdk/wit-v2/rule.wit), which may read Redis and
// return MQTT actions beside Redis commands.
//
// A rule is one ES module, as with wasmrule.js (whose helpers are re-exported here):
//
//     import { get, publish, rule, setCommand } from "../../guest-sdk/javascript/wasmrule-v2.js";
//
//     function remember(event) {
//       const previous = get("last");
//       const out = [setCommand("last", event.payload)];
//       if (previous === null) out.push(publish("firsts", event.payload, { qos: 1 }));
//       return out;
//     }
//
//     export const handler = rule({ name: "remember", version: "0.1.0", filters: ["readings/+"] }, remember);
//
// Build with componentize-qjs against the v2 world, from the repository root:
//
//     componentize-qjs --wit guest-sdk/wit-v2 --world rule --js rule.js \
//         --stub-wasi --sync --opt-size -o rule.wasm
//
// Reads return null (nil), a number (integer), a Uint8Array (bulk) or an array of
// those; a refused or failed read throws a ReadError whose `code` is the ABI's name
// ("not_allowed", "unavailable", ...). The handler returns an action or a command, a
// list of them, or null.

import redis from "wasmrule:rule/redis@2.0.0";
import { RuleError, arg, command, fromUtf8 } from "./wasmrule.js";

export {
  RuleError, arg, clientid, command, eventField, fromUtf8, hincrby, hset, isUtf8,
  jsonMembers, payloadIsBase64, payloadText, topicLastLevel, utf8,
} from "./wasmrule.js";

// The WIT enum's cases, by the ABI's names.
const CODES = {
  "not-allowed": "not_allowed",
  "bad-request": "bad_request",
  "over-budget": "over_budget",
  unavailable: "unavailable",
  "redis-error": "redis_error",
};

/** A read got no reply; `code` is the ABI's name for why. */
export class ReadError extends Error {
  constructor(code) {
    super(`redis read failed: ${code}`);
    this.name = "ReadError";
    this.code = code;
  }
}

// The value whose first node is nodes[at.i], moving at.i past it.
function tree(nodes, at) {
  const n = nodes[at.i++];
  switch (n.tag) {
    case "nil":
      return null;
    case "integer":
    case "bulk":
      return n.val;
    default: {
      const items = [];
      for (let k = 0; k < n.val; k++) items.push(tree(nodes, at));
      return items;
    }
  }
}

/** Runs one read-only command of the read set (docs/abi.md) and returns its reply. */
export function read(name, ...args) {
  let nodes;
  try {
    nodes = redis.read([arg(name), ...args.map(arg)]);
  } catch (e) {
    throw new ReadError(CODES[e] ?? "unknown");
  }
  return tree(nodes, { i: 0 });
}

/** `GET key`: a Uint8Array, or null. */
export function get(key) {
  return read("GET", key);
}

/** `HGET key field`: a Uint8Array, or null. */
export function hget(key, field) {
  return read("HGET", key, field);
}

/** `SET key value` as a command. */
export function setCommand(key, value) {
  return command("SET", key, value);
}

const text = (v) => (typeof v === "string" ? v : fromUtf8(v));

/** An MQTT publish; `properties` is a list of [key, value] MQTT 5 user properties. */
export function publish(topic, payload, { qos = 0, retain = false, properties = [] } = {}) {
  return {
    tag: "publish",
    val: {
      topic: text(topic),
      payload: arg(payload),
      qos,
      retain,
      properties: properties.map(([k, v]) => [text(k), text(v)]),
    },
  };
}

/** Subscribes the session of `client` to `filter` (embedded broker). */
export function subscribe(client, filter, qos = 0) {
  return { tag: "subscribe", val: { clientid: text(client), filter: text(filter), qos } };
}

/** Unsubscribes the session of `client` from `filter` (embedded broker). */
export function unsubscribe(client, filter) {
  return { tag: "unsubscribe", val: { clientid: text(client), filter: text(filter) } };
}

/** Delivers `payload` on `topic` to the session of `client` only (embedded broker). */
export function deliver(client, topic, payload, { qos = 0, retain = false } = {}) {
  return {
    tag: "deliver",
    val: { clientid: text(client), topic: text(topic), payload: arg(payload), qos, retain },
  };
}

const isAction = (a) => a !== null && typeof a === "object" && typeof a.tag === "string";
const isCommand = (a) => Array.isArray(a) && a.length > 0 && !isAction(a);

function action(a) {
  return isAction(a) ? a : { tag: "redis", val: a.map(arg) };
}

/** The handler export for the v2 world: `handle(event)` returns actions and commands. */
export function rule(manifest, handle) {
  return {
    manifest() {
      return {
        name: manifest.name,
        version: manifest.version ?? null,
        filters: [...manifest.filters],
      };
    },
    onEvent(event) {
      let out;
      try {
        out = handle(event);
      } catch (e) {
        // A thrown string is the component's result<_, string> error.
        if (e instanceof RuleError) throw e.message;
        throw `${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : String(e)}`;
      }
      if (out === null || out === undefined) return [];
      if (isAction(out) || (isCommand(out) && !Array.isArray(out[0]) && !isAction(out[0]))) {
        return [action(out)];
      }
      return out.map(action);
    },
  };
}
