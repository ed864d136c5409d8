// wasmrule.ts: write wasmrule rules in AssemblyScript (rule ABI v1 and v2, docs/abi.md).
//
// A rule is one entry file that exports the four ABI functions; two come from here
// as they are, two are one line each because they name the rule and its handler:
//
//     import { Event, Output, manifest, run } from "../../guest-sdk/assemblyscript/wasmrule";
//     export { wasmrule_abi_version_1, wasmrule_alloc } from "../../guest-sdk/assemblyscript/wasmrule";
//
//     function count(event: Event, out: Output): void {
//       out.command("HINCRBY").arg("mqtt_topic_count").argBytes(event.topic()).arg("1");
//     }
//
//     export function wasmrule_manifest(): u64 {
//       return manifest("topic-counter", "0.1.0", ["#"]);
//     }
//     export function wasmrule_on_event(ptr: usize, len: u32): u64 {
//       return run(ptr, len, count);
//     }
//
// Build with AssemblyScript 0.28 (npm ci in guest-sdk/assemblyscript):
//
//     asc rule.ts -o rule.wasm --runtime stub --use abort= -Oz
//
// `--runtime stub` is a bump allocator without a collector, which is all a rule needs:
// the host makes a fresh instance for every event. `--use abort=` turns AssemblyScript's
// `abort` (a failed assertion, an out-of-bounds array index) into a trap instead of an
// import the host would refuse. Memory comes from the stub's allocator, so rule code may
// use strings and arrays freely; running out of memory traps (in wasmrule the host's
// memory cap stops the rule first, with a `memory` error).
//
// A rule of ABI v2 exports `wasmrule_abi_version_2` instead and calls `runV2`: its
// handler may read Redis (`get`, `hget`, `read`: a `ReadResult` with a `code` from
// `ReadCode` and a typed `Value`) and gets an `Actions` output, which takes MQTT
// actions (`publish`, `property`, `subscribe`, `unsubscribe`, `deliver`) beside its
// commands.
//
// Event data never becomes an AssemblyScript string unless you ask: fields, JSON values
// and arguments are `Bytes`, a (pointer, length) view of UTF-8 in linear memory, since
// AssemblyScript strings are UTF-16 and Redis arguments are bytes.

/** What built the module, reported in the manifest's `sdk` field. */
export const SDK = "wasmrule-guest-assemblyscript/0.1.0";

// ---------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------

/** A run of bytes in linear memory: not NUL-terminated, may hold any byte. */
export class Bytes {
  constructor(public ptr: usize, public len: u32) {}

  /** The UTF-8 encoding of `s`, in new memory. */
  static of(s: string): Bytes {
    const buf = String.UTF8.encode(s);
    return new Bytes(changetype<usize>(buf), <u32>buf.byteLength);
  }

  /** The byte at `i` (no bounds check). */
  @inline at(i: u32): u8 {
    return load<u8>(this.ptr + i);
  }

  /** Whether these bytes are exactly `other`'s. */
  equals(other: Bytes): bool {
    return this.len == other.len && memory.compare(this.ptr, other.ptr, this.len) == 0;
  }

  /** Whether these bytes are the UTF-8 encoding of `s`. */
  is(s: string): bool {
    return this.equals(Bytes.of(s));
  }

  /** The bytes as a string, decoding UTF-8. */
  toString(): string {
    return String.UTF8.decodeUnsafe(this.ptr, this.len);
  }
}

const EMPTY = new Bytes(0, 0);

// ---------------------------------------------------------------------------------------
// JSON
//
// Enough JSON for rules: validate a text and find top-level members of an object as
// their raw source text; then read that text as a string (unescaped) or keep it as is
// (a number keeps the digits the device wrote: 21.50 stays 21.50).
//
// The reader is strict like serde_json, so every language's rule accepts and rejects
// the same payloads: RFC 8259 grammar, no control characters inside strings, nothing
// but whitespace after the value, and a key asked for that appears twice makes the
// object invalid. Like serde_json skipping members it does not need, it accepts any
// depth of nesting: it keeps its own stack instead of recursing.
// ---------------------------------------------------------------------------------------

/** How looking up one member went. */
export enum Found {
  /** The member exists; `Member.raw` holds its raw text. */
  Yes,
  /** The text is a valid object without that top-level member. */
  No,
  /** Not valid JSON, not an object, or the member appears twice. */
  Invalid,
}

