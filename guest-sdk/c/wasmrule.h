/*
 * wasmrule.h: write wasmrule rules in C (rule ABI v1 and v2, docs/abi.md).
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
 *     clang --target=wasm32 -nostdlib -ffreestanding -O2 -mbulk-memory \
 *           -Wl,--no-entry -Wl,--strip-all -I guest-sdk/c -o rule.wasm rule.c
 *
 * The exports carry `export_name` attributes, so no -Wl,--export flags are needed, and
 * the module imports nothing. -O2 runs faster than -Oz, whose modules are a few KB
 * smaller; -mbulk-memory turns copies into memory.copy instructions (wasmtime, and so
 * wasmrule, supports them; Rust emits them by default too).
 *
 * What is here, in order:
 *   - byte slices (wr_bytes): arguments and JSON values are (pointer, length), never
 *     NUL-terminated, because arguments are binary-safe;
 *   - a bump allocator: an instance lives for exactly one event, so nothing is freed;
 *   - a small JSON reader: validates a whole object and finds one top-level member;
 *   - the event: top-level string fields, the topic and its levels, the payload;
 *   - the result buffer: commands and arguments, or an error message;
 *   - ABI v2: Redis reads (wr_read, wr_get, wr_hget: typed wr_value replies, negative
 *     WR_READ_* codes) and MQTT actions (wr_publish, wr_property, wr_subscribe,
 *     wr_unsubscribe, wr_deliver);
 *   - WASMRULE_RULE (ABI v1) and WASMRULE_RULE_V2: the manifest and the exports.
 *
 * A v2 rule is the same handler named with WASMRULE_RULE_V2: it may call the read
 * functions (the module then imports wasmrule.redis_read and wasmrule.redis_reply) and
 * the action builders beside wr_command. A v1 rule must not call either.
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

/* Eight bytes of text at `p` as one word (any alignment: one i64.load). */
static inline uint64_t wr_load8(const uint8_t *p) {
    uint64_t v;
    __builtin_memcpy(&v, p, 8);
    return v;
}

#define WR_ONES 0x0101010101010101ull
#define WR_HIGH 0x8080808080808080ull

/* The high bit of every byte of `v` that is `byte`, and maybe of bytes after the first
 * such one (a borrow can only mark a byte next to one that matches): the lowest bit
 * set is exact, which is all the callers use. */
static inline uint64_t wr_byte_mask8(uint64_t v, uint8_t byte) {
    uint64_t x = v ^ (WR_ONES * byte);
    return (x - WR_ONES) & ~x & WR_HIGH;
}

/* Whether one of the 8 bytes in `v` is `byte`. */
static inline bool wr_has_byte8(uint64_t v, uint8_t byte) { return wr_byte_mask8(v, byte) != 0; }

/* As wr_byte_mask8, for the bytes of `v` that end or escape a string or may not be in
 * one: '"', '\\' or a control character. */
static inline uint64_t wr_json_special_mask8(uint64_t v) {
    return wr_byte_mask8(v, '"') | wr_byte_mask8(v, '\\') | ((v - WR_ONES * 0x20) & ~v & WR_HIGH);
}

/* The index (0-7) of the first byte a mask from wr_byte_mask8 marks (the text is read
 * little-endian: the first byte is the lowest). */
static inline uint32_t wr_first_marked(uint64_t mask) { return (uint32_t)__builtin_ctzll(mask) >> 3; }

/* Skips a string starting at its opening quote. Checks escapes are well formed, but
 * (like serde_json for strings it skips) not that \u surrogates pair up. Sets *escaped
 * when the string holds an escape (its raw bytes are then not its text). */
