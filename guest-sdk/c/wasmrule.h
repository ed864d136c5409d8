/*
 * wasmrule.h: write wasmrule rules in C (rule ABI v1, docs/abi.md).
 *
 * One header, no libc. A rule is one .c file that includes this header, defines a
 * handler and names it once with WASMRULE_RULE:
 *
 *     #include "wasmrule.h"
 *
 *     static int count(const wr_event *ev) {
 *         wr_command("HINCRBY");
 *         wr_arg_str("mqtt_topic_count");
 *         wr_arg(wr_event_topic(ev));
 *         wr_arg_str("1");
 *         return WR_OK;
 *     }
 *
 *     WASMRULE_RULE("topic-counter", "0.1.0", "[\"#\"]", count)
 *
 * Build it with Debian's clang and lld (no wasi-libc needed):
 *
 *     clang --target=wasm32 -nostdlib -ffreestanding -Oz -mbulk-memory \
 *           -Wl,--no-entry -Wl,--strip-all -I guest-sdk/c -o rule.wasm rule.c
 *
 * The exports carry `export_name` attributes, so no -Wl,--export flags are needed, and
 * the module imports nothing. -Oz gives the smallest module; -mbulk-memory turns
 * copies into memory.copy instructions (wasmtime, and so wasmrule, supports them; Rust
 * emits them by default too).
 *
 * What is here, in order:
 *   - byte slices (wr_bytes): arguments and JSON values are (pointer, length), never
 *     NUL-terminated, because arguments are binary-safe;
 *   - a bump allocator: an instance lives for exactly one event, so nothing is freed;
 *   - a small JSON reader: validates a whole object and finds one top-level member;
 *   - the event: top-level string fields, the topic and its levels, the payload;
 *   - the result buffer: commands and arguments, or an error message;
 *   - WASMRULE_RULE: the manifest and the four exports.
 *
 * Everything is `static` so the header can be included anywhere; WASMRULE_RULE emits
 * the only external definitions and must appear exactly once per module.
 */
#ifndef WASMRULE_H
#define WASMRULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(__wasm32__)
#error "wasmrule.h builds rules for wasm32: use clang --target=wasm32"
#endif

/* What built the module, reported in the manifest's `sdk` field. */
#define WASMRULE_SDK "wasmrule-guest-c/0.1.0"

/* A handler's return value: WR_OK after adding commands (zero commands is fine), or
 * whatever wr_error() returns. */
#define WR_OK 0
#define WR_ERROR 1

/* ------------------------------------------------------------------------------------
 * Byte slices
 * ---------------------------------------------------------------------------------- */

/* A run of bytes in linear memory: not NUL-terminated, may contain any byte. */
typedef struct {
    const uint8_t *ptr;
    uint32_t len;
} wr_bytes;

static inline uint32_t wr_strlen(const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    return n;
}

/* A slice over a C string, without its terminator. */
static inline wr_bytes wr_cstr(const char *s) {
    return (wr_bytes){(const uint8_t *)s, wr_strlen(s)};
}

static inline bool wr_bytes_eq(wr_bytes a, wr_bytes b) {
    if (a.len != b.len) return false;
    for (uint32_t i = 0; i < a.len; i++)
        if (a.ptr[i] != b.ptr[i]) return false;
    return true;
}

/* ------------------------------------------------------------------------------------
 * Memory
 * ---------------------------------------------------------------------------------- */

/* First address after the data segments and the stack; set by wasm-ld. */
extern unsigned char __heap_base;

/* Next free address. The host makes a fresh instance for every event, so this starts at
 * __heap_base every time and nothing is ever freed. */
static uintptr_t wr_heap_next = (uintptr_t)&__heap_base;

/* `len` bytes aligned to 8, growing memory when needed; NULL when memory cannot grow
 * (in wasmrule, growing past the configured cap traps with a `memory` error instead). */
static inline void *wr_alloc(uint32_t len) {
    uint64_t start = ((uint64_t)wr_heap_next + 7) & ~(uint64_t)7;
    uint64_t end = start + len;
    /* 64-bit arithmetic: a full 4 GiB memory is 65536 pages, whose size in bytes does
     * not fit in 32 bits. */
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) << 16;
    if (end > have) {
        uint64_t pages = (end - have + 0xffff) >> 16;
        if (end > ((uint64_t)1 << 32) ||
            __builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1)
            return NULL;
    }
    wr_heap_next = (uintptr_t)end;
    return (void *)(uintptr_t)start;
}

