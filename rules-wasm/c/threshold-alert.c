/* threshold-alert (rule ABI v2), in C: the same behaviour as the Rust rule in
 * rules-wasm/threshold-alert (see its lib.rs for the definition).
 *
 * On readings/<device> with a decimal reading as the payload: GET last:<device>, then
 * SET last:<device> <payload>, and when |cur - prev| > 0.1 * |prev| an MQTT publish on
 * alerts/<device> (QoS 1) of {"device":"<device>","previous":<prev>,"current":<cur>}.
 * Readings are compared exactly, as integers in millionths. */
#include "wasmrule.h"

/* A reading -?(0|[1-9][0-9]*)(.[0-9]+)? of at most 9 integer and 6 fraction digits, in
 * millionths. False when `t` is none. */
static bool parse_reading(wr_bytes t, int64_t *out) {
    uint32_t i = 0, digits = 0, frac = 0;
    bool neg = t.len > 0 && t.ptr[0] == '-';
    if (neg) i++;
    int64_t v = 0;
    for (; i < t.len && t.ptr[i] >= '0' && t.ptr[i] <= '9'; i++, digits++) {
        if (digits == 1 && v == 0) return false; /* a leading zero */
        v = v * 10 + (t.ptr[i] - '0');
    }
    if (digits == 0 || digits > 9) return false;
    if (i < t.len) {
        if (t.ptr[i++] != '.') return false;
        for (; i < t.len; i++, frac++) {
            if (t.ptr[i] < '0' || t.ptr[i] > '9' || frac == 6) return false;
            v = v * 10 + (t.ptr[i] - '0');
        }
        if (frac == 0) return false;
    }
    for (; frac < 6; frac++) v *= 10;
    *out = neg ? -v : v;
    return true;
}

static int64_t abs64(int64_t x) { return x < 0 ? -x : x; }

static bool valid_device(wr_bytes d) {
    if (d.len == 0 || d.len > 64) return false;
    for (uint32_t i = 0; i < d.len; i++) {
        uint8_t b = d.ptr[i];
        bool ok = (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') ||
                  b == '-' || b == '_' || b == '.';
        if (!ok) return false;
    }
    return true;
}

/* `a` then `b`, in the heap. */
static wr_bytes concat(const char *a, wr_bytes b) {
    uint32_t n = wr_strlen(a);
    uint8_t *buf = wr_alloc(n + b.len);
    if (!buf) return (wr_bytes){0, 0};
    wr_copy(buf, (const uint8_t *)a, n);
    wr_copy(buf + n, b.ptr, b.len);
    return (wr_bytes){buf, n + b.len};
}

static int threshold_alert(const wr_event *ev) {
    wr_bytes device = wr_topic_last_level(wr_event_topic(ev));
    if (!valid_device(device))
        return wr_error("the device (last topic level) is not 1 to 64 of A-Z a-z 0-9 - _ .");
    if (wr_event_payload_is_base64(ev)) return wr_error("payload is binary (base64), not a reading");
    wr_bytes cur_text;
    int64_t cur, prev;
    if (!wr_event_payload_text(ev, &cur_text) || !parse_reading(cur_text, &cur))
        return wr_error("payload is not a reading: a decimal of at most 9.6 digits");
    wr_bytes key = concat("last:", device);
    if (!key.ptr) return wr_error("out of memory in the rule");
    wr_value previous;
    int r = wr_get(key, &previous);
    if (r != WR_READ_OK) return wr_error("redis read failed");
    wr_command("SET");
    wr_arg(key);
    wr_arg(cur_text);
    if (previous.type == WR_BULK && parse_reading(previous.bulk, &prev) &&
        abs64(cur - prev) * 10 > abs64(prev)) {
        /* {"device":"<device>","previous":<prev>,"current":<cur>}: neither the device
         * nor a reading holds a character JSON escapes. */
        const char *parts[] = {"{\"device\":\"", "\",\"previous\":", ",\"current\":", "}"};
        wr_bytes vals[] = {device, previous.bulk, cur_text};
        uint32_t n = 0;
        for (int i = 0; i < 4; i++) n += wr_strlen(parts[i]) + (i < 3 ? vals[i].len : 0);
        uint8_t *json = wr_alloc(n);
        if (!json) return wr_error("out of memory in the rule");
        uint32_t at = 0;
        for (int i = 0; i < 4; i++) {
            uint32_t len = wr_strlen(parts[i]);
            wr_copy(json + at, (const uint8_t *)parts[i], len);
            at += len;
            if (i < 3) {
                wr_copy(json + at, vals[i].ptr, vals[i].len);
                at += vals[i].len;
            }
        }
        wr_bytes topic = concat("alerts/", device);
        if (!topic.ptr) return wr_error("out of memory in the rule");
        wr_publish(topic, (wr_bytes){json, n}, 1, false);
    }
    return WR_OK;
}

WASMRULE_RULE_V2("threshold-alert", "0.1.0", "[\"readings/+\"]", threshold_alert)