/** The result of `jsonMember`. */
export class Member {
  constructor(public found: Found, public raw: Bytes) {}
}

// A cursor over JSON text. Module-level state: a rule handles one event at a time.
let at: usize = 0; // next byte to read
let end: usize = 0; // one past the last byte

// The closing brackets of the containers open while skipping a value, innermost last.
let stack: usize = 0;
let stackCap: u32 = 0;

function ws(): void {
  while (at < end) {
    const b = load<u8>(at);
    if (b != 0x20 && b != 0x09 && b != 0x0a && b != 0x0d) break;
    at++;
  }
}

function eat(b: u8): bool {
  if (at < end && load<u8>(at) == b) {
    at++;
    return true;
  }
  return false;
}

function hexDigit(b: u8): i32 {
  if (b >= 0x30 && b <= 0x39) return b - 0x30; // 0-9
  if (b >= 0x61 && b <= 0x66) return b - 0x61 + 10; // a-f
  if (b >= 0x41 && b <= 0x46) return b - 0x41 + 10; // A-F
  return -1;
}

// Skips a string starting at its opening quote. Checks escapes are well formed but
// (like serde_json for strings it skips) not that \u surrogates pair up.
function skipString(): bool {
  if (!eat(0x22)) return false; // "
  let p = at;
  while (p < end) {
    let b = load<u8>(p++);
    if (b == 0x22) {
      at = p;
      return true;
    }
    if (b < 0x20) return false; // control characters must be escaped
    if (b != 0x5c) continue; // backslash
    if (p >= end) return false;
    b = load<u8>(p++);
    if (b == 0x75) { // u
      if (end - p < 4) return false;
      for (let i = 0; i < 4; i++) if (hexDigit(load<u8>(p++)) < 0) return false;
    } else if (b != 0x22 && b != 0x5c && b != 0x2f && b != 0x62 && b != 0x66 &&
               b != 0x6e && b != 0x72 && b != 0x74) { // " \ / b f n r t
      return false;
    }
  }
  return false; // no closing quote
}

function digits(): bool {
  const start = at;
  while (at < end && load<u8>(at) >= 0x30 && load<u8>(at) <= 0x39) at++;
  return at > start;
}

// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
function skipNumber(): bool {
  eat(0x2d); // -
  if (eat(0x30)) {
    // a lone 0: no leading zeros in JSON
  } else if (at < end && load<u8>(at) >= 0x31 && load<u8>(at) <= 0x39) {
    digits();
  } else {
    return false;
  }
  if (eat(0x2e) && !digits()) return false; // .
  if (eat(0x65) || eat(0x45)) { // e E
    if (!eat(0x2b)) eat(0x2d); // + -
    if (!digits()) return false;
  }
  return true;
}

function skipWord(word: string): bool {
  for (let i = 0; i < word.length; i++) if (!eat(<u8>word.charCodeAt(i))) return false;
  return true;
}

// Skips an object key and its colon, with the whitespace around them.
function skipKey(): bool {
  ws();
  if (!skipString()) return false;
  ws();
  return eat(0x3a); // :
}

// Skips one value, with the whitespace before it.
function skipValue(): bool {
  let depth: u32 = 0;
  while (true) {
    // Here a value starts.
    ws();
    if (at >= end) return false;
    const b = load<u8>(at);
    if (b == 0x7b || b == 0x5b) { // { [
      const close: u8 = b == 0x7b ? 0x7d : 0x5d;
      at++;
      ws();
      if (!eat(close)) {
        // Not empty: remember the container and read its first value. Every further
        // level needs at least one more byte of text, so a stack of the current depth
        // plus the rest of the text never needs to grow again in this call.
        if (depth == stackCap) {
          const cap = depth + <u32>(end - at) + 1;
          const grown = heap.alloc(cap);
          memory.copy(grown, stack, depth);
          stack = grown;
          stackCap = cap;
        }
        store<u8>(stack + depth++, close);
        if (close == 0x7d && !skipKey()) return false;
        continue;
      }
    } else if (b == 0x22) {
      if (!skipString()) return false;
    } else if (b == 0x74) {
      if (!skipWord("true")) return false;
    } else if (b == 0x66) {
      if (!skipWord("false")) return false;
    } else if (b == 0x6e) {
      if (!skipWord("null")) return false;
    } else if (!skipNumber()) {
      return false;
    }
    // Here a value ended: close containers until one has a next value.
    while (true) {
      if (depth == 0) return true;
      ws();
      const close = load<u8>(stack + depth - 1);
      if (eat(close)) {
        depth--;
        continue;
      }
      if (!eat(0x2c)) return false; // ,
      if (close == 0x7d && !skipKey()) return false;
      break;
    }
  }
  return false; // not reached
}

