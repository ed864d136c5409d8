//! wasmrule.zig: write wasmrule rules in Zig (rule ABI v1 and v2, docs/abi.md).
//!
//! A rule is one file that exports itself with `exportRule` and a handler:
//!
//!     const wr = @import("wasmrule");
//!
//!     comptime {
//!         wr.exportRule(.{
//!             .name = "topic-counter",
//!             .version = "0.1.0",
//!             .filters = &.{"#"},
//!         }, count);
//!     }
//!
//!     fn count(event: *const wr.Event, out: *wr.Output) wr.Error!void {
//!         try out.command(&.{ "HINCRBY", "mqtt_topic_count", try event.topic(), "1" });
//!     }
//!
//! Build with Zig 0.17 (`pip install ziglang==0.17.1`), naming this file as the
//! `wasmrule` module:
//!
//!     python -m ziglang build-exe -target wasm32-freestanding -fno-entry -rdynamic \
//!         -O ReleaseSmall --stack 65536 --dep wasmrule -Mroot=rule.zig \
//!         -Mwasmrule=guest-sdk/zig/wasmrule.zig -femit-bin=rule.wasm
//!
//! `-rdynamic` exports what `exportRule` marks for export; the module imports nothing.
//! `--stack 65536` keeps the module at one page of initial memory (Zig reserves 1 MiB of
//! stack otherwise); nothing here recurses.
//!
//! A handler reports "cannot handle this event" with `return out.fail("why")`. Any other
//! error it returns becomes the rule's error message by name (`error.NoReading` gives
//! "NoReading"); `error.OutOfMemory` comes from this SDK when memory cannot grow.
//!
//! A rule of ABI v2 exports itself with `exportRuleV2`: its handler takes `*Actions`
//! (commands as `Output` has them, plus `publish`, `property`, `subscribe`,
//! `unsubscribe` and `deliver`) and may read Redis with `read`, `get` and `hget`, which
//! return a typed `Value` or a `ReadError` (the ABI's codes). The module then imports
//! `wasmrule.redis_read` and `wasmrule.redis_reply`.
//!
//! Memory is a bump allocator: the host makes a fresh instance for every event, so
//! nothing is ever freed. Everything is a byte slice, because MQTT topics, JSON text
//! and Redis arguments are bytes (UTF-8 where text).

/// What built the module, reported in the manifest's `sdk` field.
pub const sdk = "wasmrule-guest-zig/0.1.0";

/// What the SDK itself can fail with.
pub const Error = error{
    /// The handler called `Output.fail`.
    RuleFailed,
    /// Linear memory could not grow.
    OutOfMemory,
};

// -----------------------------------------------------------------------------------
// Memory
// -----------------------------------------------------------------------------------

/// First address after the data segments and the stack; set by the linker.
extern const __heap_base: u8;

/// Next free address; 0 until the first allocation.
var heap_next: usize = 0;

/// `len` bytes aligned to 8, growing memory when needed.
pub fn alloc(len: usize) Error![]u8 {
    if (heap_next == 0) heap_next = @intFromPtr(&__heap_base);
    const start = (heap_next + 7) & ~@as(usize, 7);
    // 64-bit arithmetic: a full 4 GiB memory does not fit in usize (32 bits) as bytes.
    const end = @as(u64, start) + len;
    const have = @as(u64, @wasmMemorySize(0)) << 16;
    if (end > have) {
        if (end > (1 << 32)) return error.OutOfMemory;
        const pages: usize = @intCast((end - have + 0xffff) >> 16);
        if (@wasmMemoryGrow(0, pages) < 0) return error.OutOfMemory;
    }
    heap_next = @intCast(end);
    return @as([*]u8, @ptrFromInt(start))[0..len];
}

fn copy(dst: []u8, src: []const u8) void {
    @memcpy(dst[0..src.len], src);
}

fn eql(a: []const u8, b: []const u8) bool {
    if (a.len != b.len) return false;
    for (a, b) |x, y| if (x != y) return false;
    return true;
}

// -----------------------------------------------------------------------------------
// JSON
// -----------------------------------------------------------------------------------

