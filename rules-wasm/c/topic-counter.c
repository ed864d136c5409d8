/*
 * topic-counter, in C: counts messages per topic in the hash mqtt_topic_count (same
 * behaviour as the Rust rule in rules-wasm/topic-counter).
 *
 *   HINCRBY mqtt_topic_count <topic> 1
 *
 * The filter # matches every topic except $-topics ($SYS/...), as MQTT requires.
 */
#include "wasmrule.h"

static int topic_counter(const wr_event *ev) {
    wr_command("HINCRBY");
    wr_arg_str("mqtt_topic_count");
    wr_arg(wr_event_topic(ev));
    wr_arg_str("1");
    return WR_OK;
}

WASMRULE_RULE("topic-counter", "0.1.0", "[\"#\"]", topic_counter)
