//! action-kinds (rule ABI v2), in Zig: a conformance rule that reads each reply type
//! and returns every kind of action; the same behaviour as rules-wasm/action-kinds (see
//! its lib.rs for the definition).

const wr = @import("wasmrule");

comptime {
    wr.exportRuleV2(.{
        .name = "action-kinds",
        .version = "0.1.0",
        .filters = &.{"kinds/+"},
    }, actionKinds);
}

fn join(parts: []const []const u8) wr.Error![]const u8 {
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

/// `n` in decimal, in the heap.
fn decimal(n: i64) wr.Error![]const u8 {
    var tmp: [21]u8 = undefined;
    var k: usize = tmp.len;
    var u: u64 = if (n < 0) 0 -% @as(u64, @bitCast(n)) else @intCast(n);
    while (true) {
        k -= 1;
        tmp[k] = @intCast('0' + u % 10);
        u /= 10;
        if (u == 0) break;
    }
    if (n < 0) {
        k -= 1;
        tmp[k] = '-';
    }
    return join(&.{tmp[k..]});
}

fn actionKinds(event: *const wr.Event, out: *wr.Actions) !void {
    const x = wr.topicLastLevel(try event.topic());
    const cfg = try wr.read(&.{ "HGETALL", try join(&.{ "cfg:", x }) });
    const len = try wr.read(&.{ "LLEN", try join(&.{ "q:", x }) });
    const missing = try wr.get(try join(&.{ "missing:", x }));
    const items = switch (cfg) {
        .array => |a| a,
        else => return out.fail("unexpected reply types"),
    };
    const n = switch (len) {
        .int => |i| i,
        else => return out.fail("unexpected reply types"),
    };
    const half: i64 = @intCast(items.len / 2);
    try out.command(&.{ "HSET", try join(&.{ "seen:", x }), "fields", try decimal(half), "len", try decimal(n) });
    const which: []const u8 = if (missing == .nil) "nil:" else "notnil:";
    try out.command(&.{ "INCR", try join(&.{ which, x }) });
    var i: usize = 0;
    while (i + 1 < items.len) : (i += 2) {
        const field = switch (items[i]) {
            .bulk => |b| b,
            else => return out.fail("a field is not a string"),
        };
        const value = switch (items[i + 1]) {
            .bulk => |b| b,
            else => return out.fail("a value is not a string"),
        };
        try out.publish(try join(&.{ "out/", x, "/", field }), value, 0, false);
        try out.property("n", try decimal(@intCast(i / 2)));
    }
    const client = try join(&.{ "c-", x });
    try out.subscribe(client, try join(&.{ "in/", x, "/#" }), 1);
    try out.unsubscribe(client, try join(&.{ "old/", x, "/#" }));
    try out.deliver(client, try join(&.{ "in/", x, "/hello" }), "hi", 1, true);
}
