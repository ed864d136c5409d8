/* action-kinds (rule ABI v2), in C: a conformance rule that reads each reply type and
 * returns every kind of action; the same behaviour as rules-wasm/action-kinds (see its
 * lib.rs for the definition). */
#include "wasmrule.h"

/* The `n` parts one after another, in the heap (empty when out of memory, which the
 * SDK then reports for the whole result). */
static wr_bytes join(uint32_t n, const wr_bytes *parts) {
    uint32_t len = 0;
    for (uint32_t i = 0; i < n; i++) len += parts[i].len;
    uint8_t *buf = wr_alloc(len);
    if (!buf) return (wr_bytes){(const uint8_t *)"", 0};
    uint32_t at = 0;
    for (uint32_t i = 0; i < n; i++) {
        wr_copy(buf + at, parts[i].ptr, parts[i].len);
        at += parts[i].len;
    }
    return (wr_bytes){buf, len};
}

static wr_bytes key(const char *prefix, wr_bytes x) {
    wr_bytes parts[] = {wr_cstr(prefix), x};
    return join(2, parts);
}

/* `n` in decimal, in the heap. */
static wr_bytes decimal(int64_t n) {
    uint8_t tmp[21];
    uint32_t k = sizeof tmp;
    uint64_t u = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n;
    do {
        tmp[--k] = (uint8_t)('0' + u % 10);
        u /= 10;
    } while (u);
    if (n < 0) tmp[--k] = '-';
    wr_bytes digits = {tmp + k, sizeof tmp - k};
    return join(1, &digits);
}

static int action_kinds(const wr_event *ev) {
    wr_bytes x = wr_topic_last_level(wr_event_topic(ev));
    wr_value cfg, len, missing;
    wr_bytes hgetall[] = {wr_cstr("HGETALL"), key("cfg:", x)};
    wr_bytes llen[] = {wr_cstr("LLEN"), key("q:", x)};
    if (wr_read(2, hgetall, &cfg) != WR_READ_OK) return wr_error("HGETALL failed");
    if (wr_read(2, llen, &len) != WR_READ_OK) return wr_error("LLEN failed");
    if (wr_get(key("missing:", x), &missing) != WR_READ_OK) return wr_error("GET failed");
    if (cfg.type != WR_ARRAY || len.type != WR_INT) return wr_error("unexpected reply types");
    wr_command("HSET");
    wr_arg(key("seen:", x));
    wr_arg_str("fields");
    wr_arg(decimal(cfg.count / 2));
    wr_arg_str("len");
    wr_arg(decimal(len.integer));
    wr_command("INCR");
    wr_arg(key(missing.type == WR_NIL ? "nil:" : "notnil:", x));
    for (uint32_t i = 0; i + 1 < cfg.count; i += 2) {
        wr_value field, value;
        if (!wr_value_item(&cfg, i, &field) || !wr_value_item(&cfg, i + 1, &value) ||
            field.type != WR_BULK || value.type != WR_BULK)
            return wr_error("a field or value is not a string");
        wr_bytes topic[] = {wr_cstr("out/"), x, wr_cstr("/"), field.bulk};
        wr_publish(join(4, topic), value.bulk, 0, false);
        wr_property(wr_cstr("n"), decimal(i / 2));
    }
    wr_bytes client = key("c-", x);
    wr_bytes in[] = {wr_cstr("in/"), x, wr_cstr("/#")};
    wr_bytes old[] = {wr_cstr("old/"), x, wr_cstr("/#")};
    wr_bytes hello[] = {wr_cstr("in/"), x, wr_cstr("/hello")};
    wr_subscribe(client, join(3, in), 1);
    wr_unsubscribe(client, join(3, old));
    wr_deliver(client, join(3, hello), wr_cstr("hi"), 1, true);
    return WR_OK;
}

WASMRULE_RULE_V2("action-kinds", "0.1.0", "[\"kinds/+\"]", action_kinds)