// Decodes the character at `p` in a validated string token into out[0..4] and returns
// the number of bytes written, or 0 for an unpaired \u surrogate (not text: serde_json
// refuses it too). Sets `decodedEnd` to the byte after the character.
let decodedEnd: usize = 0;

function decodeChar(p: usize, out: usize): u32 {
  if (load<u8>(p) != 0x5c) {
    store<u8>(out, load<u8>(p));
    decodedEnd = p + 1;
    return 1;
  }
  const e = load<u8>(p + 1);
  decodedEnd = p + 2;
  let c: u32 = e;
  if (e == 0x62) c = 0x08; // \b
  else if (e == 0x66) c = 0x0c; // \f
  else if (e == 0x6e) c = 0x0a; // \n
  else if (e == 0x72) c = 0x0d; // \r
  else if (e == 0x74) c = 0x09; // \t
  if (e != 0x75) { // \" \\ \/ and the above
    store<u8>(out, <u8>c);
    return 1;
  }
  let cp: u32 = 0;
  for (let i = 2; i < 6; i++) cp = (cp << 4) | <u32>hexDigit(load<u8>(p + i));
  decodedEnd = p + 6;
  if (cp >= 0xdc00 && cp <= 0xdfff) return 0; // a low surrogate first
  if (cp >= 0xd800 && cp <= 0xdbff) {
    // A high surrogate must be followed by \u and a low surrogate. The token was
    // validated, so p[6] and p[7] exist (at worst the closing quote), and after \u
    // come four hex digits.
    if (load<u8>(p + 6) != 0x5c || load<u8>(p + 7) != 0x75) return 0;
    let lo: u32 = 0;
    for (let i = 8; i < 12; i++) lo = (lo << 4) | <u32>hexDigit(load<u8>(p + i));
    if (lo < 0xdc00 || lo > 0xdfff) return 0;
    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    decodedEnd = p + 12;
  }
  if (cp < 0x80) {
    store<u8>(out, <u8>cp);
    return 1;
  }
  if (cp < 0x800) {
    store<u8>(out, <u8>(0xc0 | (cp >> 6)));
    store<u8>(out + 1, <u8>(0x80 | (cp & 0x3f)));
    return 2;
  }
  if (cp < 0x10000) {
    store<u8>(out, <u8>(0xe0 | (cp >> 12)));
    store<u8>(out + 1, <u8>(0x80 | ((cp >> 6) & 0x3f)));
    store<u8>(out + 2, <u8>(0x80 | (cp & 0x3f)));
    return 3;
  }
  store<u8>(out, <u8>(0xf0 | (cp >> 18)));
  store<u8>(out + 1, <u8>(0x80 | ((cp >> 12) & 0x3f)));
  store<u8>(out + 2, <u8>(0x80 | ((cp >> 6) & 0x3f)));
  store<u8>(out + 3, <u8>(0x80 | (cp & 0x3f)));
  return 4;
}

// Scratch space for one decoded character.
const charBuf = memory.data(4);

// Whether the validated string token at [p, q) (quotes included) says `key`, comparing
// decoded characters so that an escaped key ("te\u006dp") matches too. Sets `keyBad`
// for an unpaired surrogate, which makes the whole object invalid.
let keyBad = false;

function keyIs(p: usize, q: usize, key: Bytes): bool {
  p++; // opening quote
  q--; // closing quote
  let n: u32 = 0;
  let same = true;
  while (p < q) {
    const k = decodeChar(p, charBuf);
    if (k == 0) {
      keyBad = true;
      return false;
    }
    p = decodedEnd;
    for (let i: u32 = 0; i < k; i++, n++) {
      if (n >= key.len || key.at(n) != load<u8>(charBuf + i)) same = false;
    }
  }
  return same && n == key.len;
}