/// Enough JSON for rules: validate a text and find top-level members of an object as
/// their raw source text; then read that text as a string (unescaped) or keep it as is
/// (a number keeps the digits the device wrote: 21.50 stays 21.50).
///
/// The reader is strict like serde_json, so every language's rule accepts and rejects
/// the same payloads: RFC 8259 grammar, no control characters inside strings, nothing
/// but whitespace after the value, and a key asked for that appears twice makes the
/// object invalid. Like serde_json skipping members it does not need, it accepts any
/// depth of nesting: it keeps its own stack instead of recursing.
pub const json = struct {
    /// The outcome of looking up one member.
    pub const Member = union(enum) {
        /// The member's raw text.
        found: []const u8,
        /// The text is a valid object without that top-level member.
        missing,
        /// Not valid JSON, not an object, or the member appears twice.
        invalid,
    };

    /// Finds the top-level members `keys` of the JSON object in `text` in one pass,
    /// validating all of `text` on the way. values[i] gets the raw text of member
    /// keys[i] (no surrounding whitespace: `"a\"b"` with its quotes and escapes,
    /// `21.50`, `{...}`, `null`) or null. Returns false when `text` is not a valid
    /// object or one of the keys appears twice.
    pub fn members(text: []const u8, keys: []const []const u8, values: []?[]const u8) Error!bool {
        for (values) |*v| v.* = null;
        var c = Cursor{ .s = text };
        c.ws();
        if (!c.eat('{')) return false;
        c.ws();
        if (!c.eat('}')) {
            while (true) {
                const k = c.i;
                if (!c.skipString()) return false;
                const key = text[k..c.i];
                c.ws();
                if (!c.eat(':')) return false;
                c.ws();
                const v = c.i;
                if (!try c.skipValue()) return false;
                for (keys, values) |want, *value| {
                    switch (keyIs(key, want)) {
                        .same => {
                            if (value.* != null) return false; // twice: which one is meant?
                            value.* = text[v..c.i];
                        },
                        .different => {},
                        .invalid => return false,
                    }
                }
                c.ws();
                if (c.eat('}')) break;
                if (!c.eat(',')) return false;
                c.ws();
            }
        }
        c.ws();
        return c.i == text.len; // nothing may follow the object
    }

    /// Finds one top-level member of the JSON object in `text`, as `members` does.
    pub fn member(text: []const u8, key: []const u8) Error!Member {
        var value: [1]?[]const u8 = undefined;
        if (!try members(text, &.{key}, &value)) return .invalid;
        return if (value[0]) |raw| .{ .found = raw } else .missing;
    }

    /// Whether raw member text is a string.
    pub fn isString(raw: []const u8) bool {
        return raw.len > 0 and raw[0] == '"';
    }

    /// Whether raw member text is a number (it was validated, so its first byte tells).
    pub fn isNumber(raw: []const u8) bool {
        return raw.len > 0 and (raw[0] == '-' or (raw[0] >= '0' and raw[0] <= '9'));
    }

    /// The content of raw string text from `members`, unescaped into UTF-8; null when
    /// `raw` is not a string or holds an unpaired \u surrogate. Shares the input's
    /// memory when there is nothing to unescape.
    pub fn string(raw: []const u8) Error!?[]const u8 {
        if (!isString(raw)) return null;
        const body = raw[1 .. raw.len - 1];
        for (body) |b| {
            if (b == '\\') break;
        } else return body;
        // Unescaping never lengthens: \uXXXX (6 bytes) gives at most 3, a pair (12) 4.
        const out = try alloc(body.len);
        var n: usize = 0;
        var i: usize = 0;
        while (i < body.len) {
            // Copy the run up to the next escape in one go, then decode the escape.
            const run = i;
            while (i < body.len and body[i] != '\\') i += 1;
            copy(out[n..], body[run..i]);
            n += i - run;
            if (i == body.len) break;
            const ch = decodeChar(raw, i + 1) orelse return null;
            copy(out[n..], ch.bytes[0..ch.len]);
            n += ch.len;
            i = ch.next - 1;
        }
        return out[0..n];
    }

    /// The closing brackets of the containers open while skipping a value, innermost
    /// last. Kept between calls: the next text is usually shorter.
    var stack: []u8 = &.{};

    const Cursor = struct {
        s: []const u8,
        i: usize = 0,

        fn ws(c: *Cursor) void {
            while (c.i < c.s.len) : (c.i += 1) {
                switch (c.s[c.i]) {
                    ' ', '\t', '\n', '\r' => {},
                    else => return,
                }
            }
        }

        fn eat(c: *Cursor, b: u8) bool {
            if (c.i < c.s.len and c.s[c.i] == b) {
                c.i += 1;
                return true;
            }
            return false;
        }

        /// Skips a string starting at its opening quote. Checks escapes are well formed
        /// but (like serde_json for strings it skips) not that \u surrogates pair up.
        fn skipString(c: *Cursor) bool {
            const s = c.s;
            var i = c.i;
            if (i >= s.len or s[i] != '"') return false;
            i += 1;
            while (i < s.len) {
                const b = s[i];
                i += 1;
                switch (b) {
                    '"' => {
                        c.i = i;
                        return true;
                    },
                    0...0x1f => return false, // control characters must be escaped
                    '\\' => {
                        if (i >= s.len) return false;
                        const e = s[i];
                        i += 1;
                        switch (e) {
                            '"', '\\', '/', 'b', 'f', 'n', 'r', 't' => {},
                            'u' => {
                                if (s.len - i < 4) return false;
                                for (s[i .. i + 4]) |h| if (hexDigit(h) == null) return false;
                                i += 4;
                            },
                            else => return false,
                        }
                    },
                    else => {},
                }
            }
            return false; // no closing quote
        }

        fn digits(c: *Cursor) bool {
            const start = c.i;
            while (c.i < c.s.len and c.s[c.i] >= '0' and c.s[c.i] <= '9') c.i += 1;
            return c.i > start;
        }

        /// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
        fn skipNumber(c: *Cursor) bool {
            _ = c.eat('-');
            if (c.eat('0')) {
                // a lone 0: no leading zeros in JSON
            } else if (c.i < c.s.len and c.s[c.i] >= '1' and c.s[c.i] <= '9') {
                _ = c.digits();
            } else {
                return false;
            }
            if (c.eat('.') and !c.digits()) return false;
            if (c.eat('e') or c.eat('E')) {
                if (!c.eat('+')) _ = c.eat('-');
                if (!c.digits()) return false;
            }
            return true;
        }

        fn skipWord(c: *Cursor, word: []const u8) bool {
            for (word) |b| if (!c.eat(b)) return false;
            return true;
        }

        /// Skips an object key and its colon, with the whitespace around them.
        fn skipKey(c: *Cursor) bool {
            c.ws();
            if (!c.skipString()) return false;
            c.ws();
            return c.eat(':');
        }

        /// Skips one value, with the whitespace before it.
        fn skipValue(c: *Cursor) Error!bool {
            var depth: usize = 0;
            while (true) {
                // Here a value starts.
                c.ws();
                if (c.i >= c.s.len) return false;
                const b = c.s[c.i];
                const ok = switch (b) {
                    '{', '[' => open: {
                        const close: u8 = if (b == '{') '}' else ']';
                        c.i += 1;
                        c.ws();
                        if (c.eat(close)) break :open true;
                        // Not empty: remember the container and read its first value.
                        // Every further level needs at least one more byte of text, so
                        // a stack of the current depth plus the rest of the text never
                        // needs to grow again in this call.
                        if (depth == stack.len) {
                            const grown = try alloc(depth + (c.s.len - c.i) + 1);
                            copy(grown, stack[0..depth]);
                            stack = grown;
                        }
                        stack[depth] = close;
                        depth += 1;
                        if (close == '}' and !c.skipKey()) return false;
                        continue;
                    },
                    '"' => c.skipString(),
                    't' => c.skipWord("true"),
                    'f' => c.skipWord("false"),
                    'n' => c.skipWord("null"),
                    else => c.skipNumber(),
                };
                if (!ok) return false;
                // Here a value ended: close containers until one has a next value.
                while (true) {
                    if (depth == 0) return true;
                    c.ws();
                    const close = stack[depth - 1];
                    if (c.eat(close)) {
                        depth -= 1;
                        continue;
                    }
                    if (!c.eat(',')) return false;
                    if (close == '}' and !c.skipKey()) return false;
                    break;
                }
            }
        }
    };

    fn hexDigit(b: u8) ?u8 {
        return switch (b) {
            '0'...'9' => b - '0',
            'a'...'f' => b - 'a' + 10,
            'A'...'F' => b - 'A' + 10,
            else => null,
        };
    }

    /// One decoded character: its UTF-8 bytes and where the text after it starts.
    const Char = struct { bytes: [4]u8, len: u3, next: usize };

    /// Decodes the escape whose backslash is at token[at] (token: a validated string,
    /// quotes included); null for an unpaired \u surrogate (not text: serde_json
    /// refuses it too).
    fn decodeChar(token: []const u8, at: usize) ?Char {
        var ch = Char{ .bytes = undefined, .len = 1, .next = at + 2 };
        const e = token[at + 1];
        ch.bytes[0] = switch (e) {
            'b' => 0x08,
            'f' => 0x0c,
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => 0,
            else => e, // \" \\ \/
        };
        if (e != 'u') return ch;
        var cp: u21 = hex4(token[at + 2 .. at + 6]);
        ch.next = at + 6;
        if (cp >= 0xdc00 and cp <= 0xdfff) return null; // a low surrogate first
        if (cp >= 0xd800 and cp <= 0xdbff) {
            // A high surrogate must be followed by \u and a low surrogate. The token was
            // validated, so token[at+6] and [at+7] exist (at worst the closing quote),
            // and after \u come four hex digits.
            if (token[at + 6] != '\\' or token[at + 7] != 'u') return null;
            const lo = hex4(token[at + 8 .. at + 12]);
            if (lo < 0xdc00 or lo > 0xdfff) return null;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            ch.next = at + 12;
        }
        if (cp < 0x80) {
            ch.bytes[0] = @intCast(cp);
        } else if (cp < 0x800) {
            ch.bytes[0] = @intCast(0xc0 | (cp >> 6));
            ch.bytes[1] = @intCast(0x80 | (cp & 0x3f));
            ch.len = 2;
        } else if (cp < 0x10000) {
            ch.bytes[0] = @intCast(0xe0 | (cp >> 12));
            ch.bytes[1] = @intCast(0x80 | ((cp >> 6) & 0x3f));
            ch.bytes[2] = @intCast(0x80 | (cp & 0x3f));
            ch.len = 3;
        } else {
            ch.bytes[0] = @intCast(0xf0 | (cp >> 18));
            ch.bytes[1] = @intCast(0x80 | ((cp >> 12) & 0x3f));
            ch.bytes[2] = @intCast(0x80 | ((cp >> 6) & 0x3f));
            ch.bytes[3] = @intCast(0x80 | (cp & 0x3f));
            ch.len = 4;
        }
        return ch;
    }

    /// Four validated hex digits.
    fn hex4(h: []const u8) u21 {
        var v: u21 = 0;
        for (h[0..4]) |d| v = (v << 4) | (hexDigit(d) orelse 0);
        return v;
    }

    const KeyMatch = enum { same, different, invalid };

    /// Whether the validated string token `token` (quotes included) says `key`,
    /// comparing decoded characters so that an escaped key ("te\u006dp") matches too.
    /// `.invalid` for an unpaired surrogate, which makes the whole object invalid.
    fn keyIs(token: []const u8, key: []const u8) KeyMatch {
        var i: usize = 1;
        var n: usize = 0;
        var same = true;
        while (i < token.len - 1) {
            var ch = Char{ .bytes = .{ token[i], 0, 0, 0 }, .len = 1, .next = i + 1 };
            if (token[i] == '\\') ch = decodeChar(token, i) orelse return .invalid;
            for (ch.bytes[0..ch.len]) |b| {
                if (n >= key.len or key[n] != b) same = false;
                n += 1;
            }
            i = ch.next;
        }
        return if (same and n == key.len) .same else .different;
    }
};

