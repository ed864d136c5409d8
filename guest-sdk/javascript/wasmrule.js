// wasmrule.js: write wasmrule rules in JavaScript, as components of the WIT world
// wasmrule:rule@1.0.0 (guest-sdk/wit/rule.wit), built with componentize-qjs (QuickJS).
//
// A rule is one ES module that exports `handler`, made by `rule` from its manifest and
// a function of the event:
//
//     import { hincrby, rule } from "../../guest-sdk/javascript/wasmrule.js";
//
//     export const handler = rule(
//       { name: "topic-counter", version: "0.1.0", filters: ["#"] },
//       (event) => hincrby("mqtt_topic_count", event.topic, 1),
//     );
//
// Build from the repository root with componentize-qjs 0.4.5
// (npm ci --prefix guest-sdk/javascript):
//
//     guest-sdk/javascript/node_modules/.bin/componentize-qjs --wit guest-sdk/wit \
//         --world rule --js rule.js --stub-wasi --sync --opt-size -o rule.wasm
//
// `--stub-wasi` turns every WASI import into a trap (wasmrule refuses components that
// import anything); `--sync` uses the runtime without the component-model async ABI;
// `--opt-size` the smaller QuickJS build.
//
// The handler gets the WIT event record with camelCase fields (`event.topic`,
// `event.clientid` or null, `event.payload` as bytes, `event.json` for the whole event)
// and returns one command, a list of commands, or null. It reports an error by throwing
// a RuleError (any other exception is reported the same way, with its name).
//
// Redis arguments are bytes: strings are encoded as UTF-8, Uint8Arrays passed as they
// are. JSON.parse cannot be used for payloads: it turns 21.50 into 21.5 and accepts
// duplicate keys. jsonMembers reads JSON the way serde_json does in the Rust SDK, so a
// JavaScript rule accepts and refuses the same payloads as its Rust version
// (docs/writing-rules.md, "What every version does").

/** What built the module. */
export const SDK = "wasmrule-guest-javascript/0.1.0";

/** The rule cannot handle this event; the message is logged by the host. */
export class RuleError extends Error {}

// ---------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------

/** The UTF-8 encoding of the string `s` (a lone surrogate is a RuleError). */
export function utf8(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = s.charCodeAt(i + 1);
      if (c > 0xdbff || !(d >= 0xdc00 && d <= 0xdfff)) {
        throw new RuleError("string holds an unpaired surrogate");
      }
      c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
      i++;
    }
    pushCodePoint(out, c);
  }
  return Uint8Array.from(out);
}

function pushCodePoint(out, c) {
  if (c < 0x80) {
    out.push(c);
  } else if (c < 0x800) {
    out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
  } else if (c < 0x10000) {
    out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
  } else {
    out.push(
      0xf0 | (c >> 18),
      0x80 | ((c >> 12) & 0x3f),
      0x80 | ((c >> 6) & 0x3f),
      0x80 | (c & 0x3f),
    );
  }
}

/** The string of the UTF-8 bytes `b` (for keys and messages; not validated). */
export function fromUtf8(b) {
  let s = "";
  for (let i = 0; i < b.length; ) {
    const c = b[i];
    let cp, n;
    if (c < 0x80) [cp, n] = [c, 1];
    else if (c < 0xe0) [cp, n] = [((c & 0x1f) << 6) | (b[i + 1] & 0x3f), 2];
    else if (c < 0xf0) {
      [cp, n] = [((c & 0x0f) << 12) | ((b[i + 1] & 0x3f) << 6) | (b[i + 2] & 0x3f), 3];
    } else {
      cp = ((c & 0x07) << 18) | ((b[i + 1] & 0x3f) << 12) | ((b[i + 2] & 0x3f) << 6);
      [cp, n] = [cp | (b[i + 3] & 0x3f), 4];
    }
    s += String.fromCodePoint(cp);
    i += n;
  }
  return s;
}

