;; Contexts and extras: a foreign function, an unknown one, set_effective_context to an unknown
;; id, on_foreign_function, and a root context that finishes its shutdown later with proxy_done.
(module
  (import "env" "proxy_call_foreign_function" (func $foreign (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_done" (func $done (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func $r (param $i i32) (param $v i32)
    (i32.store (i32.add (i32.const 256) (i32.shl (local.get $i) (i32.const 2))) (local.get $v)))
  (data (i32.const 2048) "reverse")  ;; 7
  (data (i32.const 2056) "abc")      ;; 3
  (data (i32.const 2064) "unknown")  ;; 7
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param $id i32) (param $parent i32)
    (call $r (i32.const 10) (local.get $id)))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $r (i32.const 0) (call $foreign (i32.const 2048) (i32.const 7) (i32.const 2056) (i32.const 3)
      (i32.const 1024) (i32.const 1028)))
    (call $r (i32.const 1) (i32.load (i32.const 1024)))
    (call $r (i32.const 2) (i32.load (i32.const 1028)))
    (call $r (i32.const 3) (call $foreign (i32.const 2064) (i32.const 7) (i32.const 2056) (i32.const 3)
      (i32.const 1024) (i32.const 1028)))
    (call $r (i32.const 4) (call $effective (i32.const 99)))
    (call $r (i32.const 5) (call $done))   ;; nothing pending → NOT_FOUND
    (i32.const 1))
  (func (export "proxy_on_foreign_function") (param $root i32) (param $id i32) (param $size i32)
    (call $r (i32.const 6) (local.get $id))
    (call $r (i32.const 7) (call $get_buffer (i32.const 8) (i32.const 0) (local.get $size) (i32.const 1032) (i32.const 1036)))
    (call $r (i32.const 8) (i32.load (i32.const 1032)))
    (call $r (i32.const 9) (i32.load (i32.const 1036))))
  (func (export "proxy_on_done") (param $id i32) (result i32)
    (call $r (i32.const 11) (local.get $id))
    (i32.const 0))   ;; not done yet: the host waits for proxy_done
  (func (export "proxy_on_tick") (param i32)
    (call $r (i32.const 12) (call $done)))
  (func (export "proxy_on_delete") (param $id i32)
    (call $r (i32.const 13) (local.get $id))))