// -----------------------------------------------------------------------------------
// The event (docs/events.md)
// -----------------------------------------------------------------------------------

/// One event: the JSON object the host wrote into our memory, with the raw text of
/// the fields every rule reads found in one pass before the handler runs.
pub const Event = struct {
    json: []const u8,
    raw_clientid: ?[]const u8,
    raw_topic: ?[]const u8,
    raw_payload: ?[]const u8,
    raw_payload_encoding: ?[]const u8,

    /// Reads the event's common fields; null when it is not a valid JSON object.
    pub fn parse(text: []const u8) Error!?Event {
        var raw: [4]?[]const u8 = undefined;
        const keys = [_][]const u8{ "clientid", "topic", "payload", "payload_encoding" };
        if (!try json.members(text, &keys, &raw)) return null;
        return .{
            .json = text,
            .raw_clientid = raw[0],
            .raw_topic = raw[1],
            .raw_payload = raw[2],
            .raw_payload_encoding = raw[3],
        };
    }

    /// The top-level string field `name`, unescaped; null when it is absent, null,
    /// not a string or holds an unpaired \u surrogate. Reads the whole event again: for
    /// the fields below, use their own functions.
    pub fn str(self: *const Event, name: []const u8) Error!?[]const u8 {
        return switch (try json.member(self.json, name)) {
            .found => |raw| json.string(raw),
            else => null,
        };
    }

    /// The publisher's client id when the source knows it; empty counts as unknown.
    pub fn clientid(self: *const Event) Error!?[]const u8 {
        const id = (try json.string(self.raw_clientid orelse return null)) orelse return null;
        return if (id.len > 0) id else null;
    }

    /// The MQTT topic (empty if the event has none, which the host never sends).
    pub fn topic(self: *const Event) Error![]const u8 {
        return (try json.string(self.raw_topic orelse return "")) orelse "";
    }

    /// Whether the payload is binary, given in base64 (`payload_encoding` "base64").
    pub fn payloadIsBase64(self: *const Event) Error!bool {
        const enc = (try json.string(self.raw_payload_encoding orelse return false)) orelse
            return false;
        return eql(enc, "base64");
    }

    /// The payload as text; null when it is binary (see payloadIsBase64) or missing.
    pub fn payloadText(self: *const Event) Error!?[]const u8 {
        if (try self.payloadIsBase64()) return null;
        return json.string(self.raw_payload orelse return null);
    }
};

