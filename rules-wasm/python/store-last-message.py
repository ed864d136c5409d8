"""store-last-message, in Python: the EMQX demo's
``HSET emqx_messages ${clientid} ${payload.temp}`` (same behaviour as the Rust rule in
rules-wasm/store-last-message).

The client is the event's client id, or else the last topic level; a numeric temp is
stored as the device wrote it (21.50 stays 21.50), a string temp as its text.
"""

from wasmrule import (
    RuleError, clientid, hset, json_members, payload_text, rule, topic_last_level,
)


def store_last_message(event):
    client = clientid(event) or topic_last_level(event.topic)
    if client is None:
        raise RuleError("no clientid in the event and no last topic level to use instead")
    reading = json_members(payload_text(event), "temp")
    if "temp" not in reading:
        raise RuleError("payload has no top-level temp")
    temp = reading["temp"]
    # Number is a str subclass holding the text as written; a plain str is a JSON string.
    if not isinstance(temp, str):
        raise RuleError("payload.temp is not a number or a string")
    return hset("emqx_messages", client, temp)


Handler = rule("store-last-message", "0.1.0", ["store-last-message/+"], store_last_message)
