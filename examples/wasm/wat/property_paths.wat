;; proxy_get_property's path rules against Envoy 1.40: segments split at NUL, one trailing NUL
;; allowed, an empty path SERIALIZATION_FAILURE, "\0" alone NOT_FOUND, Envoy's CEL wrapper maps
;; (request, response, connection, upstream, source, destination, xds, filter_state) read whole
;; SERIALIZATION_FAILURE, headers out of reach an empty map, dynamic metadata an empty message.
;; Each path is read in on_request_headers (A), on_response_headers (B) and on_log (C: the
;; response headers there carry Envoy's date and server), logged as
;; "<phase><path letter>=<status * 1000000 + returned size>". malloc grows memory by a page per
;; call (every returned value lands past the memory's size when the host call began).
;;   a  b''
;;   b  b'request'
;;   c  b'request\x00'
;;   d  b'request\x00\x00'
;;   e  b'request\x00path\x00'
;;   f  b'request\x00path\x00\x00'
;;   g  b'response'
;;   h  b'connection'
;;   i  b'upstream'
;;   j  b'source'
;;   k  b'destination'
;;   l  b'xds'
;;   m  b'xds\x00node\x00metadata'
;;   n  b'request\x00headers'
;;   o  b'source\x00address'
;;   p  b'plugin_name\x00'
;;   q  b'metadata'
;;   r  b'filter_state'
;;   s  b'\x00'
;;   t  b'nosuch\x00'
;;   u  b'request\x00path\x00x'
;;   v  b'response\x00headers'
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $gp (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "malloc") (param $n i32) (result i32) (local $old i32)
    (local.set $old (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const 16)) (i32.const 1))))
    (if (i32.eq (local.get $old) (i32.const -1)) (then (return (i32.const 0))))
    (i32.shl (local.get $old) (i32.const 16)))
  (data (i32.const 4096) "")
  (data (i32.const 4100) "request")
  (data (i32.const 4111) "request\00")
  (data (i32.const 4123) "request\00\00")
  (data (i32.const 4136) "request\00path\00")
  (data (i32.const 4153) "request\00path\00\00")
  (data (i32.const 4171) "response")
  (data (i32.const 4183) "connection")
  (data (i32.const 4197) "upstream")
  (data (i32.const 4209) "source")
  (data (i32.const 4219) "destination")
  (data (i32.const 4234) "xds")
  (data (i32.const 4241) "xds\00node\00metadata")
  (data (i32.const 4262) "request\00headers")
  (data (i32.const 4281) "source\00address")
  (data (i32.const 4299) "plugin_name\00")
  (data (i32.const 4315) "metadata")
  (data (i32.const 4327) "filter_state")
  (data (i32.const 4343) "\00")
  (data (i32.const 4348) "nosuch\00")
  (data (i32.const 4359) "request\00path\00x")
  (data (i32.const 4377) "response\00headers")
  (data (i32.const 8192) "\00\10\00\00\00\00\00\00\04\10\00\00\07\00\00\00\0f\10\00\00\08\00\00\00\1b\10\00\00\09\00\00\00\28\10\00\00\0d\00\00\00\39\10\00\00\0e\00\00\00\4b\10\00\00\08\00\00\00\57\10\00\00\0a\00\00\00\65\10\00\00\08\00\00\00\71\10\00\00\06\00\00\00\7b\10\00\00\0b\00\00\00\8a\10\00\00\03\00\00\00\91\10\00\00\11\00\00\00\a6\10\00\00\0f\00\00\00\b9\10\00\00\0e\00\00\00\cb\10\00\00\0c\00\00\00\db\10\00\00\08\00\00\00\e7\10\00\00\0c\00\00\00\f7\10\00\00\01\00\00\00\fc\10\00\00\07\00\00\00\07\11\00\00\0e\00\00\00\19\11\00\00\10\00\00\00")  ;; (pointer, size) per path
  ;; log "ab=<decimal u32>": digits written backwards from 3020, then the label before them
  (func $num (param $a i32) (param $b i32) (param $v i32) (local $p i32)
    (local.set $p (i32.const 3020))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digits (local.get $v)))
    (local.set $p (i32.sub (local.get $p) (i32.const 3)))
    (i32.store8 (local.get $p) (local.get $a))
    (i32.store8 (i32.add (local.get $p) (i32.const 1)) (local.get $b))
    (i32.store8 (i32.add (local.get $p) (i32.const 2)) (i32.const 61))
    (drop (call $log (i32.const 2) (local.get $p) (i32.sub (i32.const 3020) (local.get $p)))))
  (func $all (param $phase i32) (param $n i32) (local $i i32) (local $rc i32)
    (loop $l
      (i32.store (i32.const 1028) (i32.const 0))
      (local.set $rc (call $gp (i32.load (i32.add (i32.const 8192) (i32.shl (local.get $i) (i32.const 3))))
                               (i32.load (i32.add (i32.const 8196) (i32.shl (local.get $i) (i32.const 3))))
                               (i32.const 1024) (i32.const 1028)))
      (call $num (local.get $phase) (i32.add (i32.const 97) (local.get $i))
        (i32.add (i32.mul (local.get $rc) (i32.const 1000000)) (i32.load (i32.const 1028))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n)))))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $all (i32.const 65) (i32.const 22)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $all (i32.const 66) (i32.const 22)) (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (call $all (i32.const 67) (i32.const 22))))