// -----------------------------------------------------------------------------------
// Topics
// -----------------------------------------------------------------------------------

/// Level `i` (from 0) of `topic`: "a/b/c" level 1 is "b"; null past the last level.
pub fn topicLevel(topic: []const u8, i: usize) ?[]const u8 {
    var level = i;
    var start: usize = 0;
    for (0..topic.len + 1) |at| {
        if (at == topic.len or topic[at] == '/') {
            if (level == 0) return topic[start..at];
            level -= 1;
            start = at + 1;
        }
    }
    return null;
}

/// The text after the last '/' (all of it if there is none); empty for "a/".
pub fn topicLastLevel(topic: []const u8) []const u8 {
    var start = topic.len;
    while (start > 0 and topic[start - 1] != '/') start -= 1;
    return topic[start..];
}

// -----------------------------------------------------------------------------------
// The result buffer (docs/abi.md, "Result buffer")
//
//   commands: u8 0, u32 count, then per command u32 argc and per argument u32 len +
//             bytes (all u32 little-endian)
//   error:    u8 1, UTF-8 message
// -----------------------------------------------------------------------------------

/// What a handler produces: commands, or an error message.
pub const Output = OutputOf(false);

/// What a v2 handler produces: actions (commands and MQTT actions), or an error
/// message. Its result buffer holds a kind byte before each action (docs/abi.md,
/// "Actions").
pub const Actions = OutputOf(true);

