;; topic-counter, in hand-written WebAssembly text: counts messages per topic in the
;; hash mqtt_topic_count (same behaviour as the Rust rule in rules-wasm/topic-counter).
;;
;;   HINCRBY mqtt_topic_count <topic> 1
;;
;; The filter # matches every topic except $-topics ($SYS/...), as MQTT requires.
;;
;; Only the event is read, and the host always writes it as valid JSON, so this rule
;; does not validate: it walks the text keeping track of strings and nesting depth,
;; takes the string after the top-level key "topic", and unescapes it straight into the
;; result buffer. (store-last-message.wat, which reads an untrusted payload, carries a
;; validating parser instead.) The host writes keys without escapes, so the key is
;; compared as raw bytes. Assemble with `wat2wasm topic-counter.wat`.
;;
;; Memory map:
;;      0  manifest JSON (96 bytes)
;;    256  the start of the result buffer, the same for every event (40 bytes)
;;    320  "topic" as a JSON string token, quotes included (7 bytes)
;;    336  error results, tag 1 then the message: the topic is not text (336), out of
;;         memory (368)
;;   1024  heap: the event, then the result
(module
  (memory (export "memory") 1)

  ;; ABI version marker. The runtime checks its name and never calls it.
  (func (export "wasmrule_abi_version_1"))

  (data (i32.const 0)
    "{\"name\":\"topic-counter\",\"version\":\"0.1.0\",\"filters\":[\"#\"],"
    "\"sdk\":\"hand-written WebAssembly text\"}")

  (data (i32.const 256)
    "\00"                                ;; tag 0: commands follow
    "\01\00\00\00"                       ;; 1 command
    "\04\00\00\00"                       ;; with 4 arguments:
    "\07\00\00\00" "HINCRBY"             ;;   7 bytes
    "\10\00\00\00" "mqtt_topic_count")   ;;   16 bytes
  ;; ...then the topic as u32 length + bytes, then the last argument:
  (data (i32.const 300) "\01\00\00\00" "1")  ;; 1 byte

  (data (i32.const 320) "\"topic\"")
  (data (i32.const 336) "\01topic is not valid text")     ;; 24 bytes
  (data (i32.const 368) "\01out of memory in the rule")   ;; 26 bytes

  ;; Next free heap address; every event gets a fresh instance.
  (global $heap (mut i32) (i32.const 1024))

  ;; Set by $decode_char: the byte after the escape it decoded.
  (global $next (mut i32) (i32.const 0))

  ;; (ptr << 32) | len, the ABI's packed location.
  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len))))

  (func (export "wasmrule_manifest") (result i64)
    (call $pack (i32.const 0) (i32.const 96)))

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

  ;; The address just past the string whose opening quote is at $p.
  (func $string_end (param $p i32) (param $end i32) (result i32)
    (local $b i32)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (block $done
      (loop $char
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $b (i32.load8_u (local.get $p)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br_if $done (i32.eq (local.get $b) (i32.const 0x22)))           ;; closing quote
        ;; A backslash: the next byte is escaped, whatever it is.
        (if (i32.eq (local.get $b) (i32.const 0x5c))
          (then (local.set $p (i32.add (local.get $p) (i32.const 1)))))
        (br $char)))
    (local.get $p))

  ;; Skips JSON whitespace from $p.
  (func $ws (param $p i32) (param $end i32) (result i32)
    (local $b i32)
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $b (i32.load8_u (local.get $p)))
        (br_if $done
          (i32.eqz
            (i32.or
              (i32.or (i32.eq (local.get $b) (i32.const 0x20)) (i32.eq (local.get $b) (i32.const 0x09)))
              (i32.or (i32.eq (local.get $b) (i32.const 0x0a)) (i32.eq (local.get $b) (i32.const 0x0d))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $more)))
    (local.get $p))

  ;; The value of hex digit $b (the host writes only valid escapes).
  (func $hex (param $b i32) (result i32)
    (if (i32.le_u (i32.sub (local.get $b) (i32.const 0x30)) (i32.const 9))   ;; 0-9
      (then (return (i32.sub (local.get $b) (i32.const 0x30)))))
    (i32.sub (i32.or (local.get $b) (i32.const 0x20)) (i32.const 0x57)))      ;; a-f, A-F

  (func $hex4 (param $p i32) (result i32)
    (i32.or
      (i32.or
        (i32.shl (call $hex (i32.load8_u (local.get $p))) (i32.const 12))
        (i32.shl (call $hex (i32.load8_u offset=1 (local.get $p))) (i32.const 8)))
      (i32.or
        (i32.shl (call $hex (i32.load8_u offset=2 (local.get $p))) (i32.const 4))
        (call $hex (i32.load8_u offset=3 (local.get $p))))))

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

  ;; Decodes the escape whose backslash is at $p into UTF-8 at $out. Returns the number
  ;; of bytes written and sets $next past the escape; returns 0 for an unpaired \u
  ;; surrogate (which a Rust host never writes, but it would not be text).
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
    (if (i32.eq (i32.and (local.get $cp) (i32.const 0xfc00)) (i32.const 0xdc00))   ;; low first
      (then (return (i32.const 0))))
    (if (i32.eq (i32.and (local.get $cp) (i32.const 0xfc00)) (i32.const 0xd800))   ;; high
      (then
        ;; It must be followed by \u and a low surrogate; the closing quote at least
        ;; follows this escape, so reading two bytes ahead stays in the string.
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

  (func (export "wasmrule_on_event") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32)
    (local $end i32)
    (local $b i32)
    (local $depth i32)       ;; containers open at $p
    (local $expect_key i32)  ;; the next string at depth 1 is a key
    (local $key i32)
    (local $raw i32)         ;; the topic's string token, quotes included; 0 if none
    (local $rawlen i32)
    (local $buf i32)
    (local $n i32)
    (local $k i32)
    (local $q i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))

    ;; Find the top-level "topic": a key is a string at depth 1 right after { or ,.
    (block $found
      (loop $scan
        (br_if $found (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $b (i32.load8_u (local.get $p)))
        (if (i32.eq (local.get $b) (i32.const 0x22))                       ;; a string
          (then
            (local.set $key (local.get $p))
            (local.set $p (call $string_end (local.get $p) (local.get $end)))
            (if (i32.and (local.get $expect_key) (i32.eq (local.get $depth) (i32.const 1)))
              (then
                (local.set $expect_key (i32.const 0))
                (if (call $equal (local.get $key) (i32.sub (local.get $p) (local.get $key))
                                 (i32.const 320) (i32.const 7))
                  (then
                    ;; Past the colon and the whitespace around it: the value. A topic
                    ;; that is not a string counts as empty, as in the other SDKs.
                    (local.set $p
                      (call $ws
                        (i32.add (call $ws (local.get $p) (local.get $end)) (i32.const 1))
                        (local.get $end)))
                    (if (i32.lt_u (local.get $p) (local.get $end))
                      (then
                        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0x22))
                          (then
                            (local.set $raw (local.get $p))
                            (local.set $rawlen
                              (i32.sub (call $string_end (local.get $p) (local.get $end))
                                       (local.get $p)))))))
                    (br $found)))))
            (br $scan)))
        (if (i32.or (i32.eq (local.get $b) (i32.const 0x7b)) (i32.eq (local.get $b) (i32.const 0x5b)))
          (then                                                            ;; { [
            (local.set $depth (i32.add (local.get $depth) (i32.const 1)))
            (local.set $expect_key (i32.eq (local.get $b) (i32.const 0x7b)))))
        (if (i32.or (i32.eq (local.get $b) (i32.const 0x7d)) (i32.eq (local.get $b) (i32.const 0x5d)))
          (then (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))))   ;; } ]
        (if (i32.and (i32.eq (local.get $b) (i32.const 0x2c)) (i32.eq (local.get $depth) (i32.const 1)))
          (then (local.set $expect_key (i32.const 1))))                    ;; , between members
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan)))

    ;; The result: the prepared 40 bytes, the topic as length + bytes, then "1". The
    ;; topic is unescaped straight into place; unescaping never lengthens, so the raw
    ;; token's length is room enough.
    (local.set $buf (call $alloc (i32.add (i32.const 49) (local.get $rawlen))))
    (if (i32.eqz (local.get $buf))
      (then (return (call $pack (i32.const 368) (i32.const 26)))))
    (memory.copy (local.get $buf) (i32.const 256) (i32.const 40))
    (if (local.get $raw)
      (then
        (local.set $p (i32.add (local.get $raw) (i32.const 1)))
        (local.set $q (i32.sub (i32.add (local.get $raw) (local.get $rawlen)) (i32.const 1)))
        (block $done
          (loop $char
            (br_if $done (i32.ge_u (local.get $p) (local.get $q)))
            (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0x5c))
              (then
                (local.set $k
                  (call $decode_char (local.get $p)
                    (i32.add (local.get $buf) (i32.add (i32.const 44) (local.get $n)))))
                (if (i32.eqz (local.get $k))
                  (then (return (call $pack (i32.const 336) (i32.const 24)))))
                (local.set $n (i32.add (local.get $n) (local.get $k)))
                (local.set $p (global.get $next)))
              (else
                (i32.store8 offset=44 (i32.add (local.get $buf) (local.get $n))
                  (i32.load8_u (local.get $p)))
                (local.set $n (i32.add (local.get $n) (i32.const 1)))
                (local.set $p (i32.add (local.get $p) (i32.const 1)))))
            (br $char)))))
    (i32.store offset=40 (local.get $buf) (local.get $n))
    (memory.copy (i32.add (local.get $buf) (i32.add (i32.const 44) (local.get $n)))
                 (i32.const 300) (i32.const 5))
    (call $pack (local.get $buf) (i32.add (i32.const 49) (local.get $n))))
)
