;; Properties as Envoy 1.40 serves them, read in on_request_headers ("q"), on_response_headers
;; ("s") and on_log ("l") and logged as "<cb><label>=<status>[:<value>]" for the diff. Values are
;; logged as text (mode 1), as an unsigned 64-bit number (2), only by size (0: times, durations) or
;; not at all (3: ports and Envoy's own node fields vary).
;;   a xds.node.id  b xds.node.metadata.team  c xds.cluster_name  d xds.route_name  e request.time
;;   f request.size  g upstream.address  h request.duration  i node.id  j node.metadata.team
;;   k xds.node  l xds.node.metadata.zone (a number)
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $gp (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 16)
  (global $heap (mut i32) (i32.const 32768))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (data (i32.const 5000) "\78\64\73\00\6e\6f\64\65\00\69\64")
  (data (i32.const 5016) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\74\65\61\6d")
  (data (i32.const 5040) "\78\64\73\00\63\6c\75\73\74\65\72\5f\6e\61\6d\65")
  (data (i32.const 5064) "\78\64\73\00\72\6f\75\74\65\5f\6e\61\6d\65")
  (data (i32.const 5080) "\72\65\71\75\65\73\74\00\74\69\6d\65")
  (data (i32.const 5096) "\72\65\71\75\65\73\74\00\73\69\7a\65")
  (data (i32.const 5112) "\75\70\73\74\72\65\61\6d\00\61\64\64\72\65\73\73")
  (data (i32.const 5136) "\72\65\71\75\65\73\74\00\64\75\72\61\74\69\6f\6e")
  (data (i32.const 5160) "\6e\6f\64\65\00\69\64")
  (data (i32.const 5168) "\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\74\65\61\6d")
  (data (i32.const 5192) "\78\64\73\00\6e\6f\64\65")
  (data (i32.const 5208) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\7a\6f\6e\65")
  (data (i32.const 4096) "\88\13\00\00\0b\00\00\00\01\00\00\00\61\00\00\00\98\13\00\00\16\00\00\00\01\00\00\00\62\00\00\00\b0\13\00\00\10\00\00\00\01\00\00\00\63\00\00\00\c8\13\00\00\0e\00\00\00\01\00\00\00\64\00\00\00\d8\13\00\00\0c\00\00\00\00\00\00\00\65\00\00\00\e8\13\00\00\0c\00\00\00\02\00\00\00\66\00\00\00\f8\13\00\00\10\00\00\00\03\00\00\00\67\00\00\00\10\14\00\00\10\00\00\00\00\00\00\00\68\00\00\00\28\14\00\00\07\00\00\00\03\00\00\00\69\00\00\00\30\14\00\00\12\00\00\00\03\00\00\00\6a\00\00\00\48\14\00\00\08\00\00\00\03\00\00\00\6b\00\00\00\58\14\00\00\16\00\00\00\01\00\00\00\6c\00\00\00")
  ;; decimal of a u64 at $p, returns the end
  (func $dec (param $p i32) (param $v i64) (result i32) (local $q i32) (local $n i64)
    (local.set $n (local.get $v)) (local.set $q (local.get $p))
    (loop $c (local.set $q (i32.add (local.get $q) (i32.const 1)))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10))) (br_if $c (i64.ne (local.get $n) (i64.const 0))))
    (local.set $p (local.get $q))
    (loop $d (local.set $q (i32.sub (local.get $q) (i32.const 1)))
      (i64.store8 (local.get $q) (i64.add (i64.const 48) (i64.rem_u (local.get $v) (i64.const 10))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10))) (br_if $d (i64.ne (local.get $v) (i64.const 0))))
    (local.get $p))
  (func $probe (param $cb i32) (local $i i32) (local $e i32) (local $rc i32) (local $p i32) (local $mode i32)
    (global.set $heap (i32.const 32768))  ;; each probe reuses the heap
    (loop $each
      (local.set $e (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 16))))
      (i32.store (i32.const 1024) (i32.const 0))
      (i32.store (i32.const 1028) (i32.const 0))
      (local.set $rc (call $gp (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)) (i32.const 1024) (i32.const 1028)))
      (local.set $mode (i32.load offset=8 (local.get $e)))
      (i32.store8 (i32.const 3000) (local.get $cb))
      (i32.store8 (i32.const 3001) (i32.load offset=12 (local.get $e)))
      (i32.store8 (i32.const 3002) (i32.const 61))
      (local.set $p (call $dec (i32.const 3003) (i64.extend_i32_u (local.get $rc))))
      (if (i32.eqz (local.get $rc)) (then
        (if (i32.ne (local.get $mode) (i32.const 3)) (then
          (i32.store8 (local.get $p) (i32.const 58))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))))
        (if (i32.eq (local.get $mode) (i32.const 0)) (then
          (local.set $p (call $dec (local.get $p) (i64.extend_i32_u (i32.load (i32.const 1028)))))))
        (if (i32.eq (local.get $mode) (i32.const 1)) (then
          (memory.copy (local.get $p) (i32.load (i32.const 1024)) (i32.load (i32.const 1028)))
          (local.set $p (i32.add (local.get $p) (i32.load (i32.const 1028))))))
        (if (i32.eq (local.get $mode) (i32.const 2)) (then
          (local.set $p (call $dec (local.get $p) (i64.load (i32.load (i32.const 1024)))))))))
      (drop (call $log (i32.const 2) (i32.const 3000) (i32.sub (local.get $p) (i32.const 3000))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $each (i32.lt_u (local.get $i) (i32.const 12)))))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $probe (i32.const 113)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $probe (i32.const 115)) (i32.const 0))
  (func (export "proxy_on_log") (param i32) (call $probe (i32.const 108))))
