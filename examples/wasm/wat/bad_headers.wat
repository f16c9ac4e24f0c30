;; Request headers HTTP/1 cannot carry, added by the module: Envoy's upstream codec refuses them
;; and the router answers 503 "invalid header value for: <name>" / "invalid header name: <name>"
;; (text/plain) through the filter's response callbacks; the upstream sees nothing. The method's
;; first two letters choose what on_request_headers adds: GE/PO x-bad "b\0c", PU "b\r\nc",
;; OP "b\x01c", PA "b\x7fc", DE a name with a space, HE "X-Up: b\tc" (valid). Each callback
;; logs its name (reqh, reqb, resh, resb).
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $ahv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $ghv (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (data (i32.const 2048) "x-bad")
  (data (i32.const 2064) "b\00c")      ;; GE, PO: NUL
  (data (i32.const 2068) "b\0d\0ac")   ;; PU: CR LF
  (data (i32.const 2076) "b\01c")      ;; O: \x01
  (data (i32.const 2080) "b\7fc")      ;; PA: DEL
  (data (i32.const 2084) "x a")       ;; D: name with a space
  (data (i32.const 2090) "X-Up")      ;; HE: uppercase (lowered), value with a tab: valid
  (data (i32.const 2100) ":method")
  (data (i32.const 2110) "reqh")
  (data (i32.const 2120) "reqb")
  (data (i32.const 2130) "resh")
  (data (i32.const 2140) "resb")
  (data (i32.const 2150) "b\09c")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $m i32)
    (drop (call $log (i32.const 2) (i32.const 2110) (i32.const 4)))
    (drop (call $ghv (i32.const 0) (i32.const 2100) (i32.const 7) (i32.const 1024) (i32.const 1028)))
    (local.set $m (i32.load16_u (i32.load (i32.const 1024))))
    (if (i32.eq (local.get $m) (i32.const 0x4547)) ;; GE
      (then (drop (call $ahv (i32.const 0) (i32.const 2048) (i32.const 5) (i32.const 2064) (i32.const 3)))))
    (if (i32.eq (local.get $m) (i32.const 0x4f50)) ;; PO
      (then (drop (call $ahv (i32.const 0) (i32.const 2048) (i32.const 5) (i32.const 2064) (i32.const 3)))))
    (if (i32.eq (local.get $m) (i32.const 0x5550)) ;; PU
      (then (drop (call $ahv (i32.const 0) (i32.const 2048) (i32.const 5) (i32.const 2068) (i32.const 5)))))
    (if (i32.eq (local.get $m) (i32.const 0x504f)) ;; OP
      (then (drop (call $ahv (i32.const 0) (i32.const 2048) (i32.const 5) (i32.const 2076) (i32.const 3)))))
    (if (i32.eq (local.get $m) (i32.const 0x4150)) ;; PA
      (then (drop (call $ahv (i32.const 0) (i32.const 2048) (i32.const 5) (i32.const 2080) (i32.const 3)))))
    (if (i32.eq (local.get $m) (i32.const 0x4544)) ;; DE
      (then (drop (call $ahv (i32.const 0) (i32.const 2084) (i32.const 3) (i32.const 2064) (i32.const 1)))))
    (if (i32.eq (local.get $m) (i32.const 0x4548)) ;; HE: uppercase, lowered: valid
      (then (drop (call $ahv (i32.const 0) (i32.const 2090) (i32.const 4) (i32.const 2150) (i32.const 3)))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 2120) (i32.const 4))) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 2130) (i32.const 4))) (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 2140) (i32.const 4))) (i32.const 0)))
