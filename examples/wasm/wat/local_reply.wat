;; Local replies in their variants, chosen by the request path's first character after "/":
;;   j  400 with content-type application/json and a JSON body (the filter's content-type stays)
;;   e  204 without a body
;;   r  503, repeated x-a headers, body "50% off\n", gRPC status 14; returns CONTINUE anyway
;;   g  200 without a body but with gRPC status 7 (ignored for a non-gRPC request)
;;   w  status 0x100c8 with body "50% off\n": Envoy's status is 16 bits, so the client gets 200
;; For gRPC requests (content-type application/grpc) Envoy turns each into a trailers-only gRPC
;; answer; the differential test covers both kinds.
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $local (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (data (i32.const 2048) ":path")
  (data (i32.const 2064) "{\"a\":1}")  ;; 7
  (data (i32.const 2200) "50% off\n")  ;; 8
  ;; pairs {"content-type": "application/json"}: 4+8+13+17 = 42
  (data (i32.const 2080) "\01\00\00\00\0c\00\00\00\10\00\00\00content-type\00application/json\00")
  ;; pairs {"x-a": "1", "x-a": "2"}: 4+16+(3+1+1+1)*2 = 32
  (data (i32.const 2144) "\02\00\00\00\03\00\00\00\01\00\00\00\03\00\00\00\01\00\00\00x-a\001\00x-a\002\00")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $c i32)
    (drop (call $get (i32.const 0) (i32.const 2048) (i32.const 5) (i32.const 1024) (i32.const 1028)))
    (local.set $c (i32.load8_u (i32.add (i32.load (i32.const 1024)) (i32.const 1))))
    (if (i32.eq (local.get $c) (i32.const 106)) ;; j
      (then (drop (call $local (i32.const 400) (i32.const 0) (i32.const 0) (i32.const 2064) (i32.const 7) (i32.const 2080) (i32.const 42) (i32.const -1))) (return (i32.const 1))))
    (if (i32.eq (local.get $c) (i32.const 101)) ;; e: empty body
      (then (drop (call $local (i32.const 204) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1))) (return (i32.const 1))))
    (if (i32.eq (local.get $c) (i32.const 114)) ;; r: repeated headers, continue anyway
      (then (drop (call $local (i32.const 503) (i32.const 0) (i32.const 0) (i32.const 2200) (i32.const 8) (i32.const 2144) (i32.const 32) (i32.const 14))) (return (i32.const 0))))
    (if (i32.eq (local.get $c) (i32.const 103)) ;; g: grpc status with a plain request
      (then (drop (call $local (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 7))) (return (i32.const 1))))
    (if (i32.eq (local.get $c) (i32.const 119)) ;; w: a status past 16 bits
      (then (drop (call $local (i32.const 0x100c8) (i32.const 0) (i32.const 0) (i32.const 2200) (i32.const 8) (i32.const 0) (i32.const 0) (i32.const -1))) (return (i32.const 1))))
    (i32.const 0)))
