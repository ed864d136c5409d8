//! `threshold-alert` (rule ABI v2): remembers each device's last reading and publishes
//! an alert when a reading moves more than 10% away from the previous one.
//!
//! On `readings/<device>` with a payload that is a plain decimal reading (`21.5`):
//!
//! - reads `GET last:<device>`;
//! - returns `SET last:<device> <payload>`;
//! - and, when there was a previous reading and `|current - previous| > 0.1 *
//!   |previous|`, then an MQTT publish on `alerts/<device>`, QoS 1, not retained, of
//!   `{"device":"<device>","previous":<previous>,"current":<current>}` (both numbers as
//!   written). A first reading, or a previous value that is not a reading, alerts
//!   nothing.
//!
//! The comparison is exact: readings are decimals of at most 9 integer and 6 fraction
//! digits (`-?(0|[1-9][0-9]*)(\.[0-9]+)?`, JSON's number grammar without an exponent),
//! compared as integers in millionths, so every language's version of this rule
//! (C, AssemblyScript, Zig, WAT) alerts on exactly the same readings. Exactly 10% is no
//! alert. A device is 1 to 64 characters of `A-Z a-z 0-9 - _ .` (it is put into JSON
//! unescaped). Anything else, and a failed read, is the rule's error.

use wasmrule_guest::{Action, Context, Event, RuleError, action, cmd, rule};

/// A reading in millionths: `21.5` is `21_500_000`.
fn parse_reading(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || int.len() > 9 || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    let frac = match frac {
        Some(f) if !all_digits(f) || f.len() > 6 => return None,
        Some(f) => f,
        None => "",
    };
    let mut value: i64 = int.parse().ok()?;
    for i in 0..6 {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        value = value * 10 + d;
    }
    Some(if neg { -value } else { value })
}

/// `|current - previous| > 0.1 * |previous|`, exactly.
fn is_alert(previous: i64, current: i64) -> bool {
    (current - previous).abs() * 10 > previous.abs()
}

fn valid_device(d: &str) -> bool {
    (1..=64).contains(&d.len())
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[rule(filters = ["readings/+"])]
pub fn threshold_alert(event: &Event, ctx: &mut Context) -> Result<Vec<Action>, RuleError> {
    let device = event.topic_last_level().unwrap_or_default();
    if !valid_device(device) {
        return Err(RuleError::new(
            "the device (last topic level) is not 1 to 64 of A-Z a-z 0-9 - _ .",
        ));
    }
    let current_text = event
        .payload_text()
        .ok_or("payload is binary (base64), not a reading")?;
    let current = parse_reading(current_text)
        .ok_or("payload is not a reading: a decimal of at most 9.6 digits")?;
    let key = format!("last:{device}");
    let previous = ctx.get(&key)?;
    let mut out = vec![cmd::set(&key, current_text).into()];
    let previous_text = previous.as_str();
    if let Some((text, prev)) = previous_text.and_then(|t| Some((t, parse_reading(t)?)))
        && is_alert(prev, current)
    {
        let payload =
            format!(r#"{{"device":"{device}","previous":{text},"current":{current_text}}}"#);
        out.push(
            action::publish(format!("alerts/{device}"), payload)
                .qos(1)
                .into(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmrule_guest::testing::{FakeRedis, run_actions};

    fn run(redis: &mut FakeRedis, device: &str, payload: &str) -> Result<Vec<String>, RuleError> {
        let event = event_json(&format!("readings/{device}"), payload);
        run_actions(threshold_alert, &event, redis)
    }

    fn event_json(topic: &str, payload: &str) -> String {
        let e = Event::message(topic, payload);
        String::from_utf8(e.as_json().to_vec()).unwrap()
    }

    #[test]
    fn readings_parse_exactly() {
        assert_eq!(parse_reading("21.5"), Some(21_500_000));
        assert_eq!(parse_reading("-0.000001"), Some(-1));
        assert_eq!(parse_reading("0"), Some(0));
        assert_eq!(parse_reading("999999999.999999"), Some(999_999_999_999_999));
        for bad in [
            "",
            "-",
            "01",
            "1.",
            ".5",
            "1e3",
            "1.2345678",
            "1234567890",
            "+1",
            " 1",
            "NaN",
        ] {
            assert_eq!(parse_reading(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ten_percent_exactly_is_no_alert() {
        assert!(!is_alert(20_000_000, 22_000_000));
        assert!(is_alert(20_000_000, 22_000_001));
        assert!(is_alert(-20_000_000, -17_999_999));
        assert!(!is_alert(0, 0));
        assert!(is_alert(0, 1));
    }

    #[test]
    fn first_reading_only_stores() {
        let mut redis = FakeRedis::new();
        assert_eq!(run(&mut redis, "d1", "20").unwrap(), ["SET last:d1 20"]);
        assert_eq!(redis.requests()[0], ["GET", "last:d1"]);
    }

    #[test]
    fn a_jump_alerts_after_the_write() {
        let mut redis = FakeRedis::new();
        redis.set("last:d1", "20.0");
        assert_eq!(
            run(&mut redis, "d1", "25").unwrap(),
            [
                "SET last:d1 25",
                r#"MQTT PUBLISH alerts/d1 qos=1 retain=0 payload={"device":"d1","previous":20.0,"current":25}"#,
            ]
        );
        assert_eq!(run(&mut redis, "d1", "21.9").unwrap().len(), 1);
    }

    #[test]
    fn a_previous_value_that_is_no_reading_alerts_nothing() {
        let mut redis = FakeRedis::new();
        redis.set("last:d1", "warm");
        assert_eq!(run(&mut redis, "d1", "25").unwrap(), ["SET last:d1 25"]);
    }

    #[test]
    fn back_to_back_readings_read_the_last_write() {
        let mut redis = FakeRedis::new();
        let mut alerts = Vec::new();
        for r in [
            "20",
            "21",
            "25",
            "25",
            "20",
            "22.000001",
            "22.000001",
            "-5",
            "-5.4",
        ] {
            let out = threshold_alert(&Event::message("readings/d1", r), &mut redis.context());
            let out = out.unwrap();
            redis.apply(&out).unwrap();
            alerts.extend(out[1..].iter().map(|a| a.to_string()));
        }
        let previous: Vec<&str> = alerts
            .iter()
            .map(|a| {
                a.split(r#""previous":"#)
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(previous, ["21", "25", "20", "22.000001"]);
        assert_eq!(
            redis.context().get("last:d1").unwrap().as_str(),
            Some("-5.4")
        );
    }

    #[test]
    fn errors() {
        let mut redis = FakeRedis::new();
        assert!(run(&mut redis, "d1", "hot").is_err());
        assert!(run(&mut redis, "d\"1", "1").is_err());
        redis.hset("last:d2", "f", "v");
        let e = run(&mut redis, "d2", "1").unwrap_err();
        assert!(e.message().contains("redis_error"), "{e}");
        redis.fail_reads(Some(wasmrule_guest::ReadError::Unavailable));
        let e = run(&mut redis, "d1", "1").unwrap_err();
        assert!(e.message().contains("unavailable"), "{e}");
    }
}
