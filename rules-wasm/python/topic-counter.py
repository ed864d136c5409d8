"""topic-counter, in Python: counts messages per topic in the hash mqtt_topic_count
(same behaviour as the Rust rule in rules-wasm/topic-counter).

    HINCRBY mqtt_topic_count <topic> 1

The filter # matches every topic except $-topics ($SYS/...), as MQTT requires.
"""

from wasmrule import hincrby, rule


def topic_counter(event):
    return hincrby("mqtt_topic_count", event.topic, 1)


Handler = rule("topic-counter", "0.1.0", ["#"], topic_counter)
