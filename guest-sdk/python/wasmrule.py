"""wasmrule SDK for rules in Python: a component of the WIT world wasmrule:rule@1.0.0.

A rule is one module that names itself and its handler in one line::

    from wasmrule import hincrby, rule

    def topic_counter(event):
        return hincrby("mqtt_topic_count", event.topic, 1)

    Handler = rule("topic-counter", "0.1.0", ["#"], topic_counter)

componentize-py looks for the class ``Handler`` in the module and exports it as
``wasmrule:rule/handler``. Build with componentize-py 0.25.1 (pip), from the repository
root::

    componentize-py -d guest-sdk/wit -w rule componentize topic-counter \\
        -p rules-wasm/python -p guest-sdk/python --stub-wasi -o topic-counter-py.wasm

``--stub-wasi`` replaces every WASI import with a trap: wasmrule refuses components
that import anything, and a rule needs no files, clock or network.

The handler gets the WIT ``event`` record (``event.topic``, ``event.clientid``,
``event.payload`` as bytes, ``event.json`` for the whole event) and returns one
command or a list of them; it reports an error by raising :class:`RuleError` (or
anything else: the message becomes the rule's error, and no command is run).

:func:`json_members` reads JSON the way serde_json does in the Rust SDK, so a Python
rule accepts and refuses the same payloads as its Rust version (docs/writing-rules.md,
"What every version does").
"""

import json
import re

from componentize_py_types import Err
from wit_world.exports import handler as wit

SDK = "wasmrule-guest-python/0.1.0"


class RuleError(Exception):
    """The rule cannot handle this event; the message is logged by the host."""


# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------


class Command(list):
    """One Redis command: the name, then the arguments, each as bytes."""


def arg(value):
    """One argument as bytes: ``bytes`` as they are, ``str`` as UTF-8, ``int`` in
    decimal. Anything else is a :class:`RuleError` (no silent ``str()`` of a float,
    which would rewrite the number)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise RuleError("argument is not valid Unicode (a lone surrogate)") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise RuleError(f"cannot use a {type(value).__name__} as a Redis argument")


def command(name, *args):
    """``command("HSET", "h", "f", "v")``: any command, arguments as in :func:`arg`."""
    return Command([arg(name), *(arg(a) for a in args)])


def hset(key, field, value):
    """``HSET key field value``."""
    return command("HSET", key, field, value)


def hincrby(key, field, by):
    """``HINCRBY key field by``."""
    return command("HINCRBY", key, field, by)


# ---------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------


def topic_last_level(topic):
    """The text after the topic's last ``/`` (the whole topic if it has none), or
    ``None`` when that is empty (``a/b/``, ``""``)."""
    return topic.rsplit("/", 1)[-1] or None


def clientid(event):
    """The event's client id when it is a non-empty string, else ``None``."""
    return event.clientid or None


def event_field(event, name):
    """Any top-level field of the event JSON (``payload_encoding``, ``pub_props``, ...)
    or ``None``. Parses the event JSON: do not call it in a loop."""
    return json.loads(event.json).get(name)


def payload_is_base64(event):
    """Whether the payload was not UTF-8 and reached the host as base64. ``event.payload``
    holds the decoded bytes either way; this tells a binary payload from text."""
    return event_field(event, "payload_encoding") == "base64"


def payload_text(event):
    """The payload as text, or a :class:`RuleError` for a binary payload."""
    if payload_is_base64(event):
        raise RuleError("payload is binary (base64), not JSON text")
    try:
        return event.payload.decode("utf-8")
    except UnicodeDecodeError:
        raise RuleError("payload is not UTF-8") from None


# ---------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------


class Number(str):
    """A JSON number as the exact text the device wrote (``21.50`` stays ``21.50``)."""


