;; store-last-message, in hand-written WebAssembly text: the EMQX demo's first rule
;; (same behaviour as the Rust rule in rules-wasm/store-last-message; fixtures in
;; guest-sdk/conformance).
;;
;;   HSET emqx_messages <clientid, or the last topic level> <payload.temp>
;;
;; A numeric temp is stored as the device wrote it (21.50 stays 21.50), a string temp as
;; its unescaped text; anything else is an error.
;;
;; The payload is untrusted, and every language's rule must accept and reject the same
;; payloads, so this file carries a complete (if small) JSON validator: it is what the
;; semantics need, not more. It finds top-level members of an object in one pass,
;; checking the whole text against RFC 8259 like serde_json does (no control characters
;; in strings, no text after the value, any depth of nesting), and unescapes strings
;; including \u surrogate pairs. Assemble with `wat2wasm store-last-message.wat`.
;;
;; Memory map (all of it in the first page):
;;      0  manifest JSON (120 bytes)
;;    256  key names, one per 16-byte slot
;;    512  key table for the event: 4 x (ptr, len)
;;    544  key table for the payload: 1 x (ptr, len)
;;    576  members found in the event: 4 x (ptr, len), len 0 when missing
;;    608  member found in the payload: 1 x (ptr, len)
;;    624  4 bytes of scratch for one decoded character
;;    640  the start of the result buffer, the same for every event (34 bytes)
;;    768  error result buffers, one per 96-byte slot: tag 1 then the message
;;   2048  heap: the event, unescaped strings, the bracket stack, the result
(module
  (memory (export "memory") 1)

  ;; ABI version marker. The runtime checks its name and never calls it.
  (func (export "wasmrule_abi_version_1"))

  (data (i32.const 0)
    "{\"name\":\"store-last-message\",\"version\":\"0.1.0\","
    "\"filters\":[\"store-last-message/+\"],\"sdk\":\"hand-written WebAssembly text\"}")

  (data (i32.const 256) "clientid")          ;; 8
  (data (i32.const 272) "topic")             ;; 5
  (data (i32.const 288) "payload")           ;; 7
  (data (i32.const 304) "payload_encoding")  ;; 16
  (data (i32.const 320) "temp")              ;; 4
  (data (i32.const 336) "base64")            ;; 6
  (data (i32.const 352) "true")              ;; 4
  (data (i32.const 368) "false")             ;; 5
  (data (i32.const 384) "null")              ;; 4

  ;; Key tables: (address, length) pairs as little-endian i32s.
  (data (i32.const 512)
    "\00\01\00\00" "\08\00\00\00"   ;; 256, 8: clientid   -> found at 576
    "\10\01\00\00" "\05\00\00\00"   ;; 272, 5: topic      -> found at 584
    "\20\01\00\00" "\07\00\00\00"   ;; 288, 7: payload    -> found at 592
    "\30\01\00\00" "\10\00\00\00")  ;; 304, 16: payload_encoding -> found at 600
  (data (i32.const 544)
    "\40\01\00\00" "\04\00\00\00")  ;; 320, 4: temp       -> found at 608

  ;; The result buffer up to the client id: one command of four arguments, the first
  ;; two fixed. The client id and temp follow, each as u32 length + bytes.
  (data (i32.const 640)
    "\00"                            ;; tag 0: commands follow
    "\01\00\00\00"                   ;; 1 command
    "\04\00\00\00"                   ;; with 4 arguments:
    "\04\00\00\00" "HSET"            ;;   4 bytes
    "\0d\00\00\00" "emqx_messages")  ;;   13 bytes

  ;; Error result buffers: tag 1, then the message. Lengths include the tag.
  (data (i32.const 768) "\01event is not a valid JSON object")                                 ;; 33
  (data (i32.const 864) "\01no clientid in the event and no last topic level to use instead")  ;; 64
  (data (i32.const 960) "\01payload is binary (base64), not JSON text")                        ;; 42
  (data (i32.const 1056) "\01event has no payload")                                            ;; 21
  (data (i32.const 1152) "\01payload has no top-level temp")                                   ;; 30
  (data (i32.const 1248) "\01payload is not a valid JSON object")                              ;; 35
  (data (i32.const 1344) "\01payload.temp is not a number or a string")                        ;; 41
  (data (i32.const 1440) "\01out of memory in the rule")                                       ;; 26

  ;; Next free heap address. Every event gets a fresh instance, so this starts at 2048
  ;; each time and nothing is ever freed.
  (global $heap (mut i32) (i32.const 2048))

  ;; The JSON cursor: next byte to read, and one past the last byte of the text.
  (global $pos (mut i32) (i32.const 0))
  (global $end (mut i32) (i32.const 0))

  ;; The closing brackets of the containers open while skipping a value, innermost
  ;; last, and how many fit.
  (global $stack (mut i32) (i32.const 0))
  (global $stack_cap (mut i32) (i32.const 0))

  ;; Second results: $decode_char sets $next (the byte after the escape); $string sets
  ;; $str_ptr and $str_len (the unescaped text).
  (global $next (mut i32) (i32.const 0))
  (global $str_ptr (mut i32) (i32.const 0))
  (global $str_len (mut i32) (i32.const 0))

  ;; (ptr << 32) | len, the ABI's packed location.
  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len))))

  (func (export "wasmrule_manifest") (result i64)
    (call $pack (i32.const 0) (i32.const 120)))

  ;; $len bytes aligned to 8, growing memory when needed; 0 when it cannot grow.
  (func $alloc (export "wasmrule_alloc") (param $len i32) (result i32)
    (local $start i32)
    (local $end i64)
    (local $have i64)
    (local.set $start
      (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    ;; 64-bit arithmetic: 4 GiB, a full memory, does not fit in an i32.
    (local.set $end
      (i64.add (i64.extend_i32_u (local.get $start)) (i64.extend_i32_u (local.get $len))))
    (local.set $have (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
    (if (i64.gt_u (local.get $end) (local.get $have))
      (then
        (if (i64.gt_u (local.get $end) (i64.const 0x100000000))
          (then (return (i32.const 0))))
        ;; pages = ceil((end - have) / 64 KiB)
        (if (i32.eq
              (memory.grow
                (i32.wrap_i64
                  (i64.shr_u
                    (i64.add (i64.sub (local.get $end) (local.get $have)) (i64.const 0xffff))
                    (i64.const 16))))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (i32.wrap_i64 (local.get $end)))
    (local.get $start))

  ;; ---------------------------------------------------------------------------------
  ;; JSON scanning. Each $skip_ function moves $pos past one piece of the text and
  ;; returns 1, or returns 0 when the text is not valid there.
  ;; ---------------------------------------------------------------------------------

  ;; Skips JSON whitespace: space, tab, line feed, carriage return.
  (func $ws
    (local $b i32)
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (global.get $pos) (global.get $end)))
        (local.set $b (i32.load8_u (global.get $pos)))
        (br_if $done
          (i32.eqz
            (i32.or
              (i32.or (i32.eq (local.get $b) (i32.const 0x20)) (i32.eq (local.get $b) (i32.const 0x09)))
              (i32.or (i32.eq (local.get $b) (i32.const 0x0a)) (i32.eq (local.get $b) (i32.const 0x0d))))))
        (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
        (br $more))))

  ;; Moves past byte $b if it is next; returns whether it was.
  (func $eat (param $b i32) (result i32)
    ;; Two ifs, not i32.and: the load must not run at the end of the text, which may be
    ;; the end of memory.
    (if (i32.lt_u (global.get $pos) (global.get $end))
      (then
        (if (i32.eq (i32.load8_u (global.get $pos)) (local.get $b))
          (then
            (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
            (return (i32.const 1))))))
    (i32.const 0))

  ;; The value of hex digit $b, or -1.
  (func $hex (param $b i32) (result i32)
    (if (i32.le_u (i32.sub (local.get $b) (i32.const 0x30)) (i32.const 9))   ;; 0-9
      (then (return (i32.sub (local.get $b) (i32.const 0x30)))))
    (local.set $b (i32.or (local.get $b) (i32.const 0x20)))                   ;; lower case
    (if (i32.le_u (i32.sub (local.get $b) (i32.const 0x61)) (i32.const 5))   ;; a-f
      (then (return (i32.sub (local.get $b) (i32.const 0x57)))))
    (i32.const -1))

  ;; The value of the four hex digits at $p, or a negative number if one is not a hex
  ;; digit (a -1 shifted and or-ed in keeps the sign bit set).
  (func $hex4 (param $p i32) (result i32)
    (i32.or
      (i32.or
        (i32.shl (call $hex (i32.load8_u (local.get $p))) (i32.const 12))
        (i32.shl (call $hex (i32.load8_u offset=1 (local.get $p))) (i32.const 8)))
      (i32.or
        (i32.shl (call $hex (i32.load8_u offset=2 (local.get $p))) (i32.const 4))
        (call $hex (i32.load8_u offset=3 (local.get $p))))))

  ;; Whether $b may follow a backslash on its own: " \ / b f n r t.
  (func $short_escape (param $b i32) (result i32)
    (i32.or
      (i32.or
        (i32.or (i32.eq (local.get $b) (i32.const 0x22)) (i32.eq (local.get $b) (i32.const 0x5c)))
        (i32.or (i32.eq (local.get $b) (i32.const 0x2f)) (i32.eq (local.get $b) (i32.const 0x62))))
      (i32.or
        (i32.or (i32.eq (local.get $b) (i32.const 0x66)) (i32.eq (local.get $b) (i32.const 0x6e)))
        (i32.or (i32.eq (local.get $b) (i32.const 0x72)) (i32.eq (local.get $b) (i32.const 0x74))))))

  ;; Skips a string starting at its opening quote. Checks that escapes are well formed
  ;; but (like serde_json for strings it skips) not that \u surrogates pair up.
  (func $skip_string (result i32)
    (local $p i32)
    (local $b i32)
    (if (i32.eqz (call $eat (i32.const 0x22))) (then (return (i32.const 0))))
    (local.set $p (global.get $pos))
    (block $fail
      (loop $char
        (br_if $fail (i32.ge_u (local.get $p) (global.get $end)))
        (local.set $b (i32.load8_u (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (if (i32.eq (local.get $b) (i32.const 0x22))                  ;; closing quote
          (then
            (global.set $pos (local.get $p))
            (return (i32.const 1))))
        (br_if $fail (i32.lt_u (local.get $b) (i32.const 0x20)))      ;; raw control character
        (br_if $char (i32.ne (local.get $b) (i32.const 0x5c)))        ;; not a backslash
        (br_if $fail (i32.ge_u (local.get $p) (global.get $end)))
        (local.set $b (i32.load8_u (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (if (i32.eq (local.get $b) (i32.const 0x75))                  ;; \uXXXX
          (then
            (br_if $fail (i32.lt_u (i32.sub (global.get $end) (local.get $p)) (i32.const 4)))
            (br_if $fail (i32.lt_s (call $hex4 (local.get $p)) (i32.const 0)))
            (local.set $p (i32.add (local.get $p) (i32.const 4)))
            (br $char)))
        (br_if $char (call $short_escape (local.get $b)))
        (br $fail)))
    (i32.const 0))

  ;; Skips one or more decimal digits.
  (func $digits (result i32)
    (local $start i32)
    (local.set $start (global.get $pos))
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (global.get $pos) (global.get $end)))
        (br_if $done
          (i32.gt_u (i32.sub (i32.load8_u (global.get $pos)) (i32.const 0x30)) (i32.const 9)))
        (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
        (br $more)))
    (i32.gt_u (global.get $pos) (local.get $start)))

  ;; Skips a number: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
  (func $skip_number (result i32)
    (drop (call $eat (i32.const 0x2d)))                             ;; -
    ;; A lone 0, or digits not starting with 0 (a 0 would have been eaten). After a 0
    ;; more digits are left for the caller, which refuses them: 012 is not JSON.
    (if (i32.eqz (call $eat (i32.const 0x30)))
      (then (if (i32.eqz (call $digits)) (then (return (i32.const 0))))))
    (if (call $eat (i32.const 0x2e))                                ;; .
      (then (if (i32.eqz (call $digits)) (then (return (i32.const 0))))))
    (if (if (result i32) (call $eat (i32.const 0x65))               ;; e, else E
          (then (i32.const 1))
          (else (call $eat (i32.const 0x45))))
      (then
        (if (i32.eqz (call $eat (i32.const 0x2b)))                  ;; +, else -
          (then (drop (call $eat (i32.const 0x2d)))))
        (if (i32.eqz (call $digits)) (then (return (i32.const 0))))))
    (i32.const 1))

  ;; Skips the $len bytes at $word (true, false, null).
  (func $skip_word (param $word i32) (param $len i32) (result i32)
    (local $i i32)
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eqz (call $eat (i32.load8_u (i32.add (local.get $word) (local.get $i)))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $more)))
    (i32.const 1))

  ;; Skips an object key and its colon, with the whitespace around them.
  (func $skip_key (result i32)
    (call $ws)
    (if (i32.eqz (call $skip_string)) (then (return (i32.const 0))))
    (call $ws)
    (call $eat (i32.const 0x3a)))                                   ;; :

  ;; Skips one value, with the whitespace before it. Iterative, with its own stack of
  ;; closing brackets, so that deep nesting cannot exhaust the wasm call stack.
  (func $skip_value (result i32)
    (local $depth i32)
    (local $b i32)
    (local $close i32)
    (local $cap i32)
    (local $grown i32)
    (loop $value
      ;; Here a value starts.
      (call $ws)
      (if (i32.ge_u (global.get $pos) (global.get $end)) (then (return (i32.const 0))))
      (local.set $b (i32.load8_u (global.get $pos)))
      (block $ended
        (if (i32.or (i32.eq (local.get $b) (i32.const 0x7b)) (i32.eq (local.get $b) (i32.const 0x5b)))
          (then
            ;; { and [ : their closing brackets are 2 further in ASCII (} and ]).
            (local.set $close (i32.add (local.get $b) (i32.const 2)))
            (global.set $pos (i32.add (global.get $pos) (i32.const 1)))
            (call $ws)
            (br_if $ended (call $eat (local.get $close)))           ;; empty
            ;; Push the closing bracket. Every further level needs at least one more
            ;; byte of text, so a stack of the current depth plus the rest of the text
            ;; never needs to grow again.
            (if (i32.eq (local.get $depth) (global.get $stack_cap))
              (then
                (local.set $cap
                  (i32.add
                    (i32.add (local.get $depth) (i32.sub (global.get $end) (global.get $pos)))
                    (i32.const 1)))
                (local.set $grown (call $alloc (local.get $cap)))
                (if (i32.eqz (local.get $grown)) (then (return (i32.const 0))))
                (memory.copy (local.get $grown) (global.get $stack) (local.get $depth))
                (global.set $stack (local.get $grown))
                (global.set $stack_cap (local.get $cap))))
            (i32.store8 (i32.add (global.get $stack) (local.get $depth)) (local.get $close))
            (local.set $depth (i32.add (local.get $depth) (i32.const 1)))
            ;; In an object, a key comes before the value.
            (if (i32.eq (local.get $close) (i32.const 0x7d))
              (then (if (i32.eqz (call $skip_key)) (then (return (i32.const 0))))))
            (br $value)))
        (if (i32.eq (local.get $b) (i32.const 0x22))                ;; "
          (then
            (br_if $ended (call $skip_string))
            (return (i32.const 0))))
        (if (i32.eq (local.get $b) (i32.const 0x74))                ;; t
          (then
            (br_if $ended (call $skip_word (i32.const 352) (i32.const 4)))
            (return (i32.const 0))))
        (if (i32.eq (local.get $b) (i32.const 0x66))                ;; f
          (then
            (br_if $ended (call $skip_word (i32.const 368) (i32.const 5)))
            (return (i32.const 0))))
        (if (i32.eq (local.get $b) (i32.const 0x6e))                ;; n
          (then
            (br_if $ended (call $skip_word (i32.const 384) (i32.const 4)))
            (return (i32.const 0))))
        (br_if $ended (call $skip_number))
        (return (i32.const 0)))
      ;; Here a value ended: close containers until one has a next value.
      (loop $after
        (if (i32.eqz (local.get $depth)) (then (return (i32.const 1))))
        (call $ws)
        (local.set $close
          (i32.load8_u (i32.sub (i32.add (global.get $stack) (local.get $depth)) (i32.const 1))))
        (if (call $eat (local.get $close))
          (then
            (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))
            (br $after)))
        (if (i32.eqz (call $eat (i32.const 0x2c))) (then (return (i32.const 0))))   ;; ,
        (if (i32.eq (local.get $close) (i32.const 0x7d))
          (then (if (i32.eqz (call $skip_key)) (then (return (i32.const 0)))))))
      (br $value))
    (unreachable))

  ;; ---------------------------------------------------------------------------------
  ;; Strings
  ;; ---------------------------------------------------------------------------------

  ;; Writes code point $cp as UTF-8 at $out; returns the number of bytes.
  (func $utf8 (param $cp i32) (param $out i32) (result i32)
    (if (i32.lt_u (local.get $cp) (i32.const 0x80))
      (then
        (i32.store8 (local.get $out) (local.get $cp))
        (return (i32.const 1))))
    (if (i32.lt_u (local.get $cp) (i32.const 0x800))
      (then
        (i32.store8 (local.get $out)
          (i32.or (i32.const 0xc0) (i32.shr_u (local.get $cp) (i32.const 6))))
        (i32.store8 offset=1 (local.get $out)
          (i32.or (i32.const 0x80) (i32.and (local.get $cp) (i32.const 0x3f))))
        (return (i32.const 2))))
    (if (i32.lt_u (local.get $cp) (i32.const 0x10000))
      (then
        (i32.store8 (local.get $out)
          (i32.or (i32.const 0xe0) (i32.shr_u (local.get $cp) (i32.const 12))))
        (i32.store8 offset=1 (local.get $out)
          (i32.or (i32.const 0x80) (i32.and (i32.shr_u (local.get $cp) (i32.const 6)) (i32.const 0x3f))))
        (i32.store8 offset=2 (local.get $out)
          (i32.or (i32.const 0x80) (i32.and (local.get $cp) (i32.const 0x3f))))
        (return (i32.const 3))))
    (i32.store8 (local.get $out)
      (i32.or (i32.const 0xf0) (i32.shr_u (local.get $cp) (i32.const 18))))
    (i32.store8 offset=1 (local.get $out)
      (i32.or (i32.const 0x80) (i32.and (i32.shr_u (local.get $cp) (i32.const 12)) (i32.const 0x3f))))
    (i32.store8 offset=2 (local.get $out)
      (i32.or (i32.const 0x80) (i32.and (i32.shr_u (local.get $cp) (i32.const 6)) (i32.const 0x3f))))
    (i32.store8 offset=3 (local.get $out)
      (i32.or (i32.const 0x80) (i32.and (local.get $cp) (i32.const 0x3f))))
    (i32.const 4))

  ;; Decodes the escape whose backslash is at $p, inside a string already checked by
  ;; $skip_string, into UTF-8 at $out. Returns the number of bytes written and sets
  ;; $next past the escape; returns 0 for an unpaired \u surrogate (not text: serde_json
  ;; refuses it too).
  (func $decode_char (param $p i32) (param $out i32) (result i32)
    (local $e i32)
    (local $cp i32)
    (local $lo i32)
    (local.set $e (i32.load8_u offset=1 (local.get $p)))
    (global.set $next (i32.add (local.get $p) (i32.const 2)))
    (if (i32.ne (local.get $e) (i32.const 0x75))
      (then
        ;; \b \f \n \r \t stand for control bytes; \" \\ \/ for themselves.
        (if (i32.eq (local.get $e) (i32.const 0x62)) (then (local.set $e (i32.const 0x08))))
        (if (i32.eq (local.get $e) (i32.const 0x66)) (then (local.set $e (i32.const 0x0c))))
        (if (i32.eq (local.get $e) (i32.const 0x6e)) (then (local.set $e (i32.const 0x0a))))
        (if (i32.eq (local.get $e) (i32.const 0x72)) (then (local.set $e (i32.const 0x0d))))
        (if (i32.eq (local.get $e) (i32.const 0x74)) (then (local.set $e (i32.const 0x09))))
        (i32.store8 (local.get $out) (local.get $e))
        (return (i32.const 1))))
    (local.set $cp (call $hex4 (i32.add (local.get $p) (i32.const 2))))
    (global.set $next (i32.add (local.get $p) (i32.const 6)))
    ;; A low surrogate (DC00-DFFF) may not come first.
    (if (i32.eq (i32.and (local.get $cp) (i32.const 0xfc00)) (i32.const 0xdc00))
      (then (return (i32.const 0))))
    ;; A high surrogate (D800-DBFF) must be followed by \u and a low one. The string
    ;; was checked, so the two bytes after this escape exist (at worst the closing
    ;; quote), and a \u there has four hex digits.
    (if (i32.eq (i32.and (local.get $cp) (i32.const 0xfc00)) (i32.const 0xd800))
      (then
        (if (i32.ne (i32.load8_u offset=6 (local.get $p)) (i32.const 0x5c))
          (then (return (i32.const 0))))
        (if (i32.ne (i32.load8_u offset=7 (local.get $p)) (i32.const 0x75))
          (then (return (i32.const 0))))
        (local.set $lo (call $hex4 (i32.add (local.get $p) (i32.const 8))))
        (if (i32.ne (i32.and (local.get $lo) (i32.const 0xfc00)) (i32.const 0xdc00))
          (then (return (i32.const 0))))
        (local.set $cp
          (i32.add (i32.const 0x10000)
            (i32.or
              (i32.shl (i32.and (local.get $cp) (i32.const 0x3ff)) (i32.const 10))
              (i32.and (local.get $lo) (i32.const 0x3ff)))))
        (global.set $next (i32.add (local.get $p) (i32.const 12)))))
    (call $utf8 (local.get $cp) (local.get $out)))

  ;; Unescapes the raw JSON string at $raw ($len bytes, quotes included, checked by
  ;; $skip_string) into new memory: sets $str_ptr and $str_len and returns 1. Returns 0
  ;; when the raw text is not a string (or absent: $len 0), holds an unpaired surrogate,
  ;; or memory runs out.
  (func $string (param $raw i32) (param $len i32) (result i32)
    (local $p i32)
    (local $q i32)
    (local $out i32)
    (local $n i32)
    (local $k i32)
    (if (i32.eqz (local.get $len)) (then (return (i32.const 0))))
    (if (i32.ne (i32.load8_u (local.get $raw)) (i32.const 0x22)) (then (return (i32.const 0))))
    (local.set $p (i32.add (local.get $raw) (i32.const 1)))
    (local.set $q (i32.sub (i32.add (local.get $raw) (local.get $len)) (i32.const 1)))
    ;; Unescaping never lengthens: \uXXXX (6 bytes) gives at most 3, a pair (12) 4.
    (local.set $out (call $alloc (local.get $len)))
    (if (i32.eqz (local.get $out)) (then (return (i32.const 0))))
    (block $done
      (loop $char
        (br_if $done (i32.ge_u (local.get $p) (local.get $q)))
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0x5c))
          (then
            (local.set $k (call $decode_char (local.get $p) (i32.add (local.get $out) (local.get $n))))
            (if (i32.eqz (local.get $k)) (then (return (i32.const 0))))
            (local.set $n (i32.add (local.get $n) (local.get $k)))
            (local.set $p (global.get $next)))
          (else
            (i32.store8 (i32.add (local.get $out) (local.get $n)) (i32.load8_u (local.get $p)))
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))))
        (br $char)))
    (global.set $str_ptr (local.get $out))
    (global.set $str_len (local.get $n))
    (i32.const 1))

  ;; Whether the $alen bytes at $a are the $blen bytes at $b.
  (func $equal (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $alen) (local.get $blen)) (then (return (i32.const 0))))
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (local.get $i) (local.get $alen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $more)))
    (i32.const 1))

  ;; Whether the checked string token at $tok ($toklen bytes, quotes included) says
  ;; the $keylen bytes at $key: 1 yes, 0 no, -1 for an unpaired surrogate (which makes
  ;; the object invalid). Compares decoded characters, so "te\u006dp" says temp.
  (func $key_is (param $tok i32) (param $toklen i32) (param $key i32) (param $keylen i32)
                (result i32)
    (local $p i32)
    (local $q i32)
    (local $n i32)
    (local $k i32)
    (local $i i32)
    (local $same i32)
    (local.set $p (i32.add (local.get $tok) (i32.const 1)))
    (local.set $q (i32.sub (i32.add (local.get $tok) (local.get $toklen)) (i32.const 1)))
    (local.set $same (i32.const 1))
    (block $done
      (loop $char
        (br_if $done (i32.ge_u (local.get $p) (local.get $q)))
        ;; The next character's bytes into the scratch space at 624.
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0x5c))
          (then
            (local.set $k (call $decode_char (local.get $p) (i32.const 624)))
            (if (i32.eqz (local.get $k)) (then (return (i32.const -1))))
            (local.set $p (global.get $next)))
          (else
            (i32.store8 (i32.const 624) (i32.load8_u (local.get $p)))
            (local.set $k (i32.const 1))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))))
        (local.set $i (i32.const 0))
        (block $compared
          (loop $byte
            (br_if $compared (i32.ge_u (local.get $i) (local.get $k)))
            (if (i32.ge_u (local.get $n) (local.get $keylen))
              (then (local.set $same (i32.const 0)))
              (else
                (if (i32.ne (i32.load8_u (i32.add (local.get $key) (local.get $n)))
                            (i32.load8_u offset=624 (local.get $i)))
                  (then (local.set $same (i32.const 0))))))
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $byte)))
        (br $char)))
    (i32.and (local.get $same) (i32.eq (local.get $n) (local.get $keylen))))

  ;; Finds top-level members of the JSON object at $text ($len bytes) in one pass,
  ;; checking all of the text. $keys holds $nkeys (ptr, len) key names; for each, the
  ;; (ptr, len) of the member's raw text (no surrounding whitespace) goes to the same
  ;; position in $out, or (0, 0) when there is none. Returns 0 when the text is not a
  ;; valid object or one of the keys appears twice.
  (func $members (param $text i32) (param $len i32) (param $keys i32) (param $nkeys i32)
                 (param $out i32) (result i32)
    (local $k i32)
    (local $klen i32)
    (local $v i32)
    (local $i i32)
    (local $m i32)
    (local $slot i32)
    (block $cleared
      (loop $clear
        (br_if $cleared (i32.ge_u (local.get $i) (local.get $nkeys)))
        (i64.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 3))) (i64.const 0))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $clear)))
    (global.set $pos (local.get $text))
    (global.set $end (i32.add (local.get $text) (local.get $len)))
    (call $ws)
    (if (i32.eqz (call $eat (i32.const 0x7b))) (then (return (i32.const 0))))   ;; {
    (call $ws)
    (if (i32.eqz (call $eat (i32.const 0x7d)))                                  ;; not }
      (then
        (loop $member
          (local.set $k (global.get $pos))
          (if (i32.eqz (call $skip_string)) (then (return (i32.const 0))))
          (local.set $klen (i32.sub (global.get $pos) (local.get $k)))
          (call $ws)
          (if (i32.eqz (call $eat (i32.const 0x3a))) (then (return (i32.const 0))))   ;; :
          (call $ws)
          (local.set $v (global.get $pos))
          (if (i32.eqz (call $skip_value)) (then (return (i32.const 0))))
          ;; Is this one of the keys asked for?
          (local.set $i (i32.const 0))
          (block $matched
            (loop $key
              (br_if $matched (i32.ge_u (local.get $i) (local.get $nkeys)))
              (local.set $slot (i32.shl (local.get $i) (i32.const 3)))
              (local.set $m
                (call $key_is (local.get $k) (local.get $klen)
                  (i32.load (i32.add (local.get $keys) (local.get $slot)))
                  (i32.load offset=4 (i32.add (local.get $keys) (local.get $slot)))))
              (if (i32.lt_s (local.get $m) (i32.const 0)) (then (return (i32.const 0))))
              (if (local.get $m)
                (then
                  (local.set $slot (i32.add (local.get $out) (local.get $slot)))
                  ;; Twice: which one would be meant?
                  (if (i32.load offset=4 (local.get $slot)) (then (return (i32.const 0))))
                  (i32.store (local.get $slot) (local.get $v))
                  (i32.store offset=4 (local.get $slot) (i32.sub (global.get $pos) (local.get $v)))))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $key)))
          (call $ws)
          (if (i32.eqz (call $eat (i32.const 0x7d)))                            ;; not }
            (then
              (if (i32.eqz (call $eat (i32.const 0x2c))) (then (return (i32.const 0))))   ;; ,
              (call $ws)
              (br $member))))))
    ;; Nothing but whitespace may follow the object.
    (call $ws)
    (i32.eq (global.get $pos) (global.get $end)))

  ;; ---------------------------------------------------------------------------------
  ;; The rule
  ;; ---------------------------------------------------------------------------------

  (func (export "wasmrule_on_event") (param $ptr i32) (param $len i32) (result i64)
    (local $cptr i32)   ;; client id
    (local $clen i32)
    (local $tptr i32)   ;; the topic, then temp
    (local $tlen i32)
    (local $raw i32)    ;; temp's raw text
    (local $rawlen i32)
    (local $b i32)
    (local $size i32)
    (local $buf i32)
    (if (i32.eqz
          (call $members (local.get $ptr) (local.get $len) (i32.const 512) (i32.const 4)
            (i32.const 576)))
      (then (return (call $pack (i32.const 768) (i32.const 33)))))

    ;; The client: clientid if it is a non-empty string, else the last topic level.
    (if (call $string (i32.load (i32.const 576)) (i32.load (i32.const 580)))
      (then
        (local.set $cptr (global.get $str_ptr))
        (local.set $clen (global.get $str_len))))
    (if (i32.eqz (local.get $clen))
      (then
        (if (call $string (i32.load (i32.const 584)) (i32.load (i32.const 588)))
          (then
            (local.set $tptr (global.get $str_ptr))
            (local.set $tlen (global.get $str_len))
            ;; Count the bytes after the last '/', walking back from the end.
            (block $found
              (loop $back
                (br_if $found (i32.eq (local.get $clen) (local.get $tlen)))
                (br_if $found
                  (i32.eq
                    (i32.load8_u
                      (i32.sub (i32.add (local.get $tptr) (local.get $tlen))
                               (i32.add (local.get $clen) (i32.const 1))))
                    (i32.const 0x2f)))
                (local.set $clen (i32.add (local.get $clen) (i32.const 1)))
                (br $back)))
            (local.set $cptr
              (i32.sub (i32.add (local.get $tptr) (local.get $tlen)) (local.get $clen)))))
        (if (i32.eqz (local.get $clen))
          (then (return (call $pack (i32.const 864) (i32.const 64)))))))

    ;; The payload, which must be text.
    (if (call $string (i32.load (i32.const 600)) (i32.load (i32.const 604)))
      (then
        (if (call $equal (global.get $str_ptr) (global.get $str_len) (i32.const 336) (i32.const 6))
          (then (return (call $pack (i32.const 960) (i32.const 42)))))))
    (if (i32.eqz (call $string (i32.load (i32.const 592)) (i32.load (i32.const 596))))
      (then (return (call $pack (i32.const 1056) (i32.const 21)))))

    ;; payload.temp
    (if (i32.eqz
          (call $members (global.get $str_ptr) (global.get $str_len) (i32.const 544) (i32.const 1)
            (i32.const 608)))
      (then (return (call $pack (i32.const 1248) (i32.const 35)))))
    (local.set $raw (i32.load (i32.const 608)))
    (local.set $rawlen (i32.load (i32.const 612)))
    (if (i32.eqz (local.get $rawlen))
      (then (return (call $pack (i32.const 1152) (i32.const 30)))))
    ;; A number (it starts with - or a digit, and was checked) is kept as written:
    ;; 21.50 stays 21.50. A string is unescaped. Anything else is an error.
    (local.set $b (i32.load8_u (local.get $raw)))
    (if (i32.or (i32.eq (local.get $b) (i32.const 0x2d))
                (i32.le_u (i32.sub (local.get $b) (i32.const 0x30)) (i32.const 9)))
      (then
        (local.set $tptr (local.get $raw))
        (local.set $tlen (local.get $rawlen)))
      (else
        (if (i32.eqz (call $string (local.get $raw) (local.get $rawlen)))
          (then (return (call $pack (i32.const 1344) (i32.const 41)))))
        (local.set $tptr (global.get $str_ptr))
        (local.set $tlen (global.get $str_len))))

    ;; The result: the prepared 34 bytes, then client id and temp as length + bytes.
    (local.set $size
      (i32.add (i32.const 42) (i32.add (local.get $clen) (local.get $tlen))))
    (local.set $buf (call $alloc (local.get $size)))
    (if (i32.eqz (local.get $buf))
      (then (return (call $pack (i32.const 1440) (i32.const 26)))))
    (memory.copy (local.get $buf) (i32.const 640) (i32.const 34))
    (i32.store offset=34 (local.get $buf) (local.get $clen))
    (memory.copy (i32.add (local.get $buf) (i32.const 38)) (local.get $cptr) (local.get $clen))
    (local.set $b (i32.add (local.get $buf) (i32.add (i32.const 38) (local.get $clen))))
    (i32.store (local.get $b) (local.get $tlen))
    (memory.copy (i32.add (local.get $b) (i32.const 4)) (local.get $tptr) (local.get $tlen))
    (call $pack (local.get $buf) (local.get $size)))
)
