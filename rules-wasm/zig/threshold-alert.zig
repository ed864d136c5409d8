//! threshold-alert (rule ABI v2), in Zig: the same behaviour as the Rust rule in
//! rules-wasm/threshold-alert (see its lib.rs for the definition).
//!
//! On readings/<device> with a decimal reading as the payload: GET last:<device>, then
//! SET last:<device> <payload>, and when |cur - prev| > 0.1 * |prev| an MQTT publish on
//! alerts/<device> (QoS 1) of {"device":"<device>","previous":<prev>,"current":<cur>}.
//! Readings are compared exactly, as integers in millionths.

const wr = @import("wasmrule");

comptime {
    wr.exportRuleV2(.{
        .name = "threshold-alert",
        .version = "0.1.0",
        .filters = &.{"readings/+"},
    }, thresholdAlert);
}

/// A reading -?(0|[1-9][0-9]*)(.[0-9]+)? of at most 9 integer and 6 fraction digits, in
/// millionths; null when `t` is none.
fn parseReading(t: []const u8) ?i64 {
    var i: usize = 0;
    const neg = t.len > 0 and t[0] == '-';
    if (neg) i += 1;
    var v: i64 = 0;
    var digits: usize = 0;
    while (i < t.len and t[i] >= '0' and t[i] <= '9') : ({
        i += 1;
        digits += 1;
    }) {
        if (digits == 1 and v == 0) return null; // a leading zero
        v = v * 10 + (t[i] - '0');
    }
    if (digits == 0 or digits > 9) return null;
    var frac: usize = 0;
    if (i < t.len) {
        if (t[i] != '.') return null;
        i += 1;
        while (i < t.len) : ({
            i += 1;
            frac += 1;
        }) {
            if (t[i] < '0' or t[i] > '9' or frac == 6) return null;
            v = v * 10 + (t[i] - '0');
        }
        if (frac == 0) return null;
    }
    while (frac < 6) : (frac += 1) v *= 10;
    return if (neg) -v else v;
}

fn validDevice(d: []const u8) bool {
    if (d.len == 0 or d.len > 64) return false;
    for (d) |b| {
        const ok = (b >= '0' and b <= '9') or (b >= 'a' and b <= 'z') or
            (b >= 'A' and b <= 'Z') or b == '-' or b == '_' or b == '.';
        if (!ok) return false;
    }
    return true;
}

fn concat(parts: []const []const u8) wr.Error![]const u8 {
    var n: usize = 0;
    for (parts) |p| n += p.len;
    const buf = try wr.alloc(n);
    var at: usize = 0;
    for (parts) |p| {
        @memcpy(buf[at..][0..p.len], p);
        at += p.len;
    }
    return buf;
}

fn abs(x: i64) i64 {
    return if (x < 0) -x else x;
}

fn thresholdAlert(event: *const wr.Event, out: *wr.Actions) wr.Error!void {
    const device = wr.topicLastLevel(try event.topic());
    if (!validDevice(device))
        return out.fail("the device (last topic level) is not 1 to 64 of A-Z a-z 0-9 - _ .");
    if (try event.payloadIsBase64())
        return out.fail("payload is binary (base64), not a reading");
    const text = try event.payloadText() orelse
        return out.fail("payload is not a reading: a decimal of at most 9.6 digits");
    const cur = parseReading(text) orelse
        return out.fail("payload is not a reading: a decimal of at most 9.6 digits");
    const key = try concat(&.{ "last:", device });
    const previous = wr.get(key) catch |e| switch (e) {
        error.OutOfMemory => return error.OutOfMemory,
        else => return out.fail("redis read failed"),
    };
    try out.command(&.{ "SET", key, text });
    const prev_text = switch (previous) {
        .bulk => |b| b,
        else => return,
    };
    const prev = parseReading(prev_text) orelse return;
    if (abs(cur - prev) * 10 <= abs(prev)) return;
    // Neither the device nor a reading holds a character JSON escapes.
    const json = try concat(&.{ "{\"device\":\"", device, "\",\"previous\":", prev_text, ",\"current\":", text, "}" });
    try out.publish(try concat(&.{ "alerts/", device }), json, 1, false);
}
