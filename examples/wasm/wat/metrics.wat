;; Metrics: define each type, Envoy's increment/record/get rules per type.
(module
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $record (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func $r (param $i i32) (param $v i32)
    (i32.store (i32.add (i32.const 256) (i32.shl (local.get $i) (i32.const 2))) (local.get $v)))
  (data (i32.const 2048) "requests")  ;; 8
  (data (i32.const 2056) "active")    ;; 6
  (data (i32.const 2064) "latency")   ;; 7
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (local $c i32) (local $g i32) (local $h i32)
    (call $r (i32.const 0) (call $define (i32.const 0) (i32.const 2048) (i32.const 8) (i32.const 1024)))
    (local.set $c (i32.load (i32.const 1024)))
    (call $r (i32.const 1) (local.get $c))
    (drop (call $define (i32.const 1) (i32.const 2056) (i32.const 6) (i32.const 1024)))
    (local.set $g (i32.load (i32.const 1024)))
    (call $r (i32.const 2) (local.get $g))
    (drop (call $define (i32.const 2) (i32.const 2064) (i32.const 7) (i32.const 1024)))
    (local.set $h (i32.load (i32.const 1024)))
    (call $r (i32.const 3) (local.get $h))
    (call $r (i32.const 4) (call $define (i32.const 3) (i32.const 2048) (i32.const 8) (i32.const 1024)))
    (call $r (i32.const 5) (call $inc (local.get $c) (i64.const 5)))
    (call $r (i32.const 6) (call $inc (local.get $c) (i64.const -1)))   ;; counters only go up
    (call $r (i32.const 7) (call $inc (local.get $g) (i64.const 10)))
    (call $r (i32.const 8) (call $inc (local.get $g) (i64.const -3)))
    (call $r (i32.const 9) (call $inc (local.get $h) (i64.const 1)))    ;; not for histograms
    (call $r (i32.const 10) (call $record (local.get $h) (i64.const 42)))
    (call $r (i32.const 11) (call $record (local.get $c) (i64.const 2)))  ;; record adds to a counter
    (call $r (i32.const 12) (call $get (local.get $c) (i32.const 1040)))
    (call $r (i32.const 13) (i32.load (i32.const 1040)))
    (call $r (i32.const 14) (call $get (local.get $g) (i32.const 1040)))
    (call $r (i32.const 15) (i32.load (i32.const 1040)))
    (call $r (i32.const 16) (call $get (local.get $h) (i32.const 1040)))
    (call $r (i32.const 17) (call $inc (i32.const 4000) (i64.const 1)))  ;; unknown counter id
    (call $r (i32.const 18) (call $record (local.get $g) (i64.const 7)))  ;; record sets a gauge
    (i32.const 1)))
