;; ABI 0.1.0 marker but a 0.2 (three-argument) proxy_on_request_headers: Envoy's V8 runtime
;; refuses it ("Bad function signature for: proxy_on_request_headers"), and so does the host.
(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))