/**
 * Finds the top-level members `keys` of the JSON object in `text` in one pass,
 * validating all of `text` on the way. Returns, for each key, the member's raw text
 * (no surrounding whitespace: `"a\"b"` with its quotes and escapes, `21.50`, `{...}`,
 * `null`) or null when there is none; returns null instead of the array when `text` is
 * not a valid object or one of the keys appears twice.
 */
export function jsonMembers(
  text: Bytes,
  keys: StaticArray<string>,
): StaticArray<Bytes | null> | null {
  const want = new StaticArray<Bytes>(keys.length);
  for (let i = 0; i < keys.length; i++) want[i] = Bytes.of(keys[i]);
  const values = new StaticArray<Bytes | null>(keys.length);
  at = text.ptr;
  end = text.ptr + text.len;
  ws();
  if (!eat(0x7b)) return null; // {
  ws();
  if (!eat(0x7d)) { // }
    while (true) {
      const k = at;
      if (!skipString()) return null;
      const kEnd = at;
      ws();
      if (!eat(0x3a)) return null; // :
      ws();
      const v = at;
      if (!skipValue()) return null;
      for (let i = 0; i < keys.length; i++) {
        keyBad = false;
        if (keyIs(k, kEnd, want[i])) {
          if (values[i] != null) return null; // twice: which one is meant?
          values[i] = new Bytes(v, <u32>(at - v));
        }
        if (keyBad) return null;
      }
      ws();
      if (eat(0x7d)) break; // }
      if (!eat(0x2c)) return null; // ,
      ws();
    }
  }
  ws();
  return at == end ? values : null; // nothing may follow the object
}

/** Finds one top-level member of the JSON object in `text`, as `jsonMembers` does. */
export function jsonMember(text: Bytes, key: string): Member {
  const values = jsonMembers(text, [key]);
  if (values == null) return new Member(Found.Invalid, EMPTY);
  const raw = values[0];
  return raw == null ? new Member(Found.No, EMPTY) : new Member(Found.Yes, raw);
}

/** Whether raw member text is a string. */
export function jsonIsString(raw: Bytes): bool {
  return raw.len > 0 && raw.at(0) == 0x22;
}

/** Whether raw member text is a number (it was validated, so its first byte tells). */
export function jsonIsNumber(raw: Bytes): bool {
  if (raw.len == 0) return false;
  const b = raw.at(0);
  return b == 0x2d || (b >= 0x30 && b <= 0x39);
}

/**
 * The content of raw string text from `jsonMembers`, unescaped into UTF-8; null when
 * `raw` is not a string or holds an unpaired \u surrogate. Shares the input's memory
 * when there is nothing to unescape.
 */
export function jsonString(raw: Bytes): Bytes | null {
  if (!jsonIsString(raw)) return null;
  let p = raw.ptr + 1;
  const q = raw.ptr + raw.len - 1;
  let escaped = false;
  for (let s = p; s < q; s++) if (load<u8>(s) == 0x5c) escaped = true;
  if (!escaped) return new Bytes(p, <u32>(q - p));
  // Unescaping never lengthens: \uXXXX (6 bytes) gives at most 3, a pair (12) 4.
  const out = heap.alloc(raw.len);
  let n: usize = 0;
  while (p < q) {
    // Copy the run up to the next escape in one go, then decode the escape.
    const run = p;
    while (p < q && load<u8>(p) != 0x5c) p++;
    memory.copy(out + n, run, p - run);
    n += p - run;
    if (p == q) break;
    const k = decodeChar(p, out + n);
    if (k == 0) return null;
    p = decodedEnd;
    n += k;
  }
  return new Bytes(out, <u32>n);
}

// ---------------------------------------------------------------------------------------
// The event (docs/events.md)
// ---------------------------------------------------------------------------------------

const EVENT_FIELDS: StaticArray<string> = ["clientid", "topic", "payload", "payload_encoding"];

/**
 * One event: the JSON object the host wrote into our memory, with the raw text of the
 * fields every rule reads found in one pass before the handler runs.
 */
export class Event {
  constructor(
    public json: Bytes,
    private rawClientid: Bytes | null,
    private rawTopic: Bytes | null,
    private rawPayload: Bytes | null,
    private rawPayloadEncoding: Bytes | null,
  ) {}

