;; Failure modes, chosen by the request path's first character after "/":
;;   t  a trap (unreachable)    l  an endless loop    m  grow memory until refused, then trap
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (data (i32.const 2048) ":path")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (local $c i32)
    (drop (call $get (i32.const 0) (i32.const 2048) (i32.const 5) (i32.const 1024) (i32.const 1028)))
    (local.set $c (i32.load8_u (i32.add (i32.load (i32.const 1024)) (i32.const 1))))
    (if (i32.eq (local.get $c) (i32.const 116)) (then unreachable))          ;; 't'
    (if (i32.eq (local.get $c) (i32.const 108)) (then (loop $spin (br $spin))))  ;; 'l'
    (if (i32.eq (local.get $c) (i32.const 109))                               ;; 'm'
      (then
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))
    (i32.const 0)))