/** Whether `b` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
export function isUtf8(b) {
  for (let i = 0; i < b.length; ) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    let n, lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) n = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c === 0xe0) lo = 0xa0;
      if (c === 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c === 0xf0) lo = 0x90;
      if (c === 0xf4) hi = 0x8f;
    } else return false;
    if (i + n >= b.length) return false;
    if (b[i + 1] < lo || b[i + 1] > hi) return false;
    for (let k = 2; k <= n; k++) {
      if ((b[i + k] & 0xc0) !== 0x80) return false;
    }
    i += n + 1;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/** One argument as bytes: a Uint8Array as it is, a string as UTF-8, an integer in
 * decimal. Anything else is a RuleError (no silent String() of a float, which would
 * rewrite the number). */
export function arg(value) {
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string") return utf8(value);
  if (typeof value === "number" && Number.isSafeInteger(value)) return utf8(String(value));
  if (typeof value === "bigint") return utf8(value.toString());
  throw new RuleError(`cannot use ${typeof value} ${String(value)} as a Redis argument`);
}

/** `command("HSET", "h", "f", "v")`: any command, arguments as in `arg`. */
export function command(name, ...args) {
  return [arg(name), ...args.map(arg)];
}

/** `HSET key field value` */
export function hset(key, field, value) {
  return command("HSET", key, field, value);
}

