//! rmqtt's disconnect and drop reasons under EMQX's names, which EMQX rules (and the
//! demo's `disconnected_reason` and `message_dropped_reason` hashes) use: `normal`,
//! `keepalive_timeout`, `frame_too_large`, `not_authorized`, `queue_full`, ...
//!
//! Some reasons reach the hook only as text (codec errors become
//! `Reason::Error("...")`); those are recognised by the words rmqtt and its codec put
//! in them. Anything not recognised keeps its text in snake case, so a new reason shows
//! up as itself rather than as a misleading one.

use rmqtt::codec::v5::PublishAckReason;
use rmqtt::types::{Disconnect, Reason};

/// The `reason` of a `client.disconnected` event.
pub fn disconnect_reason(r: &Reason) -> String {
    match r {
        // The client sent DISCONNECT: `normal` (EMQX uses the MQTT 5 reason code's name
        // when it is not 0x00).
        Reason::ConnectDisconnect(None) => "normal".into(),
        Reason::ConnectDisconnect(Some(d)) => match d {
            Disconnect::V3 => "normal".into(),
            Disconnect::V5(d) => match d.reason_code as u8 {
                0x00 => "normal".into(),
                0x04 => "disconnect_with_will_message".into(),
                _ => snake(&format!("{:?}", d.reason_code)),
            },
            Disconnect::Other(text) => text_reason(text),
        },
        Reason::ConnectRemoteClose | Reason::ConnectReadWriteError => "tcp_closed".into(),
        Reason::ConnectReadWriteTimeout => "sock_timeout".into(),
        Reason::ConnectKeepaliveTimeout => "keepalive_timeout".into(),
        Reason::ConnectKicked(_) => "kicked".into(),
        Reason::SessionExpiration => "session_expired".into(),
        Reason::HandshakeRateExceeded => "handshake_rate_exceeded".into(),
        Reason::PublishResult(p) => publish_reason(p),
        Reason::SubscribeRefused | Reason::SubscribeFailed(_) => "not_authorized".into(),
        Reason::ProtocolError(text) | Reason::Error(text) => text_reason(text),
        Reason::MqttError(e) => text_reason(&e.to_string()),
        Reason::MessageQueueFull => "queue_full".into(),
        Reason::InflightWindowFull => "receive_maximum_exceeded".into(),
        // Several reasons: the first one that means something.
        Reason::Reasons(rs) => rs
            .iter()
            .map(disconnect_reason)
            .find(|s| s != "unknown")
            .unwrap_or_else(|| "unknown".into()),
        _ => snake(&r.to_string()),
    }
}

/// The `reason` of a `message.dropped` or `delivery.dropped` event.
pub fn drop_reason(r: &Reason) -> String {
    match r {
        Reason::MessageQueueFull => "queue_full".into(),
        Reason::MessageExpiration => "expired".into(),
        Reason::InflightWindowFull => "receive_maximum_exceeded".into(),
        Reason::PublishResult(p) => publish_reason(p),
        other => disconnect_reason(other),
    }
}

/// Reason string wasmrule's own ACL hook gives a PUBLISH above the broker's maximum QoS
/// (rmqtt only announces the maximum; the hook enforces it).
pub const QOS_NOT_SUPPORTED: &str = "qos_not_supported";
/// Reason string for a PUBLISH to a topic name with wildcards (rmqtt routes it).
pub const TOPIC_NAME_INVALID: &str = "topic_name_invalid";

fn publish_reason(p: &rmqtt::types::PublishResult) -> String {
    for known in [QOS_NOT_SUPPORTED, TOPIC_NAME_INVALID] {
        if p.reason_string.as_deref() == Some(known) {
            return known.into();
        }
    }
    match p.reason_code {
        PublishAckReason::NotAuthorized => "not_authorized".into(),
        PublishAckReason::QuotaExceeded => "quota_exceeded".into(),
        PublishAckReason::TopicNameInvalid => "topic_name_invalid".into(),
        PublishAckReason::NoMatchingSubscribers => "no_subscribers".into(),
        other => snake(&format!("{other:?}")),
    }
}

/// Reasons that reach the hook only as text.
fn text_reason(text: &str) -> String {
    let t = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&[
        "too large",
        "toolarge",
        "packet size",
        "size exceeded",
        "maxsizeexceeded",
        "max_size",
    ]) {
        "frame_too_large".into()
    } else if has(&["keepalive", "keep alive"]) {
        "keepalive_timeout".into()
    } else if has(&["qos"]) {
        "qos_not_supported".into()
    } else if has(&["topic"]) && has(&["invalid", "wildcard", "malformed"]) {
        "topic_name_invalid".into()
    } else if has(&[
        "not authorized",
        "notauthorized",
        "not_authorized",
        "refused",
    ]) {
        "not_authorized".into()
    } else if has(&["closed", "reset by peer", "broken pipe", "eof"]) {
        "tcp_closed".into()
    } else if has(&["protocol", "decode", "malformed", "unexpected packet"]) {
        "protocol_error".into()
    } else {
        snake(text)
    }
}

/// `KeepaliveTimeout` / `Keep alive timeout` -> `keepalive_timeout`-like snake case,
/// at most 64 characters, ASCII letters, digits and `_` only.
fn snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            prev_lower = true;
        } else {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = false;
        }
        if out.len() >= 64 {
            break;
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.is_empty() {
        "unknown".into()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_reasons_use_emqx_names() {
        assert_eq!(
            disconnect_reason(&Reason::ConnectDisconnect(None)),
            "normal"
        );
        assert_eq!(
            disconnect_reason(&Reason::ConnectDisconnect(Some(Disconnect::V3))),
            "normal"
        );
        assert_eq!(
            disconnect_reason(&Reason::ConnectKeepaliveTimeout),
            "keepalive_timeout"
        );
        assert_eq!(disconnect_reason(&Reason::ConnectRemoteClose), "tcp_closed");
        assert_eq!(disconnect_reason(&Reason::ConnectKicked(false)), "kicked");
        assert_eq!(drop_reason(&Reason::MessageQueueFull), "queue_full");
        assert_eq!(drop_reason(&Reason::MessageExpiration), "expired");
    }

    #[test]
    fn text_reasons_are_recognised() {
        let e = |t: &'static str| disconnect_reason(&Reason::from_static(t));
        assert_eq!(
            e("Max size exceeded: size=17439, max=16384"),
            "frame_too_large"
        );
        assert_eq!(e("QoS 2 is not supported"), "qos_not_supported");
        assert_eq!(
            e("Topic name invalid: contains wildcard"),
            "topic_name_invalid"
        );
        assert_eq!(e("Connection closed by peer"), "tcp_closed");
        assert_eq!(e("Something New Happened"), "something_new_happened");
    }

    #[test]
    fn snake_case_is_bounded_and_clean() {
        assert_eq!(snake("KeepaliveTimeout"), "keepalive_timeout");
        assert_eq!(snake("  "), "unknown");
        assert_eq!(snake(&"x".repeat(200)).len(), 64);
        assert_eq!(snake("a--b"), "a_b");
    }
}