  /** Reads the event's common fields; null when it is not a valid JSON object. */
  static parse(json: Bytes): Event | null {
    const raw = jsonMembers(json, EVENT_FIELDS);
    if (raw == null) return null;
    return new Event(json, raw[0], raw[1], raw[2], raw[3]);
  }

  /**
   * The top-level string field `name`, unescaped; null when it is absent, null, not a
   * string or holds an unpaired \u surrogate. Reads the whole event again: for the
   * fields below, use their own methods.
   */
  str(name: string): Bytes | null {
    const m = jsonMember(this.json, name);
    return m.found == Found.Yes ? jsonString(m.raw) : null;
  }

  /** The publisher's client id when the source knows it; empty counts as unknown. */
  clientid(): Bytes | null {
    const raw = this.rawClientid;
    if (raw == null) return null;
    const id = jsonString(raw);
    return id != null && id.len > 0 ? id : null;
  }

  /** The MQTT topic (empty if the event has none, which the host never sends). */
  topic(): Bytes {
    const raw = this.rawTopic;
    if (raw == null) return EMPTY;
    const t = jsonString(raw);
    return t != null ? t : EMPTY;
  }

  /** Whether the payload is binary, given in base64 (`payload_encoding` "base64"). */
  payloadIsBase64(): bool {
    const raw = this.rawPayloadEncoding;
    if (raw == null) return false;
    const enc = jsonString(raw);
    return enc != null && enc.is("base64");
  }

  /** The payload as text; null when it is binary (see payloadIsBase64) or missing. */
  payloadText(): Bytes | null {
    const raw = this.rawPayload;
    if (raw == null || this.payloadIsBase64()) return null;
    return jsonString(raw);
  }
}

// ---------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------

/** Level `i` (from 0) of `topic`: "a/b/c" level 1 is "b"; null past the last level. */
export function topicLevel(topic: Bytes, i: u32): Bytes | null {
  let start: u32 = 0;
  for (let p: u32 = 0; p <= topic.len; p++) {
    if (p == topic.len || topic.at(p) == 0x2f) {
      if (i == 0) return new Bytes(topic.ptr + start, p - start);
      i--;
      start = p + 1;
    }
  }
  return null;
}

/** The text after the last '/' (all of it if there is none); empty for "a/". */
export function topicLastLevel(topic: Bytes): Bytes {
  let start = topic.len;
  while (start > 0 && topic.at(start - 1) != 0x2f) start--;
  return new Bytes(topic.ptr + start, topic.len - start);
}

// ---------------------------------------------------------------------------------------
// The result buffer (docs/abi.md, "Result buffer")
//
//   commands: u8 0, u32 count, then per command u32 argc and per argument u32 len +
//             bytes (all u32 little-endian)
//   error:    u8 1, UTF-8 message
//
// Commands are written straight into one growing buffer; argc and count are patched in
// place as arguments arrive.
// ---------------------------------------------------------------------------------------

/** What a handler returns: commands to run, or an error. */
export class Output {
  private buf: usize = 0;
  private len: u32 = 0;
  private cap: u32 = 0;
  private argcAt: u32 = 0; // offset of the current command's argc; 0 before the first
  /** The error message, once `error` was called. */
  failed: string | null = null;

  private reserve(more: u32): usize {
    if (this.cap - this.len < more) {
      let cap = this.cap > 0 ? this.cap : 256;
      while (cap - this.len < more) cap <<= 1;
      // heap.realloc grows in place when this is the newest allocation, else copies.
      this.buf = this.buf == 0 ? heap.alloc(cap) : heap.realloc(this.buf, cap);
      this.cap = cap;
    }
    if (this.len == 0) {
      store<u8>(this.buf, 0); // tag: commands follow
      store<u32>(this.buf + 1, 0); // count
      this.len = 5;
    }
    return this.buf + this.len;
  }

  /** Starts a new command named `name` ("HSET"); add its arguments with arg/argBytes. */
  command(name: string): Output {
    const p = this.reserve(4);
    store<u32>(this.buf + 1, load<u32>(this.buf + 1) + 1);
    this.argcAt = <u32>(p - this.buf);
    store<u32>(p, 0);
    this.len += 4;
    return this.arg(name);
  }

