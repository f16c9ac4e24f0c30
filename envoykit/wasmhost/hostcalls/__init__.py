"""Host functions, one module per family (like proxy-wasm-go-sdk's proxytest split).

Each family module has a ``FUNCTIONS`` table: import name → (signature, implementation). A
signature is ``"params>results"`` with ``i`` for i32 and ``I`` for i64. Implementations take the
:class:`~envoykit.wasmhost.vm.VM` first, then the raw arguments, and return the status code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import wasmtime

from envoykit.wasmhost.abi import AbiVersion, Status
from envoykit.wasmhost.errors import OutOfBounds
from envoykit.wasmhost.hostcalls import (
    buffers,
    callouts,
    context,
    headers,
    logging,
    metrics,
    properties,
    shared,
    stream,
    wasi,
)
from envoykit.wasmhost.hostcalls.table import HostFn, Table


@dataclass(frozen=True)
class Entry:
    """A host function ready to link: its wasm type, signature string and the implementation."""

    functype: wasmtime.FuncType
    fn: HostFn
    sig: str
    raw: HostFn | None = None  # ``fn`` before the guard, with ``fault`` its bad-pointer answer
    fault: int | None = None


def _functype(sig: str) -> wasmtime.FuncType:
    params, _, results = sig.partition(">")
    kinds = {"i": wasmtime.ValType.i32, "I": wasmtime.ValType.i64}
    return wasmtime.FuncType([kinds[c]() for c in params], [kinds[c]() for c in results])


def _guard(fn: HostFn, fault: int) -> HostFn:
    """Map a bad guest pointer to ``fault`` (INVALID_MEMORY_ACCESS, or WASI EFAULT)."""

    def run(vm: Any, *args: Any) -> Any:
        try:
            return fn(vm, *args)
        except OutOfBounds:
            return fault

    return run


@cache
def host_functions(version: AbiVersion) -> dict[tuple[str, str], Entry]:
    """Every host function cpp-host registers for ``version`` (``src/wasm.cc`` registerCallbacks).

    Common to all versions: the ``FOR_ALL_HOST_FUNCTIONS`` set, WASI under both
    ``wasi_unstable`` and ``wasi_snapshot_preview1``, ``env.pthread_equal`` and
    ``env.emscripten_notify_memory_growth``. 0.1.0 adds ``proxy_get_configuration``,
    ``proxy_continue_request/response`` and ``proxy_clear_route_cache``; 0.2.0 adds
    ``proxy_continue_stream`` and ``proxy_close_stream``; 0.2.1 also ``proxy_get_log_level``.
    """
    table: Table = {}
    for family in (buffers, callouts, context, headers, logging, metrics, properties, shared, stream):
        table.update(family.FUNCTIONS)
    if version is AbiVersion.V0_1_0:
        table.update(buffers.ABI_0_1_0)
        table.update(stream.ABI_0_1_0)
    else:
        table.update(stream.ABI_0_2_0)
        if version is AbiVersion.V0_2_1:
            table.update(logging.ABI_0_2_1)
    out: dict[tuple[str, str], Entry] = {}
    for name, (sig, fn) in table.items():
        fault = int(Status.INVALID_MEMORY_ACCESS)
        out[("env", name)] = Entry(_functype(sig), _guard(fn, fault), sig, fn, fault)
    for name, (sig, extra) in context.ENV_EXTRAS.items():
        out[("env", name)] = Entry(_functype(sig), extra, sig)
    for name, (sig, wasi_fn) in wasi.FUNCTIONS.items():
        entry = Entry(_functype(sig), _guard(wasi_fn, wasi.EFAULT), sig, wasi_fn, wasi.EFAULT)
        out[("wasi_snapshot_preview1", name)] = entry
        out[("wasi_unstable", name)] = entry
    return out