/* With -mbulk-memory this is one memory.copy instruction; without, a call to the
 * memcpy that WASMRULE_RULE defines. */
static inline void wr_copy(uint8_t *dst, const uint8_t *src, uint32_t n) {
    if (n) __builtin_memcpy(dst, src, n);
}

/* ------------------------------------------------------------------------------------
 * JSON
 *
 * Enough JSON for rules: validate a text and find a top-level member of an object,
 * as its raw source text; then read that text as a string (unescaped) or keep it as
 * is (a number keeps the digits the device wrote: 21.50 stays 21.50).
 *
 * The reader is strict like serde_json, so every language's rule accepts and rejects
 * the same payloads: RFC 8259 grammar, no control characters inside strings, nothing
 * but whitespace after the value, and a key that appears twice counts as invalid when
 * it is the one asked for. Like serde_json skipping a member it does not need, it
 * accepts any depth of nesting: it keeps its own stack instead of recursing.
 * ---------------------------------------------------------------------------------- */

typedef enum {
    WR_JSON_FOUND,   /* the member exists; its raw text is in *value */
    WR_JSON_MISSING, /* valid object, no such top-level member */
    WR_JSON_INVALID, /* not valid JSON, not an object, or the member is there twice */
} wr_json_result;

typedef struct {
    const uint8_t *p;   /* next byte to read */
    const uint8_t *end; /* one past the last byte */
} wr_json_cursor;

