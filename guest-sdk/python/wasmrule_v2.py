"""wasmrule SDK for Python rules of ABI v2: components of the WIT world
wasmrule:rule@2.0.0 (guest-sdk/wit-v2/rule.wit), which may read Redis and return MQTT
actions beside Redis commands.

A rule is one module, as with :mod:`wasmrule` (whose helpers, re-exported here, work
the same)::

    from wasmrule_v2 import get, publish, rule, set_

    def remember(event):
        previous = get(b"last")
        out = [set_(b"last", event.payload)]
        if previous is None:
            out.append(publish("firsts", event.payload, qos=1))
        return out

    Handler = rule("remember", "0.1.0", ["readings/+"], remember)

Build with componentize-py 0.25.1, from the repository root, against the v2 world::

    componentize-py -d guest-sdk/wit-v2 -w rule componentize threshold-alert \\
        -p rules-wasm/python-v2 -p guest-sdk/python --stub-wasi -o threshold-alert-py.wasm

The handler returns an action, a command (:func:`command`, :func:`set_`, ...), a list
of them, or ``None``. Reads return Python values: ``None`` (nil), ``int``, ``bytes``,
or a ``list`` of those; a refused or failed read raises :class:`ReadError`, whose
``code`` is the ABI's name (``"not_allowed"``, ``"unavailable"``, ...). An uncaught
one becomes the rule's error.
"""

from componentize_py_types import Err
from wit_world.exports import handler as wit
from wit_world.imports import redis as _redis

from wasmrule import (  # noqa: F401  (re-exported)
    Command, Number, Raw, RuleError, arg, clientid, command, event_field, hincrby, hset,
    json_members, payload_is_base64, payload_text, topic_last_level,
)

SDK = "wasmrule-guest-python/0.2.0"

_CODES = {
    _redis.ReadError.NOT_ALLOWED: "not_allowed",
    _redis.ReadError.BAD_REQUEST: "bad_request",
    _redis.ReadError.OVER_BUDGET: "over_budget",
    _redis.ReadError.UNAVAILABLE: "unavailable",
    _redis.ReadError.REDIS_ERROR: "redis_error",
}


class ReadError(Exception):
    """A read got no reply; ``code`` is the ABI's name for why."""

    def __init__(self, code):
        super().__init__(f"redis read failed: {code}")
        self.code = code


# ---------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------


def _tree(nodes, i):
    """The value whose first node is ``nodes[i]``, and the index after it."""
    n = nodes[i]
    if isinstance(n, _redis.Node_Nil):
        return None, i + 1
    if isinstance(n, (_redis.Node_Integer, _redis.Node_Bulk)):
        return n.value, i + 1
    items, i = [], i + 1
    for _ in range(n.value):
        item, i = _tree(nodes, i)
        items.append(item)
    return items, i


def read(name, *args):
    """Runs one read-only command of the read set (docs/abi.md) and returns its reply:
    ``None``, ``int``, ``bytes`` or a ``list``. Arguments are as for :func:`arg`."""
    try:
        nodes = _redis.read([arg(name)] + [arg(a) for a in args])
    except Err as e:
        raise ReadError(_CODES.get(e.value, "unknown")) from None
    value, _ = _tree(nodes, 0)
    return value


def get(key):
    """``GET key``: the bytes, or ``None``."""
    return read("GET", key)


def hget(key, field):
    """``HGET key field``: the bytes, or ``None``."""
    return read("HGET", key, field)


def hgetall(key):
    """``HGETALL key`` as a ``dict`` of bytes to bytes."""
    flat = read("HGETALL", key)
    return dict(zip(flat[0::2], flat[1::2]))


# ---------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------


def set_(key, value):
    """``SET key value`` (``set`` is Python's)."""
    return command("SET", key, value)


def _text(value):
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def publish(topic, payload, qos=0, retain=False, properties=()):
    """An MQTT publish; ``properties`` are (key, value) pairs of MQTT 5 user
    properties."""
    props = [(_text(k), _text(v)) for k, v in properties]
    return wit.Action_Publish(wit.Message(_text(topic), arg(payload), qos, retain, props))


def subscribe(client, filter, qos=0):
    """Subscribes the session of ``client`` to ``filter`` (embedded broker)."""
    return wit.Action_Subscribe(wit.Subscription(_text(client), _text(filter), qos))


def unsubscribe(client, filter):
    """Unsubscribes the session of ``client`` from ``filter`` (embedded broker)."""
    return wit.Action_Unsubscribe(wit.Unsubscription(_text(client), _text(filter)))


def deliver(client, topic, payload, qos=0, retain=False):
    """Delivers ``payload`` on ``topic`` to the session of ``client`` only."""
    return wit.Action_Deliver(wit.Delivery(_text(client), _text(topic), arg(payload), qos, retain))


_ACTIONS = (wit.Action_Redis, wit.Action_Publish, wit.Action_Subscribe,
            wit.Action_Unsubscribe, wit.Action_Deliver)


def _action(a):
    if isinstance(a, _ACTIONS):
        return a
    return wit.Action_Redis(a if isinstance(a, Command) else Command(arg(x) for x in a))


def rule(name, version, filters, handle):
    """The class componentize-py exports as ``wasmrule:rule/handler@2.0.0``: assign it
    to ``Handler``. ``handle(event)`` returns an action or command, a list of them, or
    ``None``."""

    class Handler:
        def manifest(self):
            return wit.RuleManifest(name=name, version=version, filters=list(filters))

        def on_event(self, event):
            try:
                out = handle(event)
                if out is None:
                    return []
                if isinstance(out, _ACTIONS) or isinstance(out, Command):
                    return [_action(out)]
                return [_action(a) for a in out]
            except RuleError as e:
                raise Err(str(e)) from None
            except Exception as e:  # a ReadError, or any other failure: the rule's error
                raise Err(f"{type(e).__name__}: {e}") from None

    return Handler