class Raw:
    """A JSON object or array as its text, ``raw.text`` (``json.loads`` it if you need the
    content). Not a ``str``, so that ``isinstance(value, str)`` means a string or number."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return f"Raw({self.text!r})"


class _Invalid(Exception):
    pass


# The JSON grammar of RFC 8259, as serde_json applies it: whitespace is these four
# characters only, a string holds no raw control character and only these escapes (a
# \u escape is not checked for surrogates here: serde_json does not check the values it
# skips), a number has no leading zero, no leading + and digits on both sides of the
# point. [0-9], not \d: \d matches other scripts' digits too.
_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def _ws(text, i):
    return _WS.match(text, i).end()


def _token(pattern, text, i):
    m = pattern.match(text, i)
    if m is None:
        raise _Invalid("bad string or number")
    return m.end()


def _string(token):
    """The content of a string token; an unpaired surrogate escape is an error, as when
    serde_json reads a string."""
    s = json.loads(token)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid("unpaired surrogate in a \\u escape") from None
    return s


def _key_colon(text, i):
    """A key and its colon at ``i``; returns the index after the colon."""
    if not text.startswith('"', i):
        raise _Invalid("expected a key")
    i = _ws(text, _token(_STRING, text, i))
    if not text.startswith(":", i):
        raise _Invalid("expected :")
    return i + 1


def _skip_value(text, i):
    """Skips one value of any depth at ``i``; returns the index after it. Iterative: no
    depth limit, as serde_json when it skips a value (json.loads would stop at Python's
    recursion limit)."""
    closers = []
    while True:
        i = _ws(text, i)
        c = text[i : i + 1]
        if c == "{" or c == "[":
            close = "}" if c == "{" else "]"
            j = _ws(text, i + 1)
            if text.startswith(close, j):
                i = j + 1
            else:
                closers.append(close)
                i = _key_colon(text, j) if c == "{" else j
                continue
        elif c == '"':
            i = _token(_STRING, text, i)
        elif c == "-" or "0" <= c <= "9":
            i = _token(_NUMBER, text, i)
        elif text.startswith("true", i):
            i += 4
        elif text.startswith("false", i):
            i += 5
        elif text.startswith("null", i):
            i += 4
        else:
            raise _Invalid("expected a value")
        # After a value: a comma for the next one, or the ends of containers.
        while closers:
            i = _ws(text, i)
            if text.startswith(",", i):
                i = i + 1 if closers[-1] == "]" else _key_colon(text, _ws(text, i + 1))
                break
            if not text.startswith(closers[-1], i):
                raise _Invalid("expected , or a closing bracket")
            closers.pop()
            i += 1
        else:
            return i


def _value(token):
    c = token[0]
    if c == '"':
        return _string(token)
    if c == "-" or "0" <= c <= "9":
        return Number(token)
    if c in "{[":
        return Raw(token)
    return {"true": True, "false": False, "null": None}[token]


def json_members(text, *names):
    """The members ``names`` of the JSON object ``text``, as a dict holding those that
    are present: a number is a :class:`Number` (its text), a string a ``str``, ``true``,
    ``false`` and ``null`` ``True``, ``False`` and ``None``, an object or array a
    :class:`Raw` (its text).

    Strict RFC 8259, as serde_json in the Rust SDK: no NaN or Infinity, no leading zeros,
    no trailing commas, no single quotes, no raw control characters in strings, only
    whitespace after the object, no depth limit in members that are skipped. Keys are
    compared after unescaping. A name appearing twice, a top-level key or a string read
    holding an unpaired surrogate (``"\\ud83d"``), or ``text`` not being one JSON
    object, is a :class:`RuleError`.
    """
    found = _json_members_fast(text, names)
    if found is not None:
        return found
    return _json_members_strict(text, names)


class _Pairs(list):
    """An object's members as ``json`` parsed them, in order (duplicates kept)."""


def _no_constant(name):
    raise ValueError(name)


# CPython's own JSON reader (its C scanner) with every value kept as text or plain
# Python values, as the strict reader below gives them. It is some 5-10 times faster
# than the strict reader in the interpreter, and accepts a superset of what the strict
# one does only in ways _json_members_fast checks afterwards.
_FAST = json.JSONDecoder(
    parse_float=Number, parse_int=Number, parse_constant=_no_constant,
    object_pairs_hook=_Pairs, strict=True,
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_members_fast(text, names):
    """:func:`json_members` through CPython's JSON reader, or ``None`` when the strict
    reader must decide: any error (it words the error), a requested member that is an
    object or array (a :class:`Raw` needs its text), a requested name given twice, a
    top-level key or requested string with an unpaired surrogate, nesting deeper than
    the interpreter's recursion limit."""
    try:
        pairs = _FAST.decode(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(pairs, _Pairs):
        return None
    found = {}
    for key, value in pairs:
        if _SURROGATE.search(key):
            return None
        if key in names:
            if key in found or isinstance(value, list):
                return None
            if isinstance(value, str) and _SURROGATE.search(value):
                return None
            found[key] = value
    return found


def _json_members_strict(text, names):
    found = {}
    try:
        i = _ws(text, 0)
        if not text.startswith("{", i):
            raise _Invalid("not an object")
        i = _ws(text, i + 1)
        if text.startswith("}", i):
            i += 1
        else:
            while True:
                if not text.startswith('"', i):
                    raise _Invalid("expected a key")
                end = _token(_STRING, text, i)
                key = _string(text[i:end])
                i = _ws(text, end)
                if not text.startswith(":", i):
                    raise _Invalid("expected :")
                start = _ws(text, i + 1)
                i = _skip_value(text, start)
                if key in names:
                    if key in found:
                        raise RuleError(f"payload has {key} twice")
                    found[key] = _value(text[start:i])
                i = _ws(text, i)
                if text.startswith(",", i):
                    i = _ws(text, i + 1)
                    continue
                if not text.startswith("}", i):
                    raise _Invalid("expected , or }")
                i += 1
                break
        if _ws(text, i) != len(text):
            raise _Invalid("text after the object")
    except _Invalid as e:
        raise RuleError(f"payload is not a valid JSON object: {e}") from None
    return found


# ---------------------------------------------------------------------------------------
# The export
# ---------------------------------------------------------------------------------------


def rule(name, version, filters, handle):
    """The class componentize-py exports as ``wasmrule:rule/handler``: assign it to
    ``Handler`` in the rule's module. ``handle(event)`` returns a command, a list of
    commands, or ``None`` for none."""

    class Handler:
        def manifest(self):
            return wit.RuleManifest(name=name, version=version, filters=list(filters))

        def on_event(self, event):
            try:
                out = handle(event)
                if out is None:
                    return []
                if isinstance(out, Command):
                    return [out]
                return [c if isinstance(c, Command) else Command(arg(a) for a in c) for c in out]
            except RuleError as e:
                raise Err(str(e)) from None
            except Exception as e:  # any other failure is the rule's error too
                raise Err(f"{type(e).__name__}: {e}") from None

    return Handler
