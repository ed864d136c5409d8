/*
 * authz-stats, in C: the EMQX demo's authorization statistics (same behaviour as the Rust
 * rule in rules-wasm/authz-stats; fixtures in guest-sdk/conformance).
 *
 *   SELECT * FROM "$events/client_check_authz_complete"
 *   HINCRBY authz_source <authz_source> 1
 *   HINCRBY authz_result <result>:<action> 1
 */
#include "wasmrule.h"

static int authz_stats(const wr_event *ev) {
    wr_bytes source, result, action;
    if (!wr_event_str(ev, "authz_source", &source))
        return wr_error("event has no string field `authz_source`");
    if (!wr_event_str(ev, "result", &result))
        return wr_error("event has no string field `result`");
    if (!wr_event_str(ev, "action", &action))
        return wr_error("event has no string field `action`");
    /* <result>:<action>, in memory that lives as long as the instance (one event). */
    uint8_t *joined = wr_alloc(result.len + 1 + action.len);
    if (!joined) return wr_error("out of memory");
    wr_copy(joined, result.ptr, result.len);
    joined[result.len] = ':';
    wr_copy(joined + result.len + 1, action.ptr, action.len);
    wr_command("HINCRBY");
    wr_arg_str("authz_source");
    wr_arg(source);
    wr_arg_str("1");
    wr_command("HINCRBY");
    wr_arg_str("authz_result");
    wr_arg((wr_bytes){joined, result.len + 1 + action.len});
    wr_arg_str("1");
    return WR_OK;
}

WASMRULE_RULE("authz-stats", "0.1.0", "[\"$events/client_check_authz_complete\"]",
              authz_stats)
