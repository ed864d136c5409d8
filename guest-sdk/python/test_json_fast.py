"""json_members' fast path (CPython's JSON reader) against its strict reader, on the
conformance payloads and on random mutations of them: both must accept the same texts
and give the same members, or both refuse. Runs on the host's CPython, outside wasm
(test.sh); the componentize-py modules the SDK imports are stood in for.

Usage: python3 guest-sdk/python/test_json_fast.py [SEED]
"""

import json
import pathlib
import random
import sys
import types

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.modules["componentize_py_types"] = types.SimpleNamespace(Err=Exception)
sys.modules["wit_world"] = types.ModuleType("wit_world")
exports = types.ModuleType("wit_world.exports")
exports.handler = types.SimpleNamespace()
sys.modules["wit_world.exports"] = exports

import wasmrule  # noqa: E402

# Pieces the mutations insert: JSON's own characters, and what the fast path must
# hand to the strict reader (surrogates, NaN, control characters, nested values).
PIECES = list('{}[]",:\\ \t\n0123456789-+.eEtrufalsn') + [
    "\\u", "temp", '"temp"', "\\ud83d", "\\ude00", "NaN", "\x01", "\u00e9", "\ud83d",
    '{"temp":[1]}', '"temp":{"a":1}', '"temp":1,',
]


def outcome(read, text, names):
    try:
        found = read(text, names)
    except wasmrule.RuleError:
        return "refused"
    return {k: (type(v).__name__, vars(v) if isinstance(v, wasmrule.Raw) else v)
            for k, v in found.items()}


def mutate(rng, text):
    t = list(text)
    for _ in range(rng.randint(0, 3)):
        at = rng.randint(0, len(t))
        op = rng.random()
        if op < 0.4 and t:
            del t[min(at, len(t) - 1)]
        elif op < 0.8:
            t.insert(at, rng.choice(PIECES))
        elif t:
            t[min(at, len(t) - 1)] = rng.choice(PIECES)
    return "".join(t)


def main():
    rng = random.Random(int(sys.argv[1]) if len(sys.argv) > 1 else 14)
    payloads = []
    for fixture in sorted((HERE.parent / "conformance").glob("*.json")):
        for case in json.loads(fixture.read_text())["cases"]:
            p = case["event"].get("payload")
            if isinstance(p, str):
                payloads.append(p)
    fast = lambda t, names: wasmrule.json_members(t, *names)  # noqa: E731
    strict = wasmrule._json_members_strict
    checked, differ = 0, []
    for base in payloads:
        for n in range(100):
            text = base if n == 0 else mutate(rng, base)
            for names in (("temp",), ("temp", "x", "hum")):
                checked += 1
                a, b = outcome(fast, text, names), outcome(strict, text, names)
                if a != b:
                    differ.append((text, names, a, b))
    for text, names, a, b in differ[:10]:
        print(f"differ on {text!r} {names}: fast {a}, strict {b}")
    print(f"json_members fast path: {checked} texts, {len(differ)} differ")
    sys.exit(1 if differ or checked == 0 else 0)


if __name__ == "__main__":
    main()
