"""envoykit: extend Envoy in Python.

Sub-packages: ``core`` (shared server plumbing), ``authz`` (ext_authz), ``extproc`` (ext_proc),
``ratelimit`` (global rate limit), ``wasmhost`` (Proxy-Wasm test host), ``control`` (xDS control
plane and CA) and ``mesh`` (the local mesh runner).
"""

__version__ = "0.1.0"
