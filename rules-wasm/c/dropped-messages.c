/*
 * dropped-messages, in C: the EMQX demo's dropped-message statistics (same behaviour as
 * the Rust rule in rules-wasm/dropped-messages; fixtures in guest-sdk/conformance).
 *
 *   SELECT * FROM "$events/message_dropped", "$events/delivery_dropped"
 *   HINCRBY emqx_message_dropped_count <topic> 1
 *   HINCRBY message_dropped_reason <reason> 1
 */
#include "wasmrule.h"

static int dropped_messages(const wr_event *ev) {
    wr_bytes reason;
    if (!wr_event_str(ev, "reason", &reason))
        return wr_error("event has no string field `reason`");
    wr_command("HINCRBY");
    wr_arg_str("emqx_message_dropped_count");
    wr_arg(wr_event_topic(ev));
    wr_arg_str("1");
    wr_command("HINCRBY");
    wr_arg_str("message_dropped_reason");
    wr_arg(reason);
    wr_arg_str("1");
    return WR_OK;
}

WASMRULE_RULE("dropped-messages", "0.1.0",
              "[\"$events/message_dropped\",\"$events/delivery_dropped\"]", dropped_messages)
