;; threshold-alert, in hand-written WebAssembly text (rule ABI v2): the same behaviour
;; as the Rust rule in rules-wasm/threshold-alert (see its lib.rs for the definition).
;;
;; On readings/<device> with a decimal reading as the payload:
;;
;;   GET last:<device>                           the one read
;;   SET last:<device> <payload>                 always
;;   MQTT publish on alerts/<device>, QoS 1      when |cur - prev| > 0.1 * |prev|
;;     {"device":"<device>","previous":<prev>,"current":<cur>}
;;
;; Readings are -?(0|[1-9][0-9]*)(.[0-9]+)? with at most 9 integer and 6 fraction
;; digits, compared exactly as i64 millionths. The device (last topic level) is 1 to 64
;; of A-Z a-z 0-9 - _ . and the payload a decimal: neither holds a character JSON
;; escapes, so the rule takes both straight from the event's text, and a backslash in
;; either is simply not allowed. The event comes from the host and is valid JSON, so it
;; is walked without validating (as topic-counter.wat does). Assemble with
;; `wat2wasm threshold-alert.wat`.
;;
;; Memory map:
;;      0  manifest JSON (107 bytes)
;;    256  the keys looked for, as JSON tokens: "topic", "payload", "payload_encoding",
;;         and the value "base64"
;;    384  error results, tag 1 then the message
;;    768  pieces of the alert's JSON
;;    832  the start of the read request (GET), "last:", "alerts/", the SET action's
;;         start
;;   1024  heap: the event, the request, the reply, the result
(module
  (import "wasmrule" "redis_read" (func $redis_read (param i32 i32) (result i32)))
  (import "wasmrule" "redis_reply" (func $redis_reply (param i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; ABI version marker: version 2. The runtime checks its name and never calls it.
  (func (export "wasmrule_abi_version_2"))

  (data (i32.const 0)
    "{\"name\":\"threshold-alert\",\"version\":\"0.1.0\",\"filters\":[\"readings/+\"],"
    "\"sdk\":\"hand-written WebAssembly text\"}")

  (data (i32.const 256) "\"topic\"")              ;; 7 bytes
  (data (i32.const 272) "\"payload\"")            ;; 9 bytes
  (data (i32.const 288) "\"payload_encoding\"")   ;; 18 bytes
  (data (i32.const 320) "\"base64\"")             ;; 8 bytes

  (data (i32.const 384) "\01the device (last topic level) is not 1 to 64 of A-Z a-z 0-9 - _ .") ;; 66
  (data (i32.const 512) "\01payload is binary (base64), not a reading")           ;; 42
  (data (i32.const 576) "\01payload is not a reading: a decimal of at most 9.6 digits")  ;; 58
  (data (i32.const 640) "\01redis read failed")                                    ;; 18
  (data (i32.const 672) "\01out of memory in the rule")                            ;; 26

  (data (i32.const 768) "{\"device\":\"")      ;; 11 bytes
  (data (i32.const 784) "\",\"previous\":")    ;; 13 bytes
  (data (i32.const 800) ",\"current\":")       ;; 11 bytes
  (data (i32.const 816) "}")                   ;; 1 byte

  (data (i32.const 832)
    "\02\00\00\00"                   ;; 2 arguments:
    "\03\00\00\00" "GET")            ;;   GET, then the key as u32 length + bytes
  (data (i32.const 848) "last:")     ;; 5 bytes
  (data (i32.const 856) "alerts/")   ;; 7 bytes
  (data (i32.const 864)
    "\00"                            ;; action kind 0: a Redis command
    "\03\00\00\00"                   ;; with 3 arguments:
    "\03\00\00\00" "SET")            ;;   SET, then key and value

  ;; Next free heap address; every event gets a fresh instance.
  (global $heap (mut i32) (i32.const 1024))

  ;; Set by $find: the string value's token (quotes included), or 0 when missing.
  (global $vptr (mut i32) (i32.const 0))
  (global $vlen (mut i32) (i32.const 0))

  ;; Set by $decimal: whether the text was a reading.
  (global $ok (mut i32) (i32.const 0))

  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
      (i64.extend_i32_u (local.get $len))))

  (func (export "wasmrule_manifest") (result i64)
    (call $pack (i32.const 0) (i32.const 107)))

  ;; $len bytes aligned to 8, growing memory when needed; 0 when it cannot grow.
  (func $alloc (export "wasmrule_alloc") (param $len i32) (result i32)
    (local $start i32)
    (local $end i64)
    (local $have i64)
    (local.set $start
      (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end
      (i64.add (i64.extend_i32_u (local.get $start)) (i64.extend_i32_u (local.get $len))))
    (local.set $have (i64.shl (i64.extend_i32_u (memory.size)) (i64.const 16)))
    (if (i64.gt_u (local.get $end) (local.get $have))
      (then
        (if (i64.gt_u (local.get $end) (i64.const 0x100000000))
          (then (return (i32.const 0))))
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
        (br_if $done (i32.eq (local.get $b) (i32.const 0x22)))
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

  ;; Finds the top-level key whose JSON token is the $klen bytes at $key in the event
  ;; at $p..$end, and sets $vptr/$vlen to its value's string token (0 if the key is
  ;; missing or its value is not a string). A key is a string at depth 1 right after
  ;; { or ,.
  (func $find (param $p i32) (param $end i32) (param $key i32) (param $klen i32)
    (local $b i32)
    (local $depth i32)
    (local $expect_key i32)
    (local $start i32)
    (global.set $vptr (i32.const 0))
    (global.set $vlen (i32.const 0))
    (block $found
      (loop $scan
        (br_if $found (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $b (i32.load8_u (local.get $p)))
        (if (i32.eq (local.get $b) (i32.const 0x22))
          (then
            (local.set $start (local.get $p))
            (local.set $p (call $string_end (local.get $p) (local.get $end)))
            (if (i32.and (local.get $expect_key) (i32.eq (local.get $depth) (i32.const 1)))
              (then
                (local.set $expect_key (i32.const 0))
                (if (call $equal (local.get $start) (i32.sub (local.get $p) (local.get $start))
                                 (local.get $key) (local.get $klen))
                  (then
                    (local.set $p
                      (call $ws
                        (i32.add (call $ws (local.get $p) (local.get $end)) (i32.const 1))
                        (local.get $end)))
                    (if (i32.lt_u (local.get $p) (local.get $end))
                      (then
                        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0x22))
                          (then
                            (global.set $vptr (local.get $p))
                            (global.set $vlen
                              (i32.sub (call $string_end (local.get $p) (local.get $end))
                                       (local.get $p)))))))
                    (br $found)))))
            (br $scan)))
        (if (i32.or (i32.eq (local.get $b) (i32.const 0x7b)) (i32.eq (local.get $b) (i32.const 0x5b)))
          (then
            (local.set $depth (i32.add (local.get $depth) (i32.const 1)))
            (local.set $expect_key (i32.eq (local.get $b) (i32.const 0x7b)))))
        (if (i32.or (i32.eq (local.get $b) (i32.const 0x7d)) (i32.eq (local.get $b) (i32.const 0x5d)))
          (then (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))))
        (if (i32.and (i32.eq (local.get $b) (i32.const 0x2c)) (i32.eq (local.get $depth) (i32.const 1)))
          (then (local.set $expect_key (i32.const 1))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $scan))))

  ;; Whether byte $b is a digit.
  (func $digit (param $b i32) (result i32)
    (i32.le_u (i32.sub (local.get $b) (i32.const 0x30)) (i32.const 9)))

  ;; The reading in the $len bytes at $p, in millionths; sets $ok to whether it was one.
  (func $decimal (param $p i32) (param $len i32) (result i64)
    (local $end i32)
    (local $neg i32)
    (local $v i64)
    (local $n i32)           ;; digits in the current part
    (local $frac i32)        ;; fraction digits taken
    (local $b i32)
    (global.set $ok (i32.const 0))
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (if (i32.lt_u (local.get $p) (local.get $end))
      (then
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 0x2d))     ;; -
          (then
            (local.set $neg (i32.const 1))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))))))
    ;; The integer part: 1 to 9 digits, no leading zero unless it is "0".
    (block $int_done
      (loop $int
        (br_if $int_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $b (i32.load8_u (local.get $p)))
        (br_if $int_done (i32.eqz (call $digit (local.get $b))))
        (if (i32.and (i32.eq (local.get $n) (i32.const 1)) (i64.eqz (local.get $v)))
          (then (return (i64.const 0))))                               ;; 0 then a digit
        (local.set $v
          (i64.add (i64.mul (local.get $v) (i64.const 10))
                   (i64.extend_i32_u (i32.sub (local.get $b) (i32.const 0x30)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $int)))
    (if (i32.or (i32.eqz (local.get $n)) (i32.gt_u (local.get $n) (i32.const 9)))
      (then (return (i64.const 0))))
    ;; The fraction: a dot and 1 to 6 digits.
    (if (i32.lt_u (local.get $p) (local.get $end))
      (then
        (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 0x2e))
          (then (return (i64.const 0))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (block $frac_done
          (loop $fraction
            (br_if $frac_done (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $b (i32.load8_u (local.get $p)))
            (if (i32.eqz (call $digit (local.get $b))) (then (return (i64.const 0))))
            (if (i32.eq (local.get $frac) (i32.const 6)) (then (return (i64.const 0))))
            (local.set $v
              (i64.add (i64.mul (local.get $v) (i64.const 10))
                       (i64.extend_i32_u (i32.sub (local.get $b) (i32.const 0x30)))))
            (local.set $frac (i32.add (local.get $frac) (i32.const 1)))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $fraction)))
        (if (i32.eqz (local.get $frac)) (then (return (i64.const 0))))))
    ;; Scale to millionths.
    (block $scaled
      (loop $scale
        (br_if $scaled (i32.ge_u (local.get $frac) (i32.const 6)))
        (local.set $v (i64.mul (local.get $v) (i64.const 10)))
        (local.set $frac (i32.add (local.get $frac) (i32.const 1)))
        (br $scale)))
    (global.set $ok (i32.const 1))
    (if (result i64) (local.get $neg)
      (then (i64.sub (i64.const 0) (local.get $v)))
      (else (local.get $v))))

  (func $abs (param $x i64) (result i64)
    (if (result i64) (i64.lt_s (local.get $x) (i64.const 0))
      (then (i64.sub (i64.const 0) (local.get $x)))
      (else (local.get $x))))

  ;; Copies $len bytes from $src to $dst; returns the address past them.
  (func $put (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  ;; Writes $v as u32 little-endian at $dst; returns the address past it.
  (func $put_u32 (param $dst i32) (param $v i32) (result i32)
    (i32.store (local.get $dst) (local.get $v))
    (i32.add (local.get $dst) (i32.const 4)))

  (func (export "wasmrule_on_event") (param $ptr i32) (param $len i32) (result i64)
    (local $end i32)
    (local $dev i32) (local $dlen i32)       ;; the device, in the event's text
    (local $pay i32) (local $plen i32)       ;; the payload, in the event's text
    (local $cur i64)
    (local $prev i64)
    (local $prevp i32) (local $prevlen i32)  ;; the previous reading, in the reply
    (local $alert i32)
    (local $req i32) (local $n i32) (local $reply i32)
    (local $buf i32) (local $o i32) (local $size i32) (local $jlen i32)
    (local $i i32) (local $b i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))

    ;; The device: the topic's last level, 1 to 64 of A-Z a-z 0-9 - _ .
    (call $find (local.get $ptr) (local.get $end) (i32.const 256) (i32.const 7))
    (if (global.get $vptr)
      (then
        ;; Inside the quotes, after the last slash.
        (local.set $dev (i32.add (global.get $vptr) (i32.const 1)))
        (local.set $i (local.get $dev))
        (local.set $b (i32.sub (i32.add (global.get $vptr) (global.get $vlen)) (i32.const 1)))
        (block $done
          (loop $level
            (br_if $done (i32.ge_u (local.get $i) (local.get $b)))
            (if (i32.eq (i32.load8_u (local.get $i)) (i32.const 0x2f))
              (then (local.set $dev (i32.add (local.get $i) (i32.const 1)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $level)))
        (local.set $dlen (i32.sub (local.get $b) (local.get $dev)))))
    (if (i32.or (i32.eqz (local.get $dlen)) (i32.gt_u (local.get $dlen) (i32.const 64)))
      (then (return (call $pack (i32.const 384) (i32.const 66)))))
    (local.set $i (i32.const 0))
    (block $done
      (loop $char
        (br_if $done (i32.ge_u (local.get $i) (local.get $dlen)))
        (local.set $b (i32.load8_u (i32.add (local.get $dev) (local.get $i))))
        (if (i32.eqz
              (i32.or
                (i32.or (call $digit (local.get $b))
                        ;; a letter: lower-cased, a to z
                        (i32.le_u (i32.sub (i32.or (local.get $b) (i32.const 0x20)) (i32.const 0x61))
                                  (i32.const 25)))
                (i32.or (i32.eq (local.get $b) (i32.const 0x2d))            ;; -
                        (i32.or (i32.eq (local.get $b) (i32.const 0x5f))    ;; _
                                (i32.eq (local.get $b) (i32.const 0x2e))))))  ;; .
          (then (return (call $pack (i32.const 384) (i32.const 66)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $char)))

    ;; A base64 payload (the bytes were not UTF-8) is no reading.
    (call $find (local.get $ptr) (local.get $end) (i32.const 288) (i32.const 18))
    (if (global.get $vptr)
      (then
        (if (call $equal (global.get $vptr) (global.get $vlen) (i32.const 320) (i32.const 8))
          (then (return (call $pack (i32.const 512) (i32.const 42)))))))

    ;; The payload: a reading, as written (no escapes can be in one).
    (call $find (local.get $ptr) (local.get $end) (i32.const 272) (i32.const 9))
    (if (i32.eqz (global.get $vptr))
      (then (return (call $pack (i32.const 576) (i32.const 58)))))
    (local.set $pay (i32.add (global.get $vptr) (i32.const 1)))
    (local.set $plen (i32.sub (global.get $vlen) (i32.const 2)))
    (local.set $cur (call $decimal (local.get $pay) (local.get $plen)))
    (if (i32.eqz (global.get $ok))
      (then (return (call $pack (i32.const 576) (i32.const 58)))))

    ;; GET last:<device>: 11 bytes of request start, the key's length, "last:", device.
    (local.set $req (call $alloc (i32.add (i32.const 20) (local.get $dlen))))
    (if (i32.eqz (local.get $req))
      (then (return (call $pack (i32.const 672) (i32.const 26)))))
    (local.set $o (call $put (local.get $req) (i32.const 832) (i32.const 11)))
    (local.set $o (call $put_u32 (local.get $o) (i32.add (i32.const 5) (local.get $dlen))))
    (local.set $o (call $put (local.get $o) (i32.const 848) (i32.const 5)))
    (local.set $o (call $put (local.get $o) (local.get $dev) (local.get $dlen)))
    (local.set $n (call $redis_read (local.get $req) (i32.sub (local.get $o) (local.get $req))))
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then (return (call $pack (i32.const 640) (i32.const 18)))))
    (local.set $reply (call $alloc (local.get $n)))
    (if (i32.eqz (local.get $reply))
      (then (return (call $pack (i32.const 672) (i32.const 26)))))
    (if (i32.lt_s (call $redis_reply (local.get $reply) (local.get $n)) (i32.const 0))
      (then (return (call $pack (i32.const 640) (i32.const 18)))))
    ;; A bulk string (type 2) holding a reading is the previous one; nil, or anything
    ;; else, is none.
    (if (i32.eq (i32.load8_u (local.get $reply)) (i32.const 2))
      (then
        (local.set $prevp (i32.add (local.get $reply) (i32.const 5)))
        (local.set $prevlen (i32.load offset=1 (local.get $reply)))
        (local.set $prev (call $decimal (local.get $prevp) (local.get $prevlen)))
        ;; |cur - prev| * 10 > |prev|: at most 2e15 * 10, far from overflowing.
        (local.set $alert
          (i32.and (global.get $ok)
            (i64.gt_s
              (i64.mul (call $abs (i64.sub (local.get $cur) (local.get $prev))) (i64.const 10))
              (call $abs (local.get $prev)))))))

    ;; The result: tag, count, SET last:<device> <payload>, and the alert.
    (local.set $jlen
      (i32.add (i32.const 36)
        (i32.add (local.get $dlen) (i32.add (local.get $prevlen) (local.get $plen)))))
    (local.set $size
      (i32.add (i32.const 30) (i32.add (local.get $dlen) (local.get $plen))))
    (if (local.get $alert)
      (then
        (local.set $size
          (i32.add (local.get $size)
            (i32.add (i32.const 22) (i32.add (local.get $dlen) (local.get $jlen)))))))
    (local.set $buf (call $alloc (local.get $size)))
    (if (i32.eqz (local.get $buf))
      (then (return (call $pack (i32.const 672) (i32.const 26)))))
    (i32.store8 (local.get $buf) (i32.const 0))                         ;; tag 0
    (local.set $o (call $put_u32 (i32.add (local.get $buf) (i32.const 1))
                                 (i32.add (i32.const 1) (local.get $alert))))
    (local.set $o (call $put (local.get $o) (i32.const 864) (i32.const 12)))
    (local.set $o (call $put_u32 (local.get $o) (i32.add (i32.const 5) (local.get $dlen))))
    (local.set $o (call $put (local.get $o) (i32.const 848) (i32.const 5)))
    (local.set $o (call $put (local.get $o) (local.get $dev) (local.get $dlen)))
    (local.set $o (call $put_u32 (local.get $o) (local.get $plen)))
    (local.set $o (call $put (local.get $o) (local.get $pay) (local.get $plen)))
    (if (local.get $alert)
      (then
        (i32.store8 (local.get $o) (i32.const 1))                      ;; kind 1: publish
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (local.set $o (call $put_u32 (local.get $o) (i32.add (i32.const 7) (local.get $dlen))))
        (local.set $o (call $put (local.get $o) (i32.const 856) (i32.const 7)))
        (local.set $o (call $put (local.get $o) (local.get $dev) (local.get $dlen)))
        (local.set $o (call $put_u32 (local.get $o) (local.get $jlen)))
        (local.set $o (call $put (local.get $o) (i32.const 768) (i32.const 11)))
        (local.set $o (call $put (local.get $o) (local.get $dev) (local.get $dlen)))
        (local.set $o (call $put (local.get $o) (i32.const 784) (i32.const 13)))
        (local.set $o (call $put (local.get $o) (local.get $prevp) (local.get $prevlen)))
        (local.set $o (call $put (local.get $o) (i32.const 800) (i32.const 11)))
        (local.set $o (call $put (local.get $o) (local.get $pay) (local.get $plen)))
        (local.set $o (call $put (local.get $o) (i32.const 816) (i32.const 1)))
        (i32.store8 (local.get $o) (i32.const 1))                      ;; qos 1
        (i32.store8 offset=1 (local.get $o) (i32.const 0))             ;; not retained
        (local.set $o (call $put_u32 (i32.add (local.get $o) (i32.const 2)) (i32.const 0)))))
    (call $pack (local.get $buf) (i32.sub (local.get $o) (local.get $buf))))
)