static inline bool wr_json_skip_string_at(wr_json_cursor *c, bool *escaped) {
    /* Local copies of the cursor: this loop runs over every byte of every string, and
     * going through *c would load and store it in linear memory each time. */
    const uint8_t *p = c->p, *end = c->end;
    if (p >= end || *p++ != '"') return false;
    for (;;) {
        /* Eight bytes at a time up to the first that needs a look: every loop
         * iteration also pays the host's interruption check, so a byte-wise loop costs
         * several times more. Most strings (keys, short values, the runs between the
         * escapes of a payload) end within a word: jump straight to that byte. */
        while (end - p >= 8) {
            uint64_t special = wr_json_special_mask8(wr_load8(p));
            if (special) {
                p += wr_first_marked(special);
                break;
            }
            p += 8;
        }
        if (p >= end) return false; /* no closing quote */
        uint8_t b = *p++;
        if (b == '"') {
            c->p = p;
            return true;
        }
        if (b < 0x20) return false; /* control characters must be escaped */
        if (b != '\\') continue;
        *escaped = true;
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
}

static inline bool wr_json_skip_string(wr_json_cursor *c) {
    bool escaped = false;
    return wr_json_skip_string_at(c, &escaped);
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
    uint32_t key_len[n > 0 ? n : 1];
    for (uint32_t i = 0; i < n; i++) {
        values[i] = (wr_bytes){NULL, 0};
        key_len[i] = wr_strlen(keys[i]);
    }
    wr_json_ws(&c);
    if (!wr_json_eat(&c, '{')) return false;
    wr_json_ws(&c);
    if (!wr_json_eat(&c, '}')) {
        for (;;) {
            const uint8_t *k = c.p;
            bool escaped = false;
            if (!wr_json_skip_string_at(&c, &escaped)) return false;
            wr_bytes key = {k, (uint32_t)(c.p - k)};
            wr_json_ws(&c);
            if (!wr_json_eat(&c, ':')) return false;
            wr_json_ws(&c);
            const uint8_t *v = c.p;
            if (!wr_json_skip_value(&c)) return false;
            for (uint32_t i = 0; i < n; i++) {
                bool bad = false, same;
                if (escaped) {
                    same = wr_json_key_is(key, (wr_bytes){(const uint8_t *)keys[i], key_len[i]},
                                          &bad);
                } else {
                    /* No escape: the raw bytes between the quotes are the key. */
                    same = key.len - 2 == key_len[i] &&
                           wr_bytes_eq((wr_bytes){key.ptr + 1, key.len - 2},
                                       (wr_bytes){(const uint8_t *)keys[i], key_len[i]});
                }
                if (same) {
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

/* The first backslash in p..end, or end: eight bytes at a time, then byte by byte. */
static inline const uint8_t *wr_find_backslash(const uint8_t *p, const uint8_t *end) {
    for (; end - p >= 8; p += 8) {
        uint64_t backslash = wr_byte_mask8(wr_load8(p), '\\');
        if (backslash) return p + wr_first_marked(backslash);
    }
    while (p < end && *p != '\\') p++;
    return p;
}

/* The content of a raw string value from wr_json_member, unescaped into UTF-8. Borrows
 * the input when there is nothing to unescape. False when `raw` is not a string, holds
 * an unpaired \u surrogate, or memory runs out. */
static inline bool wr_json_string(wr_bytes raw, wr_bytes *text) {
    if (!wr_json_is_string(raw)) return false;
    const uint8_t *p = raw.ptr + 1, *end = raw.ptr + raw.len - 1;
    const uint8_t *escape = wr_find_backslash(p, end);
    if (escape == end) {
        *text = (wr_bytes){p, (uint32_t)(end - p)};
        return true;
    }
    /* Unescaping never lengthens: \uXXXX (6 bytes) gives at most 3, a pair (12) 4. */
    uint8_t *out = wr_alloc(raw.len);
    if (!out) return false;
    uint32_t n = 0;
    for (;;) {
        /* Copy the run up to the escape in one go, then decode the escape. */
        wr_copy(out + n, p, (uint32_t)(escape - p));
        n += (uint32_t)(escape - p);
        if (escape == end) break;
        p = escape;
        uint32_t k = wr_json_decode_char(&p, out + n);
        if (k == 0) return false;
        n += k;
        escape = wr_find_backslash(p, end);
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

/* Set by WASMRULE_RULE_V2's export: the result holds actions, each with a kind byte.
 * Never set in a v1 module, where the compiler drops what depends on it. */
static bool wr_v2;

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
    if (!wr_out_start() || !wr_out_reserve(wr_v2 ? 5 : 4)) return;
    wr_put_u32(wr_out.buf + 1, wr_get_u32(wr_out.buf + 1) + 1);
    if (wr_v2) wr_out.buf[wr_out.len++] = 0; /* action kind 0: a Redis command */
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
 * ABI v2: MQTT actions (docs/abi.md, "Actions")
 *
 *   kind 1 publish     str topic, str payload, u8 qos, u8 retain, u32 n, n (str, str)
 *   kind 2 subscribe   str clientid, str filter, u8 qos
 *   kind 3 unsubscribe str clientid, str filter
 *   kind 4 deliver     str clientid, str topic, str payload, u8 qos, u8 retain
 *
 * (str: u32 length, bytes.) Each builder adds one action after those before it; Redis
 * commands (wr_command) are actions of kind 0. Only in WASMRULE_RULE_V2 rules.
 * ---------------------------------------------------------------------------------- */

/* Offset of the last publish's property count; 0 when the last action is no publish. */
static uint32_t wr_props_at;

/* Starts an action of `kind` with room for `size` more bytes; false when out of
 * memory. */
static inline bool wr_action(uint8_t kind, uint32_t size) {
    if (!wr_out_start() || !wr_out_reserve(1 + size)) return false;
    wr_put_u32(wr_out.buf + 1, wr_get_u32(wr_out.buf + 1) + 1);
    wr_out.buf[wr_out.len++] = kind;
    wr_out.argc_at = 0;
    wr_props_at = 0;
    return true;
}

static inline void wr_put_str(wr_bytes b) {
    wr_put_u32(wr_out.buf + wr_out.len, b.len);
    wr_copy(wr_out.buf + wr_out.len + 4, b.ptr, b.len);
    wr_out.len += 4 + b.len;
}

static inline void wr_put_byte(uint8_t b) { wr_out.buf[wr_out.len++] = b; }

/* Publishes `payload` on `topic` (QoS 0 or 1; the host refuses 2). Add MQTT 5 user
 * properties with wr_property right after. */
static inline void wr_publish(wr_bytes topic, wr_bytes payload, uint8_t qos, bool retain) {
    if (!wr_action(1, 4 + topic.len + 4 + payload.len + 6)) return;
    wr_put_str(topic);
    wr_put_str(payload);
    wr_put_byte(qos);
    wr_put_byte(retain ? 1 : 0);
    wr_props_at = wr_out.len;
    wr_put_u32(wr_out.buf + wr_out.len, 0);
    wr_out.len += 4;
}

/* Adds a user property to the publish just added (ignored after any other action). */
static inline void wr_property(wr_bytes key, wr_bytes value) {
    if (wr_props_at == 0 || !wr_out_reserve(8 + key.len + value.len)) return;
    wr_put_str(key);
    wr_put_str(value);
    uint8_t *n = wr_out.buf + wr_props_at;
    wr_put_u32(n, wr_get_u32(n) + 1);
}

/* Subscribes the session of `client` to `filter` (embedded broker). */
static inline void wr_subscribe(wr_bytes client, wr_bytes filter, uint8_t qos) {
    if (!wr_action(2, 8 + client.len + filter.len + 1)) return;
    wr_put_str(client);
    wr_put_str(filter);
    wr_put_byte(qos);
}

/* Unsubscribes the session of `client` from `filter` (embedded broker). */
static inline void wr_unsubscribe(wr_bytes client, wr_bytes filter) {
    if (!wr_action(3, 8 + client.len + filter.len)) return;
    wr_put_str(client);
    wr_put_str(filter);
}

/* Delivers `payload` on `topic` to the session of `client` only (embedded broker). */
static inline void wr_deliver(wr_bytes client, wr_bytes topic, wr_bytes payload,
                              uint8_t qos, bool retain) {
    if (!wr_action(4, 12 + client.len + topic.len + payload.len + 2)) return;
    wr_put_str(client);
    wr_put_str(topic);
    wr_put_str(payload);
    wr_put_byte(qos);
    wr_put_byte(retain ? 1 : 0);
}

/* ------------------------------------------------------------------------------------
 * ABI v2: Redis reads (docs/abi.md, "Reading Redis")
 *
 * wr_read runs one command of the read set and decodes its reply into a wr_value,
 * whose bytes stay valid for the rest of the event. It returns WR_READ_OK or one of
 * the negative codes below, which the rule handles as it sees fit.
 * ---------------------------------------------------------------------------------- */

#define WR_READ_OK 0
#define WR_READ_NOT_ALLOWED (-1) /* not in the read set, or the tenant may not read */
#define WR_READ_BAD_REQUEST (-2) /* wrong arity, key over 4096 bytes */
#define WR_READ_OVER_BUDGET (-3) /* limits.max_reads or max_read_bytes spent */
#define WR_READ_UNAVAILABLE (-4) /* Redis away, too slow, or writes in the spill */
#define WR_READ_REDIS_ERROR (-5) /* Redis answered with an error (WRONGTYPE, ...) */
#define WR_READ_NO_REPLY (-6)    /* (an SDK bug) */
#define WR_READ_SHORT_BUFFER (-7) /* (an SDK bug) */
#define WR_READ_OUT_OF_MEMORY (-8) /* the SDK: no memory for the request or reply */
#define WR_READ_BAD_REPLY (-9)   /* the SDK: a reply that does not decode */

/* The documented name of a read code ("not_allowed", ...). */
static inline const char *wr_read_error_name(int code) {
    switch (code) {
    case WR_READ_OK: return "ok";
    case WR_READ_NOT_ALLOWED: return "not_allowed";
    case WR_READ_BAD_REQUEST: return "bad_request";
    case WR_READ_OVER_BUDGET: return "over_budget";
    case WR_READ_UNAVAILABLE: return "unavailable";
    case WR_READ_REDIS_ERROR: return "redis_error";
    case WR_READ_NO_REPLY: return "no_reply";
    case WR_READ_SHORT_BUFFER: return "short_buffer";
    case WR_READ_OUT_OF_MEMORY: return "out_of_memory";
    default: return "bad_reply";
    }
}

/* A reply's type. */
typedef enum { WR_NIL = 0, WR_INT = 1, WR_BULK = 2, WR_ARRAY = 3 } wr_value_type;

/* One reply: nil, an integer (`integer`), a bulk or status string (`bulk`), or an array
 * of `count` values (read them with wr_value_item). */
typedef struct {
    wr_value_type type;
    int64_t integer;
    wr_bytes bulk;
    uint32_t count;
    wr_bytes items; /* an array's elements, still encoded */
} wr_value;

__attribute__((import_module("wasmrule"), import_name("redis_read"))) int32_t
wr_import_redis_read(const uint8_t *request, uint32_t len);
__attribute__((import_module("wasmrule"), import_name("redis_reply"))) int32_t
wr_import_redis_reply(uint8_t *dst, uint32_t cap);

/* Decodes the value at the start of `b` (depth-limited); returns the bytes it took, or
 * 0 when malformed. */
static inline uint32_t wr_value_decode(wr_bytes b, wr_value *v, uint32_t depth) {
    if (b.len < 1 || depth > 32) return 0;
    *v = (wr_value){(wr_value_type)b.ptr[0], 0, {b.ptr, 0}, 0, {b.ptr, 0}};
    switch (b.ptr[0]) {
    case WR_NIL: return 1;
    case WR_INT:
        if (b.len < 9) return 0;
        for (int i = 7; i >= 0; i--) v->integer = (int64_t)((uint64_t)v->integer << 8 | b.ptr[1 + i]);
        return 9;
    case WR_BULK: {
        if (b.len < 5) return 0;
        uint32_t n = wr_get_u32(b.ptr + 1);
        if (n > b.len - 5) return 0;
        v->bulk = (wr_bytes){b.ptr + 5, n};
        return 5 + n;
    }
    case WR_ARRAY: {
        if (b.len < 5) return 0;
        v->count = wr_get_u32(b.ptr + 1);
        uint32_t at = 5;
        for (uint32_t i = 0; i < v->count; i++) {
            wr_value item;
            uint32_t n = wr_value_decode((wr_bytes){b.ptr + at, b.len - at}, &item, depth + 1);
            if (n == 0) return 0;
            at += n;
        }
        v->items = (wr_bytes){b.ptr + 5, at - 5};
        return at;
    }
    default: return 0;
    }
}

/* Element `i` of an array. False when `arr` is no array or has no element `i`. */
static inline bool wr_value_item(const wr_value *arr, uint32_t i, wr_value *out) {
    if (arr->type != WR_ARRAY || i >= arr->count) return false;
    wr_bytes rest = arr->items;
    for (uint32_t k = 0;; k++) {
        uint32_t n = wr_value_decode(rest, out, 1);
        if (n == 0) return false;
        if (k == i) return true;
        rest = (wr_bytes){rest.ptr + n, rest.len - n};
    }
}

/* Runs the command args[0..argc] (its name first) and decodes the reply into `out`.
 * Returns WR_READ_OK or a negative WR_READ_* code. */
static inline int wr_read(uint32_t argc, const wr_bytes *args, wr_value *out) {
    uint32_t size = 4;
    for (uint32_t i = 0; i < argc; i++) size += 4 + args[i].len;
    uint8_t *req = wr_alloc(size);
    if (!req) return WR_READ_OUT_OF_MEMORY;
    wr_put_u32(req, argc);
    uint32_t at = 4;
    for (uint32_t i = 0; i < argc; i++) {
        wr_put_u32(req + at, args[i].len);
        wr_copy(req + at + 4, args[i].ptr, args[i].len);
        at += 4 + args[i].len;
    }
    int32_t n = wr_import_redis_read(req, size);
    if (n < 0) return n;
    uint8_t *reply = wr_alloc((uint32_t)n);
    if (!reply) return WR_READ_OUT_OF_MEMORY;
    int32_t got = wr_import_redis_reply(reply, (uint32_t)n);
    if (got < 0) return got;
    wr_bytes b = {reply, (uint32_t)got};
    return wr_value_decode(b, out, 0) == b.len ? WR_READ_OK : WR_READ_BAD_REPLY;
}

/* GET key. */
static inline int wr_get(wr_bytes key, wr_value *out) {
    wr_bytes args[] = {wr_cstr("GET"), key};
    return wr_read(2, args, out);
}

/* HGET key field. */
static inline int wr_hget(wr_bytes key, wr_bytes field, wr_value *out) {
    wr_bytes args[] = {wr_cstr("HGET"), key, field};
    return wr_read(3, args, out);
}

/* SISMEMBER key member, as 1 or 0 (or a negative code). */
static inline int wr_sismember(wr_bytes key, wr_bytes member) {
    wr_bytes args[] = {wr_cstr("SISMEMBER"), key, member};
    wr_value v;
    int r = wr_read(3, args, &v);
    return r < 0 ? r : v.type == WR_INT && v.integer == 1;
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
    WR_RULE_EXPORTS(NAME, VERSION, FILTERS_JSON, HANDLER, wasmrule_abi_version_1, false)

/* WASMRULE_RULE_V2: the same for a rule of ABI v2, which may read Redis and add MQTT
 * actions. */
#define WASMRULE_RULE_V2(NAME, VERSION, FILTERS_JSON, HANDLER)                              \
    WR_RULE_EXPORTS(NAME, VERSION, FILTERS_JSON, HANDLER, wasmrule_abi_version_2, true)

#define WR_STRINGIFY(x) #x
#define WR_RULE_EXPORTS(NAME, VERSION, FILTERS_JSON, HANDLER, MARKER, V2)                   \
    static int HANDLER(const wr_event *ev);                                                 \
    static const char wr_manifest[] = "{\"name\":\"" NAME "\",\"version\":\"" VERSION      \
                                      "\",\"filters\":" FILTERS_JSON                        \
                                      ",\"sdk\":\"" WASMRULE_SDK "\"}";                     \
    __attribute__((export_name(WR_STRINGIFY(MARKER)))) void MARKER(void) {}                 \
    __attribute__((export_name("wasmrule_manifest"))) int64_t wasmrule_manifest(void) {   \
        return wr_pack(wr_manifest, sizeof wr_manifest - 1);                                \
    }                                                                                       \
    __attribute__((export_name("wasmrule_alloc"))) int32_t wasmrule_alloc(int32_t len) {  \
        return (int32_t)(uintptr_t)wr_alloc((uint32_t)len);                                 \
    }                                                                                       \
    __attribute__((export_name("wasmrule_on_event"))) int64_t wasmrule_on_event(          \
        int32_t ptr, int32_t len) {                                                         \
        if (V2) wr_v2 = true;                                                               \
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