fn OutputOf(comptime v2: bool) type {
    return struct {
        const Self = @This();
        buf: []u8 = &.{},
        len: usize = 0,
        argc_at: usize = 0, // offset of the current command's argc; 0 before the first
        // v2: offset of the last publish's property count; 0 if none. No field in v1.
        props_at: if (v2) usize else void = if (v2) 0 else {},
        message: ?[]const u8 = null,

        /// Adds one command: its name and arguments, any bytes.
        ///
        /// # Examples
        ///
        ///     try out.command(&.{ "HSET", "emqx_messages", client, temp });
        pub fn command(self: *Self, args: []const []const u8) Error!void {
            try self.begin(args[0]);
            for (args[1..]) |a| try self.arg(a);
        }

        /// Starts a command named `name`; add its arguments with `arg`.
        pub fn begin(self: *Self, name: []const u8) Error!void {
            try self.reserve(if (v2) 5 else 4);
            put(self.buf[1..5], load32(self.buf[1..5]) + 1); // count
            if (v2) {
                self.buf[self.len] = 0; // action kind 0: a Redis command
                self.len += 1;
                self.props_at = 0;
            }
            self.argc_at = self.len;
            put(self.buf[self.len..][0..4], 0);
            self.len += 4;
            try self.arg(name);
        }

        /// Appends an argument to the current command.
        pub fn arg(self: *Self, bytes: []const u8) Error!void {
            try self.reserve(4 + bytes.len);
            put(self.buf[self.len..][0..4], @intCast(bytes.len));
            copy(self.buf[self.len + 4 ..], bytes);
            self.len += 4 + bytes.len;
            const argc = self.buf[self.argc_at..][0..4];
            put(argc, load32(argc) + 1);
        }

        /// Reports that the rule cannot handle this event: the host logs `message` and
        /// writes nothing for this event, even commands added before. Use it as
        /// `return out.fail("why")`.
        pub fn fail(self: *Self, message: []const u8) Error {
            self.message = message;
            return error.RuleFailed;
        }

        fn reserve(self: *Self, more: usize) Error!void {
            if (self.buf.len - self.len < more) {
                var cap: usize = if (self.buf.len > 0) self.buf.len else 256;
                while (cap - self.len < more) cap *|= 2;
                // The bump allocator cannot grow in place: move to a fresh, larger block.
                const grown = try alloc(cap);
                copy(grown, self.buf[0..self.len]);
                self.buf = grown;
            }
            if (self.len == 0) {
                self.buf[0] = 0; // tag: commands follow
                put(self.buf[1..5], 0); // count
                self.len = 5;
            }
        }

        // ABI v2 actions: kind 1 publish, 2 subscribe, 3 unsubscribe, 4 deliver.

        fn action(self: *Self, kind: u8, size: usize) Error!void {
            if (!v2) @compileError("MQTT actions need a rule of ABI v2: exportRuleV2 and *Actions");
            try self.reserve(1 + size);
            put(self.buf[1..5], load32(self.buf[1..5]) + 1); // count
            self.buf[self.len] = kind;
            self.len += 1;
            self.argc_at = 0;
            self.props_at = 0;
        }

        fn str(self: *Self, bytes: []const u8) void {
            put(self.buf[self.len..][0..4], @intCast(bytes.len));
            copy(self.buf[self.len + 4 ..], bytes);
            self.len += 4 + bytes.len;
        }

        fn byte(self: *Self, b: u8) void {
            self.buf[self.len] = b;
            self.len += 1;
        }

        /// Publishes `payload` on `topic` (QoS 0 or 1); add user properties with
        /// `property` right after.
        pub fn publish(self: *Self, topic: []const u8, payload: []const u8, qos: u8, retain: bool) Error!void {
            try self.action(1, 14 + topic.len + payload.len);
            self.str(topic);
            self.str(payload);
            self.byte(qos);
            self.byte(@intFromBool(retain));
            self.props_at = self.len;
            put(self.buf[self.len..][0..4], 0);
            self.len += 4;
        }

        /// Adds an MQTT 5 user property to the publish just added (ignored otherwise).
        pub fn property(self: *Self, key: []const u8, value: []const u8) Error!void {
            if (self.props_at == 0) return;
            try self.reserve(8 + key.len + value.len);
            self.str(key);
            self.str(value);
            const n = self.buf[self.props_at..][0..4];
            put(n, load32(n) + 1);
        }

        /// Subscribes the session of `client` to `filter` (embedded broker).
        pub fn subscribe(self: *Self, client: []const u8, filter: []const u8, qos: u8) Error!void {
            try self.action(2, 9 + client.len + filter.len);
            self.str(client);
            self.str(filter);
            self.byte(qos);
        }

        /// Unsubscribes the session of `client` from `filter` (embedded broker).
        pub fn unsubscribe(self: *Self, client: []const u8, filter: []const u8) Error!void {
            try self.action(3, 8 + client.len + filter.len);
            self.str(client);
            self.str(filter);
        }

        /// Delivers `payload` on `topic` to the session of `client` only (embedded broker).
        pub fn deliver(self: *Self, client: []const u8, topic: []const u8, payload: []const u8, qos: u8, retain: bool) Error!void {
            try self.action(4, 14 + client.len + topic.len + payload.len);
            self.str(client);
            self.str(topic);
            self.str(payload);
            self.byte(qos);
            self.byte(@intFromBool(retain));
        }

        fn put(at: *[4]u8, v: u32) void {
            at.* = .{ @truncate(v), @truncate(v >> 8), @truncate(v >> 16), @truncate(v >> 24) };
        }

        fn load32(at: *const [4]u8) u32 {
            return @as(u32, at[0]) | @as(u32, at[1]) << 8 |
                @as(u32, at[2]) << 16 | @as(u32, at[3]) << 24;
        }
    };
}

