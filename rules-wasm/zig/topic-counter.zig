//! topic-counter, in Zig: counts messages per topic in the hash mqtt_topic_count (same
//! behaviour as the Rust rule in rules-wasm/topic-counter).
//!
//!     HINCRBY mqtt_topic_count <topic> 1
//!
//! The filter # matches every topic except $-topics ($SYS/...), as MQTT requires.

const wr = @import("wasmrule");

comptime {
    wr.exportRule(.{
        .name = "topic-counter",
        .version = "0.1.0",
        .filters = &.{"#"},
    }, topicCounter);
}

fn topicCounter(event: *const wr.Event, out: *wr.Output) wr.Error!void {
    try out.command(&.{ "HINCRBY", "mqtt_topic_count", try event.topic(), "1" });
}
