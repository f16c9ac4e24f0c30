;; A filter that panics the way SDK filters do: it logs a multi-line message at ERROR, then traps.
;; A request carrying "x-panic: request" traps in on_request_headers, "x-panic: response" in
;; on_response_headers, "x-panic: callout" in on_http_call_response (after a callout to cluster
;; "auth" that paused the request); other requests log "headers", "response" and the end-of-stream callbacks.
;; Envoy then fails the VM: the stream gets a 503 with an empty body, later ones per its policy.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $ghv (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (global $where (mut i32) (i32.const 0))  ;; 0 none, 1 request, 2 response, 3 callout
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (data (i32.const 2048) "x-panic")
  (data (i32.const 2064) "panicked at src/lib.rs:7:9:\nboom: the filter gave up\nnote: run with RUST_BACKTRACE=1")
  (data (i32.const 2200) "headers")
  (data (i32.const 2208) "response")
  (data (i32.const 2216) "log")
  (data (i32.const 2220) "done")
  (data (i32.const 2224) "delete")
  (data (i32.const 2232) "vm start")
  (data (i32.const 2248) "auth")
  (data (i32.const 2256) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\04\00\00\00:method\00GET\00:path\00/\00:authority\00auth\00")
  (func $say (param $p i32) (param $n i32) (drop (call $log (i32.const 2) (local.get $p) (local.get $n))))
  (func $panic
    (drop (call $log (i32.const 4) (i32.const 2064) (i32.const 84)))
    unreachable)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $say (i32.const 2232) (i32.const 8))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $where (i32.const 0))
    (if (i32.eqz (call $ghv (i32.const 0) (i32.const 2048) (i32.const 7) (i32.const 1024) (i32.const 1028)))
      (then
        (global.set $where (i32.const 2))
        (if (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 1024)) (i32.const 2))) (i32.const 113))  ;; "req"
          (then (global.set $where (i32.const 1))))
        (if (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 1024)) (i32.const 2))) (i32.const 108))  ;; "cal"
          (then (global.set $where (i32.const 3))))))
    (if (i32.eq (global.get $where) (i32.const 1)) (then (call $panic)))
    (if (i32.eq (global.get $where) (i32.const 3)) (then
      (drop (call $call (i32.const 2248) (i32.const 4) (i32.const 2256) (i32.const 64) (i32.const 0) (i32.const 0)
                        (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 1024)))
      (return (i32.const 1))))
    (call $say (i32.const 2200) (i32.const 7))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.eq (global.get $where) (i32.const 2)) (then (call $panic)))
    (call $say (i32.const 2208) (i32.const 8))
    (i32.const 0))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32) (call $panic))
  (func (export "proxy_on_log") (param i32) (call $say (i32.const 2216) (i32.const 3)))
  (func (export "proxy_on_done") (param i32) (result i32) (call $say (i32.const 2220) (i32.const 4)) (i32.const 1))
  (func (export "proxy_on_delete") (param i32) (call $say (i32.const 2224) (i32.const 6))))