// -----------------------------------------------------------------------------------
// ABI v2: Redis reads (docs/abi.md, "Reading Redis")
// -----------------------------------------------------------------------------------

extern "wasmrule" fn redis_read(ptr: [*]const u8, len: usize) i32;
extern "wasmrule" fn redis_reply(dst: [*]u8, cap: usize) i32;

/// Why a read got no reply: the ABI's codes, and `BadReply` for a reply that does not
/// decode (a host bug).
pub const ReadError = error{
    NotAllowed, // -1: not in the read set, or the tenant may not read
    BadRequest, // -2: wrong arity, a key over 4096 bytes
    OverBudget, // -3: limits.max_reads or max_read_bytes spent
    Unavailable, // -4: Redis away, too slow, or writes in the spill
    RedisError, // -5: Redis answered with an error (WRONGTYPE, ...)
    NoReply, // -6 (an SDK bug)
    ShortBuffer, // -7 (an SDK bug)
    BadReply,
};

/// One reply: nil, an integer, a bulk or status string, or an array.
pub const Value = union(enum) {
    nil,
    int: i64,
    bulk: []const u8,
    array: []const Value,
};

fn readError(code: i32) ReadError {
    return switch (code) {
        -1 => error.NotAllowed,
        -2 => error.BadRequest,
        -3 => error.OverBudget,
        -4 => error.Unavailable,
        -5 => error.RedisError,
        -6 => error.NoReply,
        -7 => error.ShortBuffer,
        else => error.BadReply,
    };
}

