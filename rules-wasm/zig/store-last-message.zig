//! store-last-message, in Zig: the EMQX demo's first rule (same behaviour as the Rust
//! rule in rules-wasm/store-last-message; fixtures in guest-sdk/conformance).
//!
//!     HSET emqx_messages <clientid, or the last topic level> <payload.temp>
//!
//! A numeric temp is stored as the device wrote it (21.50 stays 21.50), a string temp
//! as its unescaped text; anything else is an error.

const wr = @import("wasmrule");

comptime {
    wr.exportRule(.{
        .name = "store-last-message",
        .version = "0.1.0",
        .filters = &.{"store-last-message/+"},
    }, storeLastMessage);
}

fn storeLastMessage(event: *const wr.Event, out: *wr.Output) wr.Error!void {
    const client = try event.clientid() orelse wr.topicLastLevel(try event.topic());
    if (client.len == 0)
        return out.fail("no clientid in the event and no last topic level to use instead");
    if (try event.payloadIsBase64())
        return out.fail("payload is binary (base64), not JSON text");
    const payload = try event.payloadText() orelse return out.fail("event has no payload");
    const raw = switch (try wr.json.member(payload, "temp")) {
        .found => |raw| raw,
        .missing => return out.fail("payload has no top-level temp"),
        .invalid => return out.fail("payload is not a valid JSON object"),
    };
    // A number keeps the text as written: 21.50 stays 21.50.
    const temp = if (wr.json.isNumber(raw)) raw else try wr.json.string(raw) orelse
        return out.fail("payload.temp is not a number or a string");
    try out.command(&.{ "HSET", "emqx_messages", client, temp });
}
