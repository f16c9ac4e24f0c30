;; Header maps: get (first value), missing key, add, replace, remove, byte size, pairs; a map
;; that is not available in this callback; set_header_map_pairs on the response.
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $size (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func $r (param $i i32) (param $v i32)
    (i32.store (i32.add (i32.const 256) (i32.shl (local.get $i) (i32.const 2))) (local.get $v)))
  (data (i32.const 2048) "X-A")          ;; 3, mixed case: Envoy lowercases keys
  (data (i32.const 2056) "x-missing")    ;; 9
  (data (i32.const 2072) "x-added")      ;; 7
  (data (i32.const 2080) "yes")          ;; 3
  (data (i32.const 2088) "x-b")          ;; 3
  (data (i32.const 2096) "two")          ;; 3
  (data (i32.const 2104) "x-gone")       ;; 6
  ;; pairs {"x-set": "1", "x-other": "2"}: 4 + 16 + (5+1+1+1) + (7+1+1+1) = 38 bytes
  (data (i32.const 2176) "\02\00\00\00\05\00\00\00\01\00\00\00\07\00\00\00\01\00\00\00x-set\001\00x-other\002\00")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $r (i32.const 0) (local.get $n))
    (call $r (i32.const 1) (call $get (i32.const 0) (i32.const 2048) (i32.const 3) (i32.const 1024) (i32.const 1028)))
    (call $r (i32.const 2) (i32.load (i32.const 1024)))   ;; value pointer (malloc'd)
    (call $r (i32.const 3) (i32.load (i32.const 1028)))   ;; value size
    (call $r (i32.const 4) (call $get (i32.const 0) (i32.const 2056) (i32.const 9) (i32.const 1024) (i32.const 1028)))
    (call $r (i32.const 5) (call $add (i32.const 0) (i32.const 2072) (i32.const 7) (i32.const 2080) (i32.const 3)))
    (call $r (i32.const 6) (call $replace (i32.const 0) (i32.const 2088) (i32.const 3) (i32.const 2096) (i32.const 3)))
    (call $r (i32.const 7) (call $remove (i32.const 0) (i32.const 2104) (i32.const 6)))
    (call $r (i32.const 8) (call $size (i32.const 0) (i32.const 1032)))
    (call $r (i32.const 9) (i32.load (i32.const 1032)))
    (call $r (i32.const 10) (call $pairs (i32.const 0) (i32.const 1024) (i32.const 1028)))
    (call $r (i32.const 11) (i32.load (i32.const 1024)))
    (call $r (i32.const 12) (i32.load (i32.const 1028)))
    ;; the response map does not exist yet: Envoy answers BAD_ARGUMENT / empty pairs
    (call $r (i32.const 13) (call $get (i32.const 2) (i32.const 2048) (i32.const 3) (i32.const 1024) (i32.const 1028)))
    (call $r (i32.const 14) (call $add (i32.const 2) (i32.const 2072) (i32.const 7) (i32.const 2080) (i32.const 3)))
    (call $r (i32.const 15) (call $pairs (i32.const 2) (i32.const 1024) (i32.const 1028)))
    (call $r (i32.const 16) (i32.load (i32.const 1028)))
    (call $r (i32.const 17) (call $size (i32.const 2) (i32.const 1032)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $r (i32.const 20) (call $set_pairs (i32.const 2) (i32.const 2176) (i32.const 38)))
    ;; request headers went upstream: no longer reachable
    (call $r (i32.const 21) (call $add (i32.const 0) (i32.const 2072) (i32.const 7) (i32.const 2080) (i32.const 3)))
    ;; malformed pairs read as an empty map (cpp-host toPairs)
    (call $r (i32.const 22) (call $set_pairs (i32.const 3) (i32.const 2176) (i32.const 10)))
    (i32.const 0)))