fn getU32(b: []const u8) u32 {
    return @as(u32, b[0]) | @as(u32, b[1]) << 8 | @as(u32, b[2]) << 16 | @as(u32, b[3]) << 24;
}

/// Decodes the value at `b[at.*..]`, moving `at.*` past it.
fn decodeValue(b: []const u8, at: *usize, depth: u32) (ReadError || Error)!Value {
    if (at.* >= b.len or depth > 32) return error.BadReply;
    const t = b[at.*];
    at.* += 1;
    switch (t) {
        0 => return .nil,
        1 => {
            if (b.len - at.* < 8) return error.BadReply;
            var v: u64 = 0;
            var i: usize = 8;
            while (i > 0) : (i -= 1) v = v << 8 | b[at.* + i - 1];
            at.* += 8;
            return .{ .int = @bitCast(v) };
        },
        2, 3 => {
            if (b.len - at.* < 4) return error.BadReply;
            const n: usize = getU32(b[at.*..]);
            at.* += 4;
            if (n > b.len - at.*) return error.BadReply;
            if (t == 2) {
                defer at.* += n;
                return .{ .bulk = b[at.*..][0..n] };
            }
            const raw = try alloc(n * @sizeOf(Value));
            const items: []Value = @as([*]Value, @ptrCast(@alignCast(raw.ptr)))[0..n];
            for (items) |*item| item.* = try decodeValue(b, at, depth + 1);
            return .{ .array = items };
        },
        else => return error.BadReply,
    }
}

/// Runs one read-only command (`args[0]` is its name) and returns its reply.
///
/// # Examples
///
///     const score = try wr.read(&.{ "ZSCORE", "leaderboard", player });
pub fn read(args: []const []const u8) (ReadError || Error)!Value {
    var size: usize = 4;
    for (args) |a| size += 4 + a.len;
    const req = try alloc(size);
    Output.put(req[0..4], @intCast(args.len));
    var at: usize = 4;
    for (args) |a| {
        Output.put(req[at..][0..4], @intCast(a.len));
        copy(req[at + 4 ..], a);
        at += 4 + a.len;
    }
    const n = redis_read(req.ptr, req.len);
    if (n < 0) return readError(n);
    const reply = try alloc(@intCast(n));
    const got = redis_reply(reply.ptr, reply.len);
    if (got < 0) return readError(got);
    var pos: usize = 0;
    const v = try decodeValue(reply[0..@intCast(got)], &pos, 0);
    if (pos != @as(usize, @intCast(got))) return error.BadReply;
    return v;
}

/// GET key.
pub fn get(key: []const u8) (ReadError || Error)!Value {
    return read(&.{ "GET", key });
}

/// HGET key field.
pub fn hget(key: []const u8, field: []const u8) (ReadError || Error)!Value {
    return read(&.{ "HGET", key, field });
}

// -----------------------------------------------------------------------------------
// The exports
// -----------------------------------------------------------------------------------

