"""threshold-alert (rule ABI v2) as a Python component of wasmrule:rule@2.0.0: the same
behaviour as the Rust rule in rules-wasm/threshold-alert (see its lib.rs)."""

import re

from wasmrule_v2 import RuleError, get, payload_text, publish, rule, set_

_READING = re.compile(r"(-?)(0|[1-9][0-9]{0,8})(?:\.([0-9]{1,6}))?")
_DEVICE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def parse_reading(text):
    """The reading in millionths (exact), or None."""
    m = _READING.fullmatch(text)
    if m is None:
        return None
    value = int(m.group(2)) * 1_000_000 + int((m.group(3) or "").ljust(6, "0"))
    return -value if m.group(1) else value


def threshold_alert(event):
    device = event.topic.rsplit("/", 1)[-1]
    if not _DEVICE.fullmatch(device):
        raise RuleError("the device (last topic level) is not 1 to 64 of A-Z a-z 0-9 - _ .")
    text = payload_text(event)
    current = parse_reading(text)
    if current is None:
        raise RuleError("payload is not a reading: a decimal of at most 9.6 digits")
    key = f"last:{device}"
    previous_bytes = get(key)
    out = [set_(key, text)]
    if isinstance(previous_bytes, bytes):
        previous_text = previous_bytes.decode("utf-8", "replace")
        previous = parse_reading(previous_text)
        if previous is not None and abs(current - previous) * 10 > abs(previous):
            payload = f'{{"device":"{device}","previous":{previous_text},"current":{text}}}'
            out.append(publish(f"alerts/{device}", payload, qos=1))
    return out


Handler = rule("threshold-alert", "0.1.0", ["readings/+"], threshold_alert)
