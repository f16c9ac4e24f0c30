;; Properties: built-in attributes, test-set attributes, an unknown path, set then get.
(module
  (import "env" "proxy_get_property" (func $get (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func $r (param $i i32) (param $v i32)
    (i32.store (i32.add (i32.const 256) (i32.shl (local.get $i) (i32.const 2))) (local.get $v)))
  ;; (slot, path, size): get the property; slots i (status), i+1 (ptr), i+2 (size)
  (func $probe (param $i i32) (param $path i32) (param $size i32)
    (i32.store (i32.const 1024) (i32.const 0))
    (i32.store (i32.const 1028) (i32.const 0))
    (call $r (local.get $i) (call $get (local.get $path) (local.get $size) (i32.const 1024) (i32.const 1028)))
    (call $r (i32.add (local.get $i) (i32.const 1)) (i32.load (i32.const 1024)))
    (call $r (i32.add (local.get $i) (i32.const 2)) (i32.load (i32.const 1028))))
  (data (i32.const 2048) "plugin_root_id")        ;; 14
  (data (i32.const 2064) "request\00path")        ;; 12
  (data (i32.const 2080) "xds\00node\00id")        ;; 11
  (data (i32.const 2096) "no\00such\00thing")     ;; 13
  (data (i32.const 2112) "my_state")             ;; 8
  (data (i32.const 2128) "value")                ;; 5
  (data (i32.const 2144) "response\00code")       ;; 13
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $probe (i32.const 0) (i32.const 2048) (i32.const 14))
    ;; no stream: set_property has no stream info
    (call $r (i32.const 3) (call $set (i32.const 2112) (i32.const 8) (i32.const 2128) (i32.const 5)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $probe (i32.const 4) (i32.const 2064) (i32.const 12))
    (call $probe (i32.const 7) (i32.const 2080) (i32.const 11))
    (call $probe (i32.const 10) (i32.const 2096) (i32.const 13))
    (call $r (i32.const 13) (call $set (i32.const 2112) (i32.const 8) (i32.const 2128) (i32.const 5)))
    (call $probe (i32.const 14) (i32.const 2112) (i32.const 8))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $probe (i32.const 17) (i32.const 2144) (i32.const 13))
    (i32.const 0)))
