;; Buffers: plugin and VM configuration (read-only, available only where Envoy has them), body
;; buffers with Envoy's set_buffer_bytes rules (prepend, replace, append, refuse the rest).
(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func $r (param $i i32) (param $v i32)
    (i32.store (i32.add (i32.const 256) (i32.shl (local.get $i) (i32.const 2))) (local.get $v)))
  (data (i32.const 2048) "<")
  (data (i32.const 2056) ">")
  (data (i32.const 2064) "X")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param $root i32) (param $size i32) (result i32)
    (call $r (i32.const 0) (local.get $size))
    (call $r (i32.const 1) (call $status (i32.const 6) (i32.const 1032) (i32.const 1036)))
    (call $r (i32.const 2) (i32.load (i32.const 1032)))
    ;; plugin configuration only during on_configure
    (call $r (i32.const 3) (call $status (i32.const 7) (i32.const 1032) (i32.const 1036)))
    (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (call $r (i32.const 4) (local.get $size))
    ;; bytes 2..5 of the plugin configuration
    (call $r (i32.const 5) (call $get (i32.const 7) (i32.const 2) (i32.const 3) (i32.const 1024) (i32.const 1028)))
    (call $r (i32.const 6) (i32.load (i32.const 1024)))
    (call $r (i32.const 7) (i32.load (i32.const 1028)))
    ;; a zero-length read: OK with pointer 0, size 0
    (i32.store (i32.const 1024) (i32.const 77))
    (call $r (i32.const 8) (call $get (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const 1028)))
    (call $r (i32.const 9) (i32.load (i32.const 1024)))
    ;; configuration is read-only
    (call $r (i32.const 10) (call $set (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 2048) (i32.const 1)))
    ;; an unknown buffer type
    (call $r (i32.const 11) (call $status (i32.const 42) (i32.const 1032) (i32.const 1036)))
    (i32.const 1))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $r (i32.const 12) (local.get $size))
    (if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))  ;; buffer until the end
    (call $r (i32.const 13) (call $set (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 2048) (i32.const 1)))
    (call $r (i32.const 14) (call $set (i32.const 0) (i32.const 1000) (i32.const 0) (i32.const 2056) (i32.const 1)))
    (call $r (i32.const 15) (call $set (i32.const 0) (i32.const 1) (i32.const 1) (i32.const 2064) (i32.const 1)))
    (call $r (i32.const 16) (call $status (i32.const 0) (i32.const 1032) (i32.const 1036)))
    (call $r (i32.const 17) (i32.load (i32.const 1032)))
    (i32.const 0))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    ;; replace the whole response body with "X"
    (call $r (i32.const 18) (call $set (i32.const 1) (i32.const 0) (local.get $size) (i32.const 2064) (i32.const 1)))
    (i32.const 0)))
