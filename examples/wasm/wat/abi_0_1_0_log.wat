;; An ABI 0.1.0 module that logs what 0.1.0 gives it, for the differential check: the header
;; count passed to the two-argument on_request_headers, the status and size of a missing header
;; (0.1.0: OK and empty; 0.2: NOT_FOUND) and the size of the configuration read with
;; proxy_get_configuration. Logs are "abi010 n=<count> missing=<status>/<size> config=<size>".
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_configuration" (func $get_config (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (global $config_size (mut i32) (i32.const 0))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (data (i32.const 2048) "x-missing")  ;; 9
  ;; "abi010 n=? missing=?/? config=?" with single digits patched in: 31 bytes at 2064
  (data (i32.const 2064) "abi010 n=? missing=?/? config=?")
  (func $digit (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10)))))
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (drop (call $get_config (i32.const 1024) (i32.const 1028)))
    (global.set $config_size (i32.load (i32.const 1028)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32) (local $rc i32)
    (i32.store (i32.const 1036) (i32.const 9))
    (local.set $rc (call $get (i32.const 0) (i32.const 2048) (i32.const 9) (i32.const 1032) (i32.const 1036)))
    (call $digit (i32.const 2073) (local.get $n))
    (call $digit (i32.const 2083) (local.get $rc))
    (call $digit (i32.const 2085) (i32.load (i32.const 1036)))
    (call $digit (i32.const 2094) (global.get $config_size))
    (drop (call $log (i32.const 2) (i32.const 2064) (i32.const 31)))
    (i32.const 0)))