  /** Appends an argument to the current command: the bytes as they are. */
  argBytes(b: Bytes): Output {
    assert(this.argcAt != 0, "argument before any command");
    const p = this.reserve(4 + b.len);
    store<u32>(p, b.len);
    memory.copy(p + 4, b.ptr, b.len);
    this.len += 4 + b.len;
    store<u32>(this.buf + this.argcAt, load<u32>(this.buf + this.argcAt) + 1);
    return this;
  }

  /** Appends an argument to the current command: `s` in UTF-8. */
  arg(s: string): Output {
    return this.argBytes(Bytes.of(s));
  }

  /**
   * Reports that the rule cannot handle this event: the host logs `message` and writes
   * nothing for this event, even commands added before.
   */
  error(message: string): void {
    this.failed = message;
  }

  /** The packed result buffer. */
  finish(): u64 {
    const failed = this.failed;
    if (failed != null) {
      const msg = Bytes.of(failed);
      const buf = heap.alloc(1 + msg.len);
      store<u8>(buf, 1); // tag: error
      memory.copy(buf + 1, msg.ptr, msg.len);
      return pack(buf, 1 + msg.len);
    }
    this.reserve(0);
    return pack(this.buf, this.len);
  }
}

// ---------------------------------------------------------------------------------------
// ABI v2: the result buffer of actions (docs/abi.md, "Actions")
//
//   u8 0, u32 count, then per action u8 kind and its fields:
//   kind 0 redis       u32 argc, argc times (u32 len, bytes)
//   kind 1 publish     str topic, str payload, u8 qos, u8 retain, u32 n, n (str, str)
//   kind 2 subscribe   str clientid, str filter, u8 qos
//   kind 3 unsubscribe str clientid, str filter
//   kind 4 deliver     str clientid, str topic, str payload, u8 qos, u8 retain
//
// (str: u32 length, bytes.) A class of its own, so that v1 rules compile to exactly
// what they did before v2.
// ---------------------------------------------------------------------------------------

/** What a v2 handler returns: actions (Redis commands and MQTT actions), or an error. */
export class Actions {
  private buf: usize = 0;
  private len: u32 = 0;
  private cap: u32 = 0;
  private argcAt: u32 = 0; // offset of the current command's argc; 0 if none
  private propsAt: u32 = 0; // offset of the last publish's property count; 0 if none
  /** The error message, once `error` was called. */
  failed: string | null = null;

  private reserve(more: u32): usize {
    if (this.cap - this.len < more) {
      let cap = this.cap > 0 ? this.cap : 256;
      while (cap - this.len < more) cap <<= 1;
      this.buf = this.buf == 0 ? heap.alloc(cap) : heap.realloc(this.buf, cap);
      this.cap = cap;
    }
    if (this.len == 0) {
      store<u8>(this.buf, 0); // tag: actions follow
      store<u32>(this.buf + 1, 0); // count
      this.len = 5;
    }
    return this.buf + this.len;
  }

  private action(kind: u8): void {
    const p = this.reserve(1);
    store<u32>(this.buf + 1, load<u32>(this.buf + 1) + 1);
    store<u8>(p, kind);
    this.len += 1;
    this.argcAt = 0;
    this.propsAt = 0;
  }

  private str(b: Bytes): void {
    const p = this.reserve(4 + b.len);
    store<u32>(p, b.len);
    memory.copy(p + 4, b.ptr, b.len);
    this.len += 4 + b.len;
  }

  private byte(b: u8): void {
    store<u8>(this.reserve(1), b);
    this.len += 1;
  }

  /** Starts a Redis command named `name` ("SET"); add its arguments with arg/argBytes. */
  command(name: string): Actions {
    this.action(0);
    const p = this.reserve(4);
    this.argcAt = <u32>(p - this.buf);
    store<u32>(p, 0);
    this.len += 4;
    return this.arg(name);
  }

  /** Appends an argument to the current command: the bytes as they are. */
  argBytes(b: Bytes): Actions {
    assert(this.argcAt != 0, "argument after no command");
    this.str(b);
    store<u32>(this.buf + this.argcAt, load<u32>(this.buf + this.argcAt) + 1);
    return this;
  }

  /** Appends an argument to the current command: `s` in UTF-8. */
  arg(s: string): Actions {
    return this.argBytes(Bytes.of(s));
  }