/** `HINCRBY key field by` */
export function hincrby(key, field, by) {
  return command("HINCRBY", key, field, by);
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/** The text after the topic's last `/` (the whole topic if it has none), or null when
 * that is empty (`a/b/`, ``). */
export function topicLastLevel(topic) {
  const last = topic.slice(topic.lastIndexOf("/") + 1);
  return last === "" ? null : last;
}

/** The event's client id when it is a non-empty string, else null. */
export function clientid(event) {
  return event.clientid ? event.clientid : null;
}

/** Any top-level field of the event JSON (`payload_encoding`, `pub_props`, ...), or
 * undefined. The host writes the event, so JSON.parse is fine here; it parses the whole
 * event, so do not call it in a loop. */
export function eventField(event, name) {
  return JSON.parse(event.json)[name];
}

/** Whether the payload was not UTF-8 and reached the host as base64. `event.payload`
 * holds the decoded bytes either way; this tells a binary payload from text. */
export function payloadIsBase64(event) {
  return eventField(event, "payload_encoding") === "base64";
}

/** The payload's UTF-8 bytes, or a RuleError for a binary payload. */
export function payloadText(event) {
  if (payloadIsBase64(event)) throw new RuleError("payload is binary (base64), not JSON text");
  const b = Uint8Array.from(event.payload);
  if (!isUtf8(b)) throw new RuleError("payload is not UTF-8");
  return b;
}

// ---------------------------------------------------------------------------------------
// JSON, as serde_json reads it
// ---------------------------------------------------------------------------------------

const QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c, COLON = 0x3a, MINUS = 0x2d;
const LBRACE = 0x7b, RBRACE = 0x7d, LBRACKET = 0x5b, RBRACKET = 0x5d;
// The byte each short escape stands for: \" \\ \/ \b \f \n \r \t.
const SHORT_ESCAPES = { 0x22: 0x22, 0x5c: 0x5c, 0x2f: 0x2f, 0x62: 8, 0x66: 12, 0x6e: 10, 0x72: 13, 0x74: 9 };

/** One JSON value as written: `raw` holds its bytes, `kind` what it is. */
export class JsonValue {
  constructor(raw) {
    this.raw = raw;
    const c = raw[0];
    this.kind =
      c === QUOTE ? "string"
      : c === MINUS || (c >= 0x30 && c <= 0x39) ? "number"
      : c === LBRACE ? "object"
      : c === LBRACKET ? "array"
      : c === 0x74 ? "true"
      : c === 0x66 ? "false"
      : "null";
  }

  /** A string's content as UTF-8 bytes, escapes decoded (an unpaired surrogate is a
   * RuleError), or null if this is not a string. */
  string() {
    return this.kind === "string" ? Json.unescape(this.raw, 0, this.raw.length) : null;
  }
}

function fail(what) {
  throw new RuleError(`payload is not a valid JSON object: ${what}`);
}

class Json {
  static ws(b, i) {
    while (i < b.length) {
      const c = b[i];
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      i++;
    }
    return i;
  }

  static hex(b, i) {
    let v = 0;
    for (let k = 0; k < 4; k++) {
      const c = b[i + k];
      let d;
      if (c >= 0x30 && c <= 0x39) d = c - 0x30;
      else if (c >= 0x61 && c <= 0x66) d = c - 0x57;
      else if (c >= 0x41 && c <= 0x46) d = c - 0x37;
      else fail("bad \\u escape");
      v = v * 16 + d;
    }
    return v;
  }

  /** Skips the string starting at b[i] (a quote); returns the index after it. */
  static skipString(b, i) {
    for (i++; ; i++) {
      if (i >= b.length) fail("unterminated string");
      const c = b[i];
      if (c === QUOTE) return i + 1;
      if (c < 0x20) fail("control character in a string");
      if (c === BACKSLASH) {
        const e = b[++i];
        if (e === 0x75) {
          Json.hex(b, i + 1);
          i += 4;
        } else if (SHORT_ESCAPES[e] === undefined) {
          fail("unknown escape");
        }
      }
    }
  }

  /** The content of the (already skipped, so well-formed) string b[start..end) as
   * UTF-8, escapes decoded; an unpaired surrogate is a RuleError. */
  static unescape(b, start, end) {
    const out = [];
    for (let i = start + 1; i < end - 1; i++) {
      const c = b[i];
      if (c !== BACKSLASH) {
        out.push(c);
        continue;
      }
      const e = b[++i];
      if (e !== 0x75) {
        out.push(SHORT_ESCAPES[e]);
        continue;
      }
      let cp = Json.hex(b, i + 1);
      i += 4;
      if (cp >= 0xdc00 && cp <= 0xdfff) fail("unpaired surrogate in a \\u escape");
      if (cp >= 0xd800 && cp <= 0xdbff) {
        if (b[i + 1] !== BACKSLASH || b[i + 2] !== 0x75) fail("unpaired surrogate in a \\u escape");
        const lo = Json.hex(b, i + 3);
        if (lo < 0xdc00 || lo > 0xdfff) fail("unpaired surrogate in a \\u escape");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i += 6;
      }
      pushCodePoint(out, cp);
    }
    return Uint8Array.from(out);
  }

  static skipNumber(b, i) {
    const digits = (j) => {
      const s = j;
      while (b[j] >= 0x30 && b[j] <= 0x39) j++;
      if (j === s) fail("bad number");
      return j;
    };
    if (b[i] === MINUS) i++;
    if (b[i] === 0x30) i++;
    else i = digits(i);
    if (b[i] === 0x2e) i = digits(i + 1);
    if (b[i] === 0x65 || b[i] === 0x45) {
      i++;
      if (b[i] === 0x2b || b[i] === MINUS) i++;
      i = digits(i);
    }
    return i;
  }

  static literal(b, i, word) {
    for (let k = 0; k < word.length; k++) {
      if (b[i + k] !== word.charCodeAt(k)) fail("bad literal");
    }
    return i + word.length;
  }

  /** Skips one value of any depth starting at b[i] (no whitespace before it); returns
   * the index after it. Iterative: no depth limit, as serde_json when it skips. */
  static skipValue(b, i) {
    const stack = [];
    for (;;) {
      i = Json.ws(b, i);
      const c = b[i];
      let opened = false;
      if (c === LBRACE || c === LBRACKET) {
        const j = Json.ws(b, i + 1);
        if (b[j] === (c === LBRACE ? RBRACE : RBRACKET)) {
          i = j + 1;
        } else {
          stack.push(c);
          i = c === LBRACE ? Json.keyColon(b, j) : j;
          opened = true;
        }
      } else if (c === QUOTE) i = Json.skipString(b, i);
      else if (c === MINUS || (c >= 0x30 && c <= 0x39)) i = Json.skipNumber(b, i);
      else if (c === 0x74) i = Json.literal(b, i, "true");
      else if (c === 0x66) i = Json.literal(b, i, "false");
      else if (c === 0x6e) i = Json.literal(b, i, "null");
      else fail("expected a value");
      if (opened) continue;
      // After a value: a comma for the next one, or the ends of containers.
      for (;;) {
        if (stack.length === 0) return i;
        i = Json.ws(b, i);
        const top = stack[stack.length - 1];
        if (b[i] === COMMA) {
          i = top === LBRACE ? Json.keyColon(b, Json.ws(b, i + 1)) : i + 1;
          break;
        }
        if (b[i] !== (top === LBRACE ? RBRACE : RBRACKET)) fail("expected , or a closing bracket");
        stack.pop();
        i++;
      }
    }
  }

  /** A key (a string) and its colon at b[i]; returns the index after the colon. */
  static keyColon(b, i) {
    if (b[i] !== QUOTE) fail("expected a key");
    i = Json.ws(b, Json.skipString(b, i));
    if (b[i] !== COLON) fail("expected :");
    return i + 1;
  }
}

/** The members `names` of the JSON object in the UTF-8 bytes `text`: an object with a
 * JsonValue for each name present.
 *
 * Strict RFC 8259, as serde_json in the Rust SDK: no leading zeros, no trailing commas,
 * no single quotes, no raw control characters in strings, only whitespace after the
 * object, no depth limit in members that are skipped. Keys are compared after
 * unescaping. A name appearing twice, a top-level key holding an unpaired surrogate, or
 * `text` not being one JSON object, is a RuleError. */
export function jsonMembers(text, names) {
  const b = text;
  const found = {};
  let i = Json.ws(b, 0);
  if (b[i] !== LBRACE) fail("not an object");
  i = Json.ws(b, i + 1);
  if (b[i] === RBRACE) {
    i++;
  } else {
    for (;;) {
      if (b[i] !== QUOTE) fail("expected a key");
      const keyStart = i;
      i = Json.skipString(b, i);
      const key = fromUtf8(Json.unescape(b, keyStart, i));
      i = Json.ws(b, i);
      if (b[i] !== COLON) fail("expected :");
      const start = Json.ws(b, i + 1);
      i = Json.skipValue(b, start);
      if (names.includes(key)) {
        if (Object.hasOwn(found, key)) throw new RuleError(`payload has ${key} twice`);
        found[key] = new JsonValue(b.subarray(start, i));
      }
      i = Json.ws(b, i);
      if (b[i] === COMMA) {
        i = Json.ws(b, i + 1);
        continue;
      }
      if (b[i] !== RBRACE) fail("expected , or }");
      i++;
      break;
    }
  }
  if (Json.ws(b, i) !== b.length) fail("text after the object");
  return found;
}

// ---------------------------------------------------------------------------------------
// The export
// ---------------------------------------------------------------------------------------

/** The `handler` interface to export: `export const handler = rule(manifest, handle)`.
 * `manifest` is `{ name, version, filters }`; `handle(event)` returns a command, a list
 * of commands, or null for none. */
export function rule(manifest, handle) {
  return {
    manifest() {
      return {
        name: manifest.name,
        version: manifest.version ?? null,
        filters: [...manifest.filters],
      };
    },
    onEvent(event) {
      let out;
      try {
        out = handle(event);
      } catch (e) {
        // A thrown string is the component's result<_, string> error.
        if (e instanceof RuleError) throw e.message;
        throw `${e && e.name ? e.name : "Error"}: ${e && e.message ? e.message : String(e)}`;
      }
      if (out === null || out === undefined) return [];
      if (out.length > 0 && out[0] instanceof Uint8Array) return [out];
      return out.map((c) => c.map(arg));
    },
  };
}