/// What a rule declares about itself (the manifest).
pub const Spec = struct {
    /// 1 to 128 of A-Z a-z 0-9 - _ .
    name: []const u8,
    /// The rule's own version.
    version: []const u8,
    /// MQTT topic filters.
    filters: []const []const u8,
};

fn pack(ptr: usize, len: usize) i64 {
    return @bitCast(@as(u64, ptr) << 32 | @as(u64, len));
}

/// A JSON string literal for `s`, at compile time.
fn quote(comptime s: []const u8) []const u8 {
    comptime var out: []const u8 = "\"";
    inline for (s) |b| {
        out = out ++ switch (b) {
            '"' => "\\\"",
            '\\' => "\\\\",
            else => &[_]u8{b},
        };
    }
    return out ++ "\"";
}

fn manifestJson(comptime spec: Spec) []const u8 {
    comptime {
        var filters: []const u8 = "";
        for (spec.filters, 0..) |f, i| filters = filters ++ (if (i > 0) "," else "") ++ quote(f);
        const text = "{\"name\":" ++ quote(spec.name) ++ ",\"version\":" ++ quote(spec.version) ++
            ",\"filters\":[" ++ filters ++ "],\"sdk\":" ++ quote(sdk) ++ "}";
        // A constant copy: runtime code may not point into comptime variables.
        const final = text[0..text.len].*;
        return &final;
    }
}

/// Exports the rule: the manifest from `spec`, and `handler` as the event handler.
/// Call it once, from a `comptime` block in the rule's root file.
///
/// `handler` is `fn (*const Event, *Output) E!void` for any error set E.
pub fn exportRule(comptime spec: Spec, comptime handler: anytype) void {
    exportAs(spec, handler, Output, "wasmrule_abi_version_1");
}

/// Exports a rule of ABI v2: as `exportRule`, with `handler` a
/// `fn (*const Event, *Actions) E!void`, which may read Redis and add MQTT actions.
pub fn exportRuleV2(comptime spec: Spec, comptime handler: anytype) void {
    exportAs(spec, handler, Actions, "wasmrule_abi_version_2");
}

fn exportAs(comptime spec: Spec, comptime handler: anytype, comptime Out: type, comptime marker: []const u8) void {
    const Exports = struct {
        const manifest = manifestJson(spec);

        fn wasmrule_manifest() callconv(.c) i64 {
            return pack(@intFromPtr(manifest.ptr), manifest.len);
        }

        fn abi_version() callconv(.c) void {}

        fn wasmrule_alloc(len: u32) callconv(.c) u32 {
            const buf = alloc(len) catch return 0;
            return @intCast(@intFromPtr(buf.ptr));
        }

        fn wasmrule_on_event(ptr: u32, len: u32) callconv(.c) i64 {
            const input = @as([*]const u8, @ptrFromInt(ptr))[0..len];
            var out = Out{};
            run(input, &out) catch |e| {
                // The handler's error set is its own: compare as anyerror.
                const err: anyerror = e;
                const message: []const u8 = if (err == error.RuleFailed)
                    out.message orelse "rule failed without a message"
                else if (err == error.OutOfMemory)
                    "out of memory in the rule"
                else
                    @errorName(err);
                return encodeError(message);
            };
            out.reserve(0) catch return encodeError("out of memory in the rule");
            return pack(@intFromPtr(out.buf.ptr), out.len);
        }

        fn run(input: []const u8, out: *Out) !void {
            const event = try Event.parse(input) orelse
                return out.fail("event is not a valid JSON object");
            try handler(&event, out);
        }

        /// Returned when even the error message cannot be allocated.
        const out_of_memory = "\x01out of memory in the rule";

        fn encodeError(message: []const u8) i64 {
            const buf = alloc(1 + message.len) catch
                return pack(@intFromPtr(out_of_memory.ptr), out_of_memory.len);
            buf[0] = 1; // tag: error
            copy(buf[1..], message);
            return pack(@intFromPtr(buf.ptr), buf.len);
        }
    };
    @export(&Exports.wasmrule_manifest, .{ .name = "wasmrule_manifest" });
    @export(&Exports.abi_version, .{ .name = marker });
    @export(&Exports.wasmrule_alloc, .{ .name = "wasmrule_alloc" });
    @export(&Exports.wasmrule_on_event, .{ .name = "wasmrule_on_event" });
}
