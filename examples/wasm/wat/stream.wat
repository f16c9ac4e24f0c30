;; Stream control, chosen by the first byte of the plugin configuration:
;;   L  local response 401 from on_request_headers (then PAUSE)
;;   P  pause in on_request_headers; on_tick continues stream 2 via set_effective_context
;;   C  close the request stream from on_request_headers
;;   B  continue headers; buffer the body (PAUSE) until end of stream
;; The response callbacks record what they saw (slots 10..13).
(module
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (global $mode (mut i32) (i32.const 0))
  (global $body_calls (mut i32) (i32.const 0))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func $r (param $i i32) (param $v i32)
    (i32.store (i32.add (i32.const 256) (i32.shl (local.get $i) (i32.const 2))) (local.get $v)))
  (data (i32.const 2048) "no entry")   ;; details, 8 (Envoy replaces the space)
  (data (i32.const 2064) "go away")    ;; body, 7
  ;; pairs {"x-why": "test"}: 4 + 8 + 6 + 5 = 23
  (data (i32.const 2080) "\01\00\00\00\05\00\00\00\04\00\00\00x-why\00test\00")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (drop (call $get_buffer (i32.const 7) (i32.const 0) (i32.const 1) (i32.const 1024) (i32.const 1028)))
    (global.set $mode (i32.load8_u (i32.load (i32.const 1024))))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $r (i32.const 0) (local.get $ctx))
    (if (i32.eq (global.get $mode) (i32.const 76))  ;; 'L'
      (then
        (call $r (i32.const 1) (call $local (i32.const 401) (i32.const 2048) (i32.const 8) (i32.const 2064)
          (i32.const 7) (i32.const 2080) (i32.const 23) (i32.const -1)))
        (return (i32.const 1))))
    (if (i32.eq (global.get $mode) (i32.const 80)) (then (return (i32.const 1))))  ;; 'P'
    (if (i32.eq (global.get $mode) (i32.const 67))  ;; 'C'
      (then (call $r (i32.const 2) (call $close (i32.const 0)))))
    (call $r (i32.const 3) (call $continue (i32.const 9)))  ;; not a stream type
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (global.set $body_calls (i32.add (global.get $body_calls) (i32.const 1)))
    (call $r (i32.const 4) (global.get $body_calls))
    (call $r (i32.const 5) (local.get $size))
    (call $r (i32.const 6) (local.get $eos))
    (if (result i32) (i32.and (i32.eq (global.get $mode) (i32.const 66)) (i32.eqz (local.get $eos)))
      (then (i32.const 1)) (else (i32.const 0))))
  (func (export "proxy_on_tick") (param $root i32)
    (call $r (i32.const 7) (call $effective (i32.const 2)))
    (call $r (i32.const 8) (call $continue (i32.const 0)))
    (call $r (i32.const 9) (call $effective (i32.const 99))))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $r (i32.const 10) (local.get $n))
    (call $r (i32.const 11) (local.get $eos))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $r (i32.const 12) (local.get $size))
    (call $r (i32.const 13) (local.get $eos))
    (i32.const 0))
  (func (export "proxy_on_log") (param $ctx i32) (call $r (i32.const 14) (i32.const 1)))
  (func (export "proxy_on_done") (param $ctx i32) (result i32) (call $r (i32.const 15) (i32.const 2)) (i32.const 1))
  (func (export "proxy_on_delete") (param $ctx i32) (call $r (i32.const 16) (i32.const 3))))
