/*
 * disconnect-reasons, in C: the EMQX demo's disconnect statistics (same behaviour as the
 * Rust rule in rules-wasm/disconnect-reasons; fixtures in guest-sdk/conformance).
 *
 *   SELECT * FROM "$events/client_disconnected"
 *   HINCRBY disconnected_reason <reason> 1
 */
#include "wasmrule.h"

static int disconnect_reasons(const wr_event *ev) {
    wr_bytes reason;
    if (!wr_event_str(ev, "reason", &reason))
        return wr_error("event has no string field `reason`");
    wr_command("HINCRBY");
    wr_arg_str("disconnected_reason");
    wr_arg(reason);
    wr_arg_str("1");
    return WR_OK;
}

WASMRULE_RULE("disconnect-reasons", "0.1.0", "[\"$events/client_disconnected\"]",
              disconnect_reasons)
