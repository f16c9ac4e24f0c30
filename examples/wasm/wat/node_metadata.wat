;; Node attributes as Envoy 1.40 serves them, read in on_request_headers and logged as
;; "<label>=<status>[:<value>]" for the diff: the value in hex (mode 1), its size only (mode 0;
;; the whole metadata map, whose order follows Envoy's hash map) or the status only (mode 2;
;; the whole Node message carries Envoy's own build and extension list).
;;   a xds.node.metadata
;;   b xds.node.metadata.team
;;   c xds.node.metadata.replicas
;;   d xds.node.metadata.canary
;;   e xds.node.metadata.labels
;;   f xds.node.metadata.labels.app
;;   g xds.node.metadata.ports
;;   h xds.node.metadata.ports.0
;;   i xds.node.metadata.nothing
;;   j xds.node.metadata.missing
;;   k xds.node.id
;;   l xds.node.cluster
;;   m xds.node.user_agent_name
;;   n xds.node
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $gp (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 16)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (data (i32.const 5000) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61")
  (data (i32.const 5024) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\74\65\61\6d")
  (data (i32.const 5048) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\72\65\70\6c\69\63\61\73")
  (data (i32.const 5080) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\63\61\6e\61\72\79")
  (data (i32.const 5112) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\6c\61\62\65\6c\73")
  (data (i32.const 5144) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\6c\61\62\65\6c\73\00\61\70\70")
  (data (i32.const 5176) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\70\6f\72\74\73")
  (data (i32.const 5200) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\70\6f\72\74\73\00\30")
  (data (i32.const 5232) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\6e\6f\74\68\69\6e\67")
  (data (i32.const 5264) "\78\64\73\00\6e\6f\64\65\00\6d\65\74\61\64\61\74\61\00\6d\69\73\73\69\6e\67")
  (data (i32.const 5296) "\78\64\73\00\6e\6f\64\65\00\69\64")
  (data (i32.const 5312) "\78\64\73\00\6e\6f\64\65\00\63\6c\75\73\74\65\72")
  (data (i32.const 5336) "\78\64\73\00\6e\6f\64\65\00\75\73\65\72\5f\61\67\65\6e\74\5f\6e\61\6d\65")
  (data (i32.const 5368) "\78\64\73\00\6e\6f\64\65")
  (data (i32.const 4096) "\88\13\00\00\11\00\00\00\00\00\00\00\61\00\00\00\a0\13\00\00\16\00\00\00\01\00\00\00\62\00\00\00\b8\13\00\00\1a\00\00\00\01\00\00\00\63\00\00\00\d8\13\00\00\18\00\00\00\01\00\00\00\64\00\00\00\f8\13\00\00\18\00\00\00\01\00\00\00\65\00\00\00\18\14\00\00\1c\00\00\00\01\00\00\00\66\00\00\00\38\14\00\00\17\00\00\00\01\00\00\00\67\00\00\00\50\14\00\00\19\00\00\00\01\00\00\00\68\00\00\00\70\14\00\00\19\00\00\00\01\00\00\00\69\00\00\00\90\14\00\00\19\00\00\00\01\00\00\00\6a\00\00\00\b0\14\00\00\0b\00\00\00\01\00\00\00\6b\00\00\00\c0\14\00\00\10\00\00\00\01\00\00\00\6c\00\00\00\d8\14\00\00\18\00\00\00\01\00\00\00\6d\00\00\00\f8\14\00\00\08\00\00\00\02\00\00\00\6e\00\00\00")
  (data (i32.const 4000) "0123456789abcdef")
  ;; decimal of a u32 at $p, returns the end
  (func $dec (param $p i32) (param $v i32) (result i32) (local $q i32) (local $n i32)
    (local.set $n (local.get $v)) (local.set $q (local.get $p))
    (loop $c (local.set $q (i32.add (local.get $q) (i32.const 1)))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10))) (br_if $c (i32.ne (local.get $n) (i32.const 0))))
    (local.set $p (local.get $q))
    (loop $d (local.set $q (i32.sub (local.get $q) (i32.const 1)))
      (i32.store8 (local.get $q) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10))) (br_if $d (i32.ne (local.get $v) (i32.const 0))))
    (local.get $p))
  ;; hex of $n bytes at $src written at $p, returns the end
  (func $hex (param $p i32) (param $src i32) (param $n i32) (result i32) (local $b i32)
    (block $done (loop $each
      (br_if $done (i32.eqz (local.get $n)))
      (local.set $b (i32.load8_u (local.get $src)))
      (i32.store8 (local.get $p) (i32.load8_u (i32.add (i32.const 4000) (i32.shr_u (local.get $b) (i32.const 4)))))
      (i32.store8 offset=1 (local.get $p) (i32.load8_u (i32.add (i32.const 4000) (i32.and (local.get $b) (i32.const 15)))))
      (local.set $p (i32.add (local.get $p) (i32.const 2)))
      (local.set $src (i32.add (local.get $src) (i32.const 1)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $each)))
    (local.get $p))
  (func $probe (local $i i32) (local $e i32) (local $rc i32) (local $p i32) (local $mode i32)
    (loop $each
      (local.set $e (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 16))))
      (i32.store (i32.const 1024) (i32.const 0))
      (i32.store (i32.const 1028) (i32.const 0))
      (local.set $rc (call $gp (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)) (i32.const 1024) (i32.const 1028)))
      (local.set $mode (i32.load offset=8 (local.get $e)))
      (i32.store8 (i32.const 8192) (i32.load offset=12 (local.get $e)))
      (i32.store8 (i32.const 8193) (i32.const 61))
      (local.set $p (call $dec (i32.const 8194) (local.get $rc)))
      (if (i32.and (i32.eqz (local.get $rc)) (i32.ne (local.get $mode) (i32.const 2))) (then
        (i32.store8 (local.get $p) (i32.const 58))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (if (i32.eqz (local.get $mode))
          (then (local.set $p (call $dec (local.get $p) (i32.load (i32.const 1028)))))
          (else (local.set $p (call $hex (local.get $p) (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))))))
      (drop (call $log (i32.const 2) (i32.const 8192) (i32.sub (local.get $p) (i32.const 8192))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $each (i32.lt_u (local.get $i) (i32.const 14)))))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $probe) (i32.const 0)))
