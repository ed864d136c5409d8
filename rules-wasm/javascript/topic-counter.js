// topic-counter, in JavaScript: counts messages per topic in the hash mqtt_topic_count
// (same behaviour as the Rust rule in rules-wasm/topic-counter).
//
//   HINCRBY mqtt_topic_count <topic> 1
//
// The filter # matches every topic except $-topics ($SYS/...), as MQTT requires.

import { hincrby, rule } from "../../guest-sdk/javascript/wasmrule.js";

export const handler = rule(
  { name: "topic-counter", version: "0.1.0", filters: ["#"] },
  (event) => hincrby("mqtt_topic_count", event.topic, 1),
);