  /** Publishes `payload` on `topic` (QoS 0 or 1); add user properties with `property`. */
  publish(topic: Bytes, payload: Bytes, qos: u8 = 0, retain: bool = false): Actions {
    this.action(1);
    this.str(topic);
    this.str(payload);
    this.byte(qos);
    this.byte(retain ? 1 : 0);
    this.propsAt = this.len;
    store<u32>(this.reserve(4), 0);
    this.len += 4;
    return this;
  }

  /** Adds an MQTT 5 user property to the publish just added. */
  property(key: Bytes, value: Bytes): Actions {
    assert(this.propsAt != 0, "property after no publish");
    this.str(key);
    this.str(value);
    store<u32>(this.buf + this.propsAt, load<u32>(this.buf + this.propsAt) + 1);
    return this;
  }

  /** Subscribes the session of `client` to `filter` (embedded broker). */
  subscribe(client: Bytes, filter: Bytes, qos: u8 = 0): Actions {
    this.action(2);
    this.str(client);
    this.str(filter);
    this.byte(qos);
    return this;
  }

  /** Unsubscribes the session of `client` from `filter` (embedded broker). */
  unsubscribe(client: Bytes, filter: Bytes): Actions {
    this.action(3);
    this.str(client);
    this.str(filter);
    return this;
  }

  /** Delivers `payload` on `topic` to the session of `client` only (embedded broker). */
  deliver(client: Bytes, topic: Bytes, payload: Bytes, qos: u8 = 0, retain: bool = false): Actions {
    this.action(4);
    this.str(client);
    this.str(topic);
    this.str(payload);
    this.byte(qos);
    this.byte(retain ? 1 : 0);
    return this;
  }

  /** Reports that the rule cannot handle this event: nothing of it is taken. */
  error(message: string): void {
    this.failed = message;
  }

  /** The packed result buffer. */
  finish(): u64 {
    const failed = this.failed;
    if (failed != null) {
      const msg = Bytes.of(failed);
      const buf = heap.alloc(1 + msg.len);
      store<u8>(buf, 1); // tag: error
      memory.copy(buf + 1, msg.ptr, msg.len);
      return pack(buf, 1 + msg.len);
    }
    this.reserve(0);
    return pack(this.buf, this.len);
  }
}

// ---------------------------------------------------------------------------------------
// ABI v2: Redis reads (docs/abi.md, "Reading Redis")
// ---------------------------------------------------------------------------------------

@external("wasmrule", "redis_read")
declare function redisRead(ptr: usize, len: u32): i32;
@external("wasmrule", "redis_reply")
declare function redisReply(dst: usize, cap: u32): i32;

/** What a read got: `Ok`, or the ABI's negative codes, or the SDK's `BadReply`. */
export enum ReadCode {
  Ok = 0,
  NotAllowed = -1,
  BadRequest = -2,
  OverBudget = -3,
  Unavailable = -4,
  RedisError = -5,
  NoReply = -6,
  ShortBuffer = -7,
  BadReply = -9,
}

/** A reply's type. */
export enum ValueType {
  Nil = 0,
  Int = 1,
  Bulk = 2,
  Array = 3,
}

/** One reply: nil, an integer, a bulk or status string, or an array of values. */
export class Value {
  type: ValueType = ValueType.Nil;
  int: i64 = 0;
  bulk: Bytes = EMPTY;
  items: Array<Value> = [];

  isNil(): bool {
    return this.type == ValueType.Nil;
  }
}

/** A read's outcome: `code` (`ReadCode.Ok` or why not) and, when Ok, the `value`. */
export class ReadResult {
  constructor(public code: i32, public value: Value) {}

  ok(): bool {
    return this.code == ReadCode.Ok;
  }
}

let replyAt: usize = 0;
let replyEnd: usize = 0;