static inline void wr_json_ws(wr_json_cursor *c) {
    while (c->p < c->end &&
           (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static inline bool wr_json_eat(wr_json_cursor *c, uint8_t byte) {
    if (c->p < c->end && *c->p == byte) {
        c->p++;
        return true;
    }
    return false;
}

static inline int wr_hex_digit(uint8_t b) {
    if (b >= '0' && b <= '9') return b - '0';
    if (b >= 'a' && b <= 'f') return b - 'a' + 10;
    if (b >= 'A' && b <= 'F') return b - 'A' + 10;
    return -1;
}

/* Skips a string starting at its opening quote. Checks escapes are well formed, but
 * (like serde_json for strings it skips) not that \u surrogates pair up. */
static inline bool wr_json_skip_string(wr_json_cursor *c) {
    /* Local copies of the cursor: this loop runs over every byte of every string, and
     * going through *c would load and store it in linear memory each time. */
    const uint8_t *p = c->p, *end = c->end;
    if (p >= end || *p++ != '"') return false;
    while (p < end) {
        uint8_t b = *p++;
        if (b == '"') {
            c->p = p;
            return true;
        }
        if (b < 0x20) return false; /* control characters must be escaped */
        if (b != '\\') continue;
        if (p >= end) return false;
        b = *p++;
        if (b == 'u') {
            if (end - p < 4) return false;
            for (int i = 0; i < 4; i++)
                if (wr_hex_digit(*p++) < 0) return false;
        } else if (b != '"' && b != '\\' && b != '/' && b != 'b' && b != 'f' && b != 'n' &&
                   b != 'r' && b != 't') {
            return false;
        }
    }
    return false; /* no closing quote */
}

static inline bool wr_json_digits(wr_json_cursor *c) {
    const uint8_t *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    return c->p > start;
}

/* -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static inline bool wr_json_skip_number(wr_json_cursor *c) {
    wr_json_eat(c, '-');
    if (wr_json_eat(c, '0')) {
        /* no leading zeros: 012 is not JSON */
    } else if (c->p < c->end && *c->p >= '1' && *c->p <= '9') {
        wr_json_digits(c);
    } else {
        return false;
    }
    if (wr_json_eat(c, '.') && !wr_json_digits(c)) return false;
    if (wr_json_eat(c, 'e') || wr_json_eat(c, 'E')) {
        if (!wr_json_eat(c, '+')) wr_json_eat(c, '-');
        if (!wr_json_digits(c)) return false;
    }
    return true;
}

static inline bool wr_json_skip_word(wr_json_cursor *c, const char *word) {
    for (; *word; word++)
        if (!wr_json_eat(c, (uint8_t)*word)) return false;
    return true;
}

/* Skips an object key and its colon, with the whitespace around them. */
static inline bool wr_json_skip_key(wr_json_cursor *c) {
    wr_json_ws(c);
    if (!wr_json_skip_string(c)) return false;
    wr_json_ws(c);
    return wr_json_eat(c, ':');
}

/* The closing brackets of the containers open while skipping a value, innermost last.
 * Every further level needs at least one more byte of text, so growing the stack to
 * its depth plus the rest of the text means it never grows twice in one call; it is
 * kept for the next call, which usually reads a shorter text. */
static uint8_t *wr_json_stack;
static uint32_t wr_json_stack_cap;

/* Skips one value, with the whitespace before it. */
static inline bool wr_json_skip_value(wr_json_cursor *c) {
    uint32_t depth = 0;
    for (;;) {
        /* Here a value starts. */
        wr_json_ws(c);
        if (c->p >= c->end) return false;
        uint8_t b = *c->p;
        if (b == '{' || b == '[') {
            uint8_t close = b == '{' ? '}' : ']';
            c->p++;
            wr_json_ws(c);
            if (!wr_json_eat(c, close)) {
                /* Not empty: remember the container and read its first value. */
                if (depth == wr_json_stack_cap) {
                    uint32_t cap = depth + (uint32_t)(c->end - c->p) + 1;
                    uint8_t *stack = wr_alloc(cap);
                    if (!stack) return false;
                    wr_copy(stack, wr_json_stack, depth);
                    wr_json_stack = stack;
                    wr_json_stack_cap = cap;
                }
                wr_json_stack[depth++] = close;
                if (close == '}' && !wr_json_skip_key(c)) return false;
                continue;
            }
        } else if (b == '"') {
            if (!wr_json_skip_string(c)) return false;
        } else if (b == 't') {
            if (!wr_json_skip_word(c, "true")) return false;
        } else if (b == 'f') {
            if (!wr_json_skip_word(c, "false")) return false;
        } else if (b == 'n') {
            if (!wr_json_skip_word(c, "null")) return false;
        } else if (!wr_json_skip_number(c)) {
            return false;
        }
        /* Here a value ended: close containers until one has a next value. */
        for (;;) {
            if (depth == 0) return true;
            wr_json_ws(c);
            uint8_t close = wr_json_stack[depth - 1];
            if (wr_json_eat(c, close)) {
                depth--;
                continue;
            }
            if (!wr_json_eat(c, ',')) return false;
            if (close == '}' && !wr_json_skip_key(c)) return false;
            break;
        }
    }
}

/* Decodes the character at *p inside a validated string token into out[0..4] and moves
 * *p past it; returns the number of bytes written, or 0 for an unpaired \u surrogate
 * (not text: serde_json refuses it too). Raw bytes are copied as they are. */
static inline uint32_t wr_json_decode_char(const uint8_t **p, uint8_t out[4]) {
    const uint8_t *s = *p;
    if (*s != '\\') {
        out[0] = *s;
        *p = s + 1;
        return 1;
    }
    uint8_t e = s[1];
    *p = s + 2;
    switch (e) {
    case 'b': out[0] = '\b'; return 1;
    case 'f': out[0] = '\f'; return 1;
    case 'n': out[0] = '\n'; return 1;
    case 'r': out[0] = '\r'; return 1;
    case 't': out[0] = '\t'; return 1;
    case 'u': break;
    default: out[0] = e; return 1; /* \" \\ \/ */
    }
    uint32_t cp = 0;
    for (int i = 2; i < 6; i++) cp = cp << 4 | (uint32_t)wr_hex_digit(s[i]);
    *p = s + 6;
    if (cp >= 0xdc00 && cp <= 0xdfff) return 0; /* low surrogate first */
    if (cp >= 0xd800 && cp <= 0xdbff) {
        /* A high surrogate must be followed by \u and a low surrogate. The token was
         * validated, so reading s[6..12] stays inside it unless the string ends:
         * check the characters before using them. */
        if (s[6] != '\\' || s[7] != 'u') return 0;
        uint32_t lo = 0;
        for (int i = 8; i < 12; i++) {
            int d = wr_hex_digit(s[i]);
            if (d < 0) return 0;
            lo = lo << 4 | (uint32_t)d;
        }
        if (lo < 0xdc00 || lo > 0xdfff) return 0;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        *p = s + 12;
    }
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xe0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (uint8_t)(0xf0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* Whether the validated string token `token` (quotes included) says `key`. Compares
 * character by character, so an escaped key ("te\u006dp") matches too. Sets *bad for
 * an unpaired surrogate, which makes the whole object invalid. */
static inline bool wr_json_key_is(wr_bytes token, wr_bytes key, bool *bad) {
    const uint8_t *p = token.ptr + 1, *end = token.ptr + token.len - 1;
    uint32_t at = 0;
    bool same = true;
    while (p < end) {
        uint8_t ch[4];
        uint32_t n = wr_json_decode_char(&p, ch);
        if (n == 0) {
            *bad = true;
            return false;
        }
        for (uint32_t i = 0; i < n; i++, at++)
            if (at >= key.len || key.ptr[at] != ch[i]) same = false;
    }
    return same && at == key.len;
}

/* Finds the top-level members `keys[0..n]` of the JSON object in `json` in one pass,
 * validating all of `json` on the way. values[i] gets the raw text of member keys[i]
 * (no surrounding whitespace: `"a\"b"` with its quotes and escapes, `21.50`, `{...}`,
 * `null`), or {NULL, 0} when there is no such member; raw text is never empty. False
 * when `json` is not a valid object or one of the keys appears twice. */
static inline bool wr_json_members(wr_bytes json, uint32_t n, const char *const keys[],
                                   wr_bytes values[]) {
    wr_json_cursor c = {json.ptr, json.ptr + json.len};
    for (uint32_t i = 0; i < n; i++) values[i] = (wr_bytes){NULL, 0};
    wr_json_ws(&c);
    if (!wr_json_eat(&c, '{')) return false;
    wr_json_ws(&c);
    if (!wr_json_eat(&c, '}')) {
        for (;;) {
            const uint8_t *k = c.p;
            if (!wr_json_skip_string(&c)) return false;
            wr_bytes key = {k, (uint32_t)(c.p - k)};
            wr_json_ws(&c);
            if (!wr_json_eat(&c, ':')) return false;
            wr_json_ws(&c);
            const uint8_t *v = c.p;
            if (!wr_json_skip_value(&c)) return false;
            for (uint32_t i = 0; i < n; i++) {
                bool bad = false;
                if (wr_json_key_is(key, wr_cstr(keys[i]), &bad)) {
                    if (values[i].len) return false; /* twice: which one is meant? */
                    values[i] = (wr_bytes){v, (uint32_t)(c.p - v)};
                }
                if (bad) return false;
            }
            wr_json_ws(&c);
            if (wr_json_eat(&c, '}')) break;
            if (!wr_json_eat(&c, ',')) return false;
            wr_json_ws(&c);
        }
    }
    wr_json_ws(&c);
    return c.p == c.end; /* nothing may follow the object */
}

/* Finds one top-level member, as wr_json_members does. */
static inline wr_json_result wr_json_member(wr_bytes json, const char *key, wr_bytes *value) {
    if (!wr_json_members(json, 1, &key, value)) return WR_JSON_INVALID;
    return value->len ? WR_JSON_FOUND : WR_JSON_MISSING;
}

static inline bool wr_json_is_string(wr_bytes raw) { return raw.len > 0 && raw.ptr[0] == '"'; }

/* Raw text from wr_json_member is a number exactly when it starts like one. */
static inline bool wr_json_is_number(wr_bytes raw) {
    return raw.len > 0 && (raw.ptr[0] == '-' || (raw.ptr[0] >= '0' && raw.ptr[0] <= '9'));
}

static inline bool wr_json_is_null(wr_bytes raw) { return raw.len == 4 && raw.ptr[0] == 'n'; }

/* The content of a raw string value from wr_json_member, unescaped into UTF-8. Borrows
 * the input when there is nothing to unescape. False when `raw` is not a string, holds
 * an unpaired \u surrogate, or memory runs out. */
static inline bool wr_json_string(wr_bytes raw, wr_bytes *text) {
    if (!wr_json_is_string(raw)) return false;
    const uint8_t *p = raw.ptr + 1, *end = raw.ptr + raw.len - 1;
    bool escaped = false;
    for (const uint8_t *q = p; q < end; q++)
        if (*q == '\\') escaped = true;
    if (!escaped) {
        *text = (wr_bytes){p, (uint32_t)(end - p)};
        return true;
    }
    /* Unescaping never lengthens: \uXXXX (6 bytes) gives at most 3, a pair (12) 4. */
    uint8_t *out = wr_alloc(raw.len);
    if (!out) return false;
    uint32_t n = 0;
    while (p < end) {
        /* Copy the run up to the next escape in one go, then decode the escape. */
        const uint8_t *run = p;
        while (p < end && *p != '\\') p++;
        wr_copy(out + n, run, (uint32_t)(p - run));
        n += (uint32_t)(p - run);
        if (p == end) break;
        uint32_t k = wr_json_decode_char(&p, out + n);
        if (k == 0) return false;
        n += k;
    }
    *text = (wr_bytes){out, n};
    return true;
}

/* ------------------------------------------------------------------------------------
 * The event (docs/events.md)
 * ---------------------------------------------------------------------------------- */

/* One event: the JSON object the host wrote into our memory, with the raw text of the
 * fields every rule reads found in one pass before the handler runs. */
typedef struct {
    wr_bytes json;
    wr_bytes raw_clientid, raw_topic, raw_payload, raw_payload_encoding;
} wr_event;

/* Reads the event's common fields. False when it is not a valid JSON object. */
static inline bool wr_event_parse(wr_bytes json, wr_event *ev) {
    static const char *const keys[] = {"clientid", "topic", "payload", "payload_encoding"};
    wr_bytes raw[4];
    if (!wr_json_members(json, 4, keys, raw)) return false;
    *ev = (wr_event){json, raw[0], raw[1], raw[2], raw[3]};
    return true;
}

/* The top-level string field `name`, unescaped. False when the field is absent, null,
 * not a string, or holds an unpaired \u surrogate. Reads the whole event again: for
 * the fields below, use their own functions. */
static inline bool wr_event_str(const wr_event *ev, const char *name, wr_bytes *out) {
    wr_bytes raw;
    return wr_json_member(ev->json, name, &raw) == WR_JSON_FOUND && wr_json_string(raw, out);
}

/* The publisher's client id when the source knows it; empty counts as unknown. */
static inline bool wr_event_clientid(const wr_event *ev, wr_bytes *out) {
    return wr_json_string(ev->raw_clientid, out) && out->len > 0;
}

/* The MQTT topic (empty if the event has none, which the host never sends). */
static inline wr_bytes wr_event_topic(const wr_event *ev) {
    wr_bytes t;
    return wr_json_string(ev->raw_topic, &t) ? t : (wr_bytes){(const uint8_t *)"", 0};
}

/* Whether the payload is binary, given in base64 (`payload_encoding` "base64"). */
static inline bool wr_event_payload_is_base64(const wr_event *ev) {
    wr_bytes enc;
    return wr_json_string(ev->raw_payload_encoding, &enc) &&
           wr_bytes_eq(enc, wr_cstr("base64"));
}

/* The payload as text. False when it is binary (see wr_event_payload_is_base64) or
 * missing. */
static inline bool wr_event_payload_text(const wr_event *ev, wr_bytes *out) {
    return !wr_event_payload_is_base64(ev) && wr_json_string(ev->raw_payload, out);
}

/* ------------------------------------------------------------------------------------
 * Topics
 * ---------------------------------------------------------------------------------- */

/* Level `i` (from 0) of `topic`: "a/b/c" level 1 is "b". False past the last level. */
static inline bool wr_topic_level(wr_bytes topic, uint32_t i, wr_bytes *out) {
    uint32_t start = 0;
    for (uint32_t at = 0; at <= topic.len; at++) {
        if (at == topic.len || topic.ptr[at] == '/') {
            if (i == 0) {
                *out = (wr_bytes){topic.ptr + start, at - start};
                return true;
            }
            i--;
            start = at + 1;
        }
    }
    return false;
}

/* The text after the last '/' (all of it if there is none); empty for "a/". */
static inline wr_bytes wr_topic_last_level(wr_bytes topic) {
    uint32_t start = topic.len;
    while (start > 0 && topic.ptr[start - 1] != '/') start--;
    return (wr_bytes){topic.ptr + start, topic.len - start};
}

/* ------------------------------------------------------------------------------------
 * The result buffer (docs/abi.md, "Result buffer")
 *
 *   commands: u8 0, u32 count, then per command u32 argc and per argument u32 len +
 *             bytes (all u32 little-endian)
 *   error:    u8 1, UTF-8 message
 *
 * Commands are written straight into one growing buffer; argc and count are patched
 * in place as arguments arrive.
 * ---------------------------------------------------------------------------------- */

static struct {
    uint8_t *buf;
    uint32_t len, cap;
    uint32_t argc_at; /* offset of the current command's argc; 0 before the first */
    bool out_of_memory;
    wr_bytes error; /* the whole error buffer, tag included, once wr_error ran */
} wr_out;

/* Returned when even the error message cannot be allocated. */
static const uint8_t wr_oom_error[] = "\x01out of memory in the rule";

static inline bool wr_out_reserve(uint32_t more) {
    if (wr_out.out_of_memory) return false;
    if (wr_out.cap - wr_out.len >= more) return true;
    uint32_t cap = wr_out.cap ? wr_out.cap : 256;
    while (cap - wr_out.len < more) {
        if (cap > 0x7fffffff) {
            wr_out.out_of_memory = true;
            return false;
        }
        cap *= 2;
    }
    /* The bump allocator cannot grow in place: move to a fresh, larger block. */
    uint8_t *buf = wr_alloc(cap);
    if (!buf) {
        wr_out.out_of_memory = true;
        return false;
    }
    wr_copy(buf, wr_out.buf, wr_out.len);
    wr_out.buf = buf;
    wr_out.cap = cap;
    return true;
}

static inline void wr_put_u32(uint8_t *at, uint32_t v) {
    at[0] = (uint8_t)v;
    at[1] = (uint8_t)(v >> 8);
    at[2] = (uint8_t)(v >> 16);
    at[3] = (uint8_t)(v >> 24);
}

static inline uint32_t wr_get_u32(const uint8_t *at) {
    return (uint32_t)at[0] | (uint32_t)at[1] << 8 | (uint32_t)at[2] << 16 |
           (uint32_t)at[3] << 24;
}

/* Starts the buffer (tag 0, count 0) the first time it is needed. */
static inline bool wr_out_start(void) {
    if (wr_out.len > 0) return true;
    if (!wr_out_reserve(5)) return false;
    wr_out.buf[0] = 0;
    wr_put_u32(wr_out.buf + 1, 0);
    wr_out.len = 5;
    return true;
}

/* Appends one argument to the current command. */
static inline void wr_arg(wr_bytes arg) {
    if (wr_out.argc_at == 0 || !wr_out_reserve(4 + arg.len)) return;
    wr_put_u32(wr_out.buf + wr_out.len, arg.len);
    wr_copy(wr_out.buf + wr_out.len + 4, arg.ptr, arg.len);
    wr_out.len += 4 + arg.len;
    uint8_t *argc = wr_out.buf + wr_out.argc_at;
    wr_put_u32(argc, wr_get_u32(argc) + 1);
}

static inline void wr_arg_str(const char *s) { wr_arg(wr_cstr(s)); }

/* Starts a new command named `name` ("HSET"); add its arguments with wr_arg. */
static inline void wr_command(const char *name) {
    if (!wr_out_start() || !wr_out_reserve(4)) return;
    wr_put_u32(wr_out.buf + 1, wr_get_u32(wr_out.buf + 1) + 1);
    wr_out.argc_at = wr_out.len;
    wr_put_u32(wr_out.buf + wr_out.len, 0);
    wr_out.len += 4;
    wr_arg(wr_cstr(name));
}

/* Reports that the rule cannot handle this event: the host logs `message` and writes
 * nothing for this event, even commands added before. Use as `return wr_error(..)`. */
static inline int wr_error(const char *message) {
    uint32_t n = wr_strlen(message);
    uint8_t *buf = wr_alloc(1 + n);
    if (!buf) {
        wr_out.out_of_memory = true;
        return WR_ERROR;
    }
    buf[0] = 1;
    wr_copy(buf + 1, (const uint8_t *)message, n);
    wr_out.error = (wr_bytes){buf, 1 + n};
    return WR_ERROR;
}

static inline int64_t wr_pack(const void *ptr, uint32_t len) {
    return (int64_t)((uint64_t)(uintptr_t)ptr << 32 | len);
}

/* What wasmrule_on_event does around the handler. */
static inline int64_t wr_on_event(int (*handler)(const wr_event *), int32_t ptr,
                                  int32_t len) {
    wr_bytes json = {(const uint8_t *)(uintptr_t)ptr, (uint32_t)len};
    wr_event ev;
    int status = wr_event_parse(json, &ev) ? handler(&ev)
                                           : wr_error("event is not a valid JSON object");
    if (wr_out.out_of_memory) return wr_pack(wr_oom_error, sizeof wr_oom_error - 1);
    if (status != WR_OK) {
        if (wr_out.error.len == 0) wr_error("rule failed without a message");
        if (wr_out.out_of_memory) return wr_pack(wr_oom_error, sizeof wr_oom_error - 1);
        return wr_pack(wr_out.error.ptr, wr_out.error.len);
    }
    if (!wr_out_start()) return wr_pack(wr_oom_error, sizeof wr_oom_error - 1);
    return wr_pack(wr_out.buf, wr_out.len);
}

/* ------------------------------------------------------------------------------------
 * The exports
 * ---------------------------------------------------------------------------------- */

/*
 * WASMRULE_RULE(NAME, VERSION, FILTERS_JSON, HANDLER) declares the rule:
 *   NAME          string literal, 1-128 of A-Z a-z 0-9 - _ .
 *   VERSION       string literal, the rule's own version
 *   FILTERS_JSON  string literal holding a JSON array of topic filters:
 *                 "[\"sensors/+/temp\",\"alarms/#\"]"
 *   HANDLER       int HANDLER(const wr_event *ev), returning WR_OK or wr_error(..)
 *
 * It also defines memcpy and memset: without -mbulk-memory clang turns copies and fill
 * loops into calls to them, and with -nostdlib nothing else provides them. Their own
 * loops are marked no_builtin so that they do not turn into calls to themselves.
 */
#define WASMRULE_RULE(NAME, VERSION, FILTERS_JSON, HANDLER)                                 \
    static int HANDLER(const wr_event *ev);                                                 \
    static const char wr_manifest[] = "{\"name\":\"" NAME "\",\"version\":\"" VERSION      \
                                      "\",\"filters\":" FILTERS_JSON                        \
                                      ",\"sdk\":\"" WASMRULE_SDK "\"}";                     \
    __attribute__((export_name("wasmrule_abi_version_1"))) void wasmrule_abi_version_1(    \
        void) {}                                                                            \
    __attribute__((export_name("wasmrule_manifest"))) int64_t wasmrule_manifest(void) {   \
        return wr_pack(wr_manifest, sizeof wr_manifest - 1);                                \
    }                                                                                       \
    __attribute__((export_name("wasmrule_alloc"))) int32_t wasmrule_alloc(int32_t len) {  \
        return (int32_t)(uintptr_t)wr_alloc((uint32_t)len);                                 \
    }                                                                                       \
    __attribute__((export_name("wasmrule_on_event"))) int64_t wasmrule_on_event(          \
        int32_t ptr, int32_t len) {                                                         \
        return wr_on_event(HANDLER, ptr, len);                                              \
    }                                                                                       \
    __attribute__((no_builtin("memcpy"))) void *memcpy(void *d, const void *s, size_t n) { \
        for (size_t i = 0; i < n; i++) ((uint8_t *)d)[i] = ((const uint8_t *)s)[i];         \
        return d;                                                                           \
    }                                                                                       \
    __attribute__((no_builtin("memset"))) void *memset(void *d, int v, size_t n) {         \
        for (size_t i = 0; i < n; i++) ((uint8_t *)d)[i] = (uint8_t)v;                      \
        return d;                                                                           \
    }

#endif /* WASMRULE_H */
