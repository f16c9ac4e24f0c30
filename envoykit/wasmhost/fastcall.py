"""Direct i32/i64 calls across the wasmtime C API, skipping wasmtime-py's per-call conversions.

wasmtime-py's ``Func.__call__`` looks the function's type up and wraps every value in ``Val`` on
each call, and its host-function trampoline does the same for results; that is most of the cost of
a Proxy-Wasm callback. Every Proxy-Wasm callback and host function takes and returns only i32/i64,
so the value arrays can be filled directly. This uses wasmtime-py internals (``_ffi``,
``_func.enter_wasm``, ``_func.LAST_EXCEPTION``); :data:`ENABLED` is false, and the public API is
used, if they are missing or ``$ENVOYKIT_WASM_SLOW_CALLS`` is set.
"""

from __future__ import annotations

import ctypes
import itertools
import os
from collections.abc import Callable
from typing import Any

import wasmtime

try:
    from wasmtime import _ffi as ffi
    from wasmtime import _func as wfunc

    _I32 = ffi.WASMTIME_I32.value
    _I64 = ffi.WASMTIME_I64.value
    ENABLED = not os.environ.get("ENVOYKIT_WASM_SLOW_CALLS") and all(
        hasattr(x, y)
        for x, y in (
            (ffi, "wasmtime_func_call"),
            (ffi, "wasmtime_linker_define_func"),
            (ffi, "wasmtime_func_callback_t"),
            (wfunc, "enter_wasm"),
            (wfunc, "LAST_EXCEPTION"),
        )
    )
except (ImportError, AttributeError):  # pragma: no cover - depends on the wasmtime-py version
    ENABLED = False

Caller = Callable[..., Any]


def caller(func: wasmtime.Func, n_params: int, n_results: int) -> Caller:
    """A callable ``(store, *ints) -> int | None`` for an all-i32 export (checked by the ABI check)."""
    if not ENABLED:

        def slow(store: wasmtime.Store, *args: int) -> int | None:
            result = func(store, *args)
            return result & 0xFFFFFFFF if isinstance(result, int) else None

        return slow
    fref = ctypes.byref(func._func)
    params_t = ffi.wasmtime_val_t * max(n_params, 1)
    results_t = ffi.wasmtime_val_t * max(n_results, 1)

    def call(store: wasmtime.Store, *args: int) -> int | None:
        params = params_t()
        for i, value in enumerate(args):
            params[i].kind = _I32  # type: ignore[assignment]
            params[i].of.i32 = value
        results = results_t()
        with wfunc.enter_wasm(store) as trap:
            error = ffi.wasmtime_func_call(store._context(), fref, params, n_params, results, n_results, trap)
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        return int(results[0].of.i32) & 0xFFFFFFFF if n_results else None  # u32, as cpp-host reads it

    return call


_TABLE: dict[int, tuple[Callable[..., Any], str, str]] = {}
_ids = itertools.count(1)


def _trampoline(idx: int, _caller: Any, params: Any, nparams: int, results: Any, nresults: int) -> int:
    try:
        fn, kinds, result = _TABLE[idx or 0]
        # Every i32 of the ABI is a u32 (sizes, offsets, pointers, ids): cpp-host reads them with
        # ``get<uint32_t>()``, so 0xffffffff is 4294967295, never -1. i64s stay signed: the one
        # signed parameter is ``proxy_increment_metric``'s delta; u64 users mask it themselves.
        args = [params[i].of.i32 & 0xFFFFFFFF if k == "i" else params[i].of.i64 for i, k in enumerate(kinds)]
        value = fn(*args)
        if nresults:
            if result == "i":
                results[0].kind = _I32
                results[0].of.i32 = int(value)
            else:
                results[0].kind = _I64
                results[0].of.i64 = int(value)
        return 0
    except BaseException as exc:  # re-raised by enter_wasm once the call unwinds, as wasmtime-py does
        wfunc.LAST_EXCEPTION = exc  # type: ignore[assignment]
        trap = wasmtime.Trap("python exception")._consume()
        return int(ctypes.cast(trap, ctypes.c_void_p).value or 0)


def _finalize(idx: int) -> None:
    _TABLE.pop(idx or 0, None)


if ENABLED:
    _TRAMPOLINE = ffi.wasmtime_func_callback_t(_trampoline)
    _FINALIZE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_finalize)


def _unsigned(fn: Callable[..., Any], kinds: str) -> Callable[..., Any]:
    """``fn`` with its i32 arguments read as u32, as the fast trampoline reads them."""

    def call(*args: int) -> Any:
        return fn(*(a & 0xFFFFFFFF if k == "i" else a for a, k in zip(args, kinds, strict=True)))

    return call


def define(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    functype: wasmtime.FuncType,
    sig: str,
    fn: Callable[..., Any],
) -> None:
    """Define host function ``module.name`` with signature ``sig`` (``"iI>i"``: i32, i64 → i32).

    Raises:
        wasmtime.WasmtimeError: the linker refused the definition.
    """
    params, _, results = sig.partition(">")
    if not ENABLED:
        linker.define_func(module, name, functype, _unsigned(fn, params))
        return
    idx = next(_ids)
    _TABLE[idx] = (fn, params, results)
    mod, nm = module.encode(), name.encode()
    error = ffi.wasmtime_linker_define_func(
        linker.ptr(),
        ctypes.create_string_buffer(mod),
        len(mod),
        ctypes.create_string_buffer(nm),
        len(nm),
        functype.ptr(),
        _TRAMPOLINE,
        idx,
        _FINALIZE,
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
