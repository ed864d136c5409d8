/*
 * store-last-message, in C: the EMQX demo's first rule (same behaviour as the Rust
 * rule in rules-wasm/store-last-message; fixtures in guest-sdk/conformance).
 *
 *   HSET emqx_messages <clientid, or the last topic level> <payload.temp>
 *
 * A numeric temp is stored as the device wrote it (21.50 stays 21.50), a string temp
 * as its unescaped text; anything else is an error.
 */
#include "wasmrule.h"

static int store_last_message(const wr_event *ev) {
    wr_bytes client, payload, raw, temp;
    if (!wr_event_clientid(ev, &client)) {
        client = wr_topic_last_level(wr_event_topic(ev));
        if (client.len == 0)
            return wr_error("no clientid in the event and no last topic level to use instead");
    }
    if (wr_event_payload_is_base64(ev))
        return wr_error("payload is binary (base64), not JSON text");
    if (!wr_event_payload_text(ev, &payload))
        return wr_error("event has no payload");
    switch (wr_json_member(payload, "temp", &raw)) {
    case WR_JSON_FOUND: break;
    case WR_JSON_MISSING: return wr_error("payload has no top-level temp");
    case WR_JSON_INVALID: return wr_error("payload is not a valid JSON object");
    }
    if (wr_json_is_number(raw)) {
        temp = raw; /* the text as written: 21.50 stays 21.50 */
    } else if (!wr_json_string(raw, &temp)) {
        return wr_error("payload.temp is not a number or a string");
    }
    wr_command("HSET");
    wr_arg_str("emqx_messages");
    wr_arg(client);
    wr_arg(temp);
    return WR_OK;
}

WASMRULE_RULE("store-last-message", "0.1.0", "[\"store-last-message/+\"]", store_last_message)