function decodeValue(depth: u32): Value | null {
  if (replyAt >= replyEnd || depth > 32) return null;
  const v = new Value();
  const t = load<u8>(replyAt++);
  if (t == ValueType.Nil) return v;
  if (t == ValueType.Int) {
    if (replyEnd - replyAt < 8) return null;
    v.type = ValueType.Int;
    v.int = load<i64>(replyAt);
    replyAt += 8;
    return v;
  }
  if (replyEnd - replyAt < 4) return null;
  const n = load<u32>(replyAt);
  replyAt += 4;
  if (t == ValueType.Bulk) {
    if (<usize>n > replyEnd - replyAt) return null;
    v.type = ValueType.Bulk;
    v.bulk = new Bytes(replyAt, n);
    replyAt += n;
    return v;
  }
  if (t != ValueType.Array || <usize>n > replyEnd - replyAt) return null;
  v.type = ValueType.Array;
  for (let i: u32 = 0; i < n; i++) {
    const item = decodeValue(depth + 1);
    if (item == null) return null;
    v.items.push(item);
  }
  return v;
}

/** Runs one read-only command (`args[0]` is its name) and decodes its reply. */
export function read(args: StaticArray<Bytes>): ReadResult {
  let size: u32 = 4;
  for (let i = 0; i < args.length; i++) size += 4 + args[i].len;
  const req = heap.alloc(size);
  store<u32>(req, args.length);
  let p = req + 4;
  for (let i = 0; i < args.length; i++) {
    store<u32>(p, args[i].len);
    memory.copy(p + 4, args[i].ptr, args[i].len);
    p += 4 + args[i].len;
  }
  const n = redisRead(req, size);
  if (n < 0) return new ReadResult(n, new Value());
  const reply = heap.alloc(<usize>n);
  const got = redisReply(reply, <u32>n);
  if (got < 0) return new ReadResult(got, new Value());
  replyAt = reply;
  replyEnd = reply + <usize>got;
  const v = decodeValue(0);
  if (v == null || replyAt != replyEnd) return new ReadResult(ReadCode.BadReply, new Value());
  return new ReadResult(ReadCode.Ok, v);
}

/** GET key. */
export function get(key: Bytes): ReadResult {
  return read([Bytes.of("GET"), key]);
}

/** HGET key field. */
export function hget(key: Bytes, field: Bytes): ReadResult {
  return read([Bytes.of("HGET"), key, field]);
}

// ---------------------------------------------------------------------------------------
// The exports
// ---------------------------------------------------------------------------------------

/** Packs a pointer and a length as the ABI returns them: (ptr << 32) | len. */
export function pack(ptr: usize, len: u32): u64 {
  return (<u64>ptr << 32) | <u64>len;
}

function jsonQuote(s: string): string {
  return '"' + s.replaceAll("\\", "\\\\").replaceAll('"', '\\"') + '"';
}

/**
 * The packed manifest for `wasmrule_manifest`: `name` is 1 to 128 of A-Z a-z 0-9 - _ .,
 * `version` the rule's own version, `filters` MQTT topic filters.
 */
export function manifest(name: string, version: string, filters: StaticArray<string>): u64 {
  let list = "";
  for (let i = 0; i < filters.length; i++) list += (i > 0 ? "," : "") + jsonQuote(filters[i]);
  const json = Bytes.of(
    '{"name":' + jsonQuote(name) + ',"version":' + jsonQuote(version) +
    ',"filters":[' + list + '],"sdk":' + jsonQuote(SDK) + "}",
  );
  return pack(json.ptr, json.len);
}

/** What `wasmrule_on_event` does: parse the event, call `handler`, encode the result. */
export function run(ptr: usize, len: u32, handler: (event: Event, out: Output) => void): u64 {
  const out = new Output();
  const event = Event.parse(new Bytes(ptr, len));
  if (event == null) out.error("event is not a valid JSON object");
  else handler(event, out);
  return out.finish();
}

/** `run` for a rule of ABI v2: the handler may read Redis and add MQTT actions. */
export function runV2(ptr: usize, len: u32, handler: (event: Event, out: Actions) => void): u64 {
  const out = new Actions();
  const event = Event.parse(new Bytes(ptr, len));
  if (event == null) out.error("event is not a valid JSON object");
  else handler(event, out);
  return out.finish();
}

/** The ABI version marker; the host checks its name and never calls it. */
export function wasmrule_abi_version_1(): void {}

/** The ABI v2 marker, for rules run with `runV2`. */
export function wasmrule_abi_version_2(): void {}

/** Room for the event: `len` bytes from the stub runtime's bump allocator. */
export function wasmrule_alloc(len: u32): usize {
  return heap.alloc(len);
}
