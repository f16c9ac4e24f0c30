;; A filter whose VM state shows which VM answered: it counts requests in a global and logs
;; "request N in context C" (one digit each) on every request, "vm start" and "configure" at
;; start-up. A request with "x-panic" logs an error and traps. With failure_policy FAIL_RELOAD
;; Envoy replaces the failed VM on a later stream: start-up runs again in that request, the
;; count starts over and context ids start over from the new root context.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $ghv (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (global $count (mut i32) (i32.const 0))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (data (i32.const 1024) "x-panic")
  (data (i32.const 1040) "panicked: the filter gave up")
  (data (i32.const 1088) "vm start")
  (data (i32.const 1104) "configure")
  (data (i32.const 1120) "request ? in context ?")
  (func $say (param $p i32) (param $n i32) (drop (call $log (i32.const 2) (local.get $p) (local.get $n))))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $say (i32.const 1088) (i32.const 8))
    (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (call $say (i32.const 1104) (i32.const 9))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (if (i32.eqz (call $ghv (i32.const 0) (i32.const 1024) (i32.const 7) (i32.const 512) (i32.const 516)))
      (then
        (drop (call $log (i32.const 4) (i32.const 1040) (i32.const 28)))
        unreachable))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store8 (i32.const 1128) (i32.add (i32.const 48) (global.get $count)))
    (i32.store8 (i32.const 1141) (i32.add (i32.const 48) (local.get $ctx)))
    (call $say (i32.const 1120) (i32.const 22))
    (i32.const 0)))
