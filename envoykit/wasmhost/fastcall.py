"""Direct i32/i64 calls across the wasmtime C API, skipping wasmtime-py's per-call conversions.

wasmtime-py's ``Func.__call__`` looks the function's type up and wraps every value in ``Val`` on
each call, and its host-function trampoline does the same for results; that is most of the cost of
a Proxy-Wasm callback. Every Proxy-Wasm callback and host function takes and returns only i32/i64,
so calls go through the C API's *unchecked* entry points (raw value arrays, no type tags), whose
types the ABI check has already verified. This uses wasmtime-py internals (``_ffi``,
``_func.LAST_EXCEPTION``); :data:`ENABLED` is false, and the public API is used, if they are
missing or ``$ENVOYKIT_WASM_SLOW_CALLS`` is set.
"""

from __future__ import annotations

import ctypes
import itertools
import os
from collections.abc import Callable
from typing import Any

import wasmtime

try:
    from wasmtime import _bindings as raw
    from wasmtime import _ffi as ffi
    from wasmtime import _func as wfunc

    ENABLED = not os.environ.get("ENVOYKIT_WASM_SLOW_CALLS") and all(
        hasattr(x, y)
        for x, y in (
            (raw, "_wasmtime_func_call_unchecked"),
            (raw, "_wasmtime_linker_define_func_unchecked"),
            (raw, "_wasmtime_context_set_fuel"),
            (ffi, "wasmtime_func_unchecked_callback_t"),
            (ffi, "wasmtime_val_raw_t"),
            (wfunc, "maybe_raise_last_exn"),
            (wfunc, "LAST_EXCEPTION"),
        )
    )
except (ImportError, AttributeError):  # pragma: no cover - depends on the wasmtime-py version
    ENABLED = False

Caller = Callable[..., Any]


def caller(func: wasmtime.Func, store: wasmtime.Store, params: str, results: str) -> Caller:
    """A callable ``(store, *ints) -> int | None`` for an export, its result read as a u32.

    ``params`` / ``results`` are the export's value kinds (``"i"`` i32, ``"I"`` i64, anything else
    makes it take the public path). The all-integer ones are called through
    ``wasmtime_func_call_unchecked`` with one preallocated raw value array per function (a nested
    call of the same function gets its own).
    """
    if not ENABLED or any(k not in "iI" for k in params + results):

        def slow(store: wasmtime.Store, *args: int) -> int | None:
            result = func(store, *args)
            return result & 0xFFFFFFFF if isinstance(result, int) else None

        return slow
    fref = ctypes.byref(func._func)
    context = store._context()
    size = max(len(params), len(results), 1)
    raw_t = ffi.wasmtime_val_raw_t * size
    call_unchecked = raw._wasmtime_func_call_unchecked
    trap_t = ctypes.POINTER(ffi.wasm_trap_t)
    n_results = len(results)
    i64_result = results == "I"
    free = [raw_t()]

    def call(store: wasmtime.Store, *args: int) -> int | None:
        vals = free.pop() if free else raw_t()
        try:
            for i, value in enumerate(args):
                if params[i] == "i":
                    vals[i].i32 = value  # ctypes keeps the low 32 bits: u32 and i32 alike
                else:
                    vals[i].i64 = value
            trap = trap_t()
            error = call_unchecked(context, fref, vals, size, ctypes.byref(trap))
            if error:
                wfunc.maybe_raise_last_exn()
                raise wasmtime.WasmtimeError._from_ptr(error)
            if trap:
                failure = wasmtime.Trap._from_ptr(trap)
                wfunc.maybe_raise_last_exn()  # a host function's exception wins, as in wasmtime-py
                raise failure
            if not n_results:
                return None
            return int(vals[0].i64) if i64_result else vals[0].i32 & 0xFFFFFFFF  # u32, as cpp-host reads it
        finally:
            free.append(vals)

    return call


_TABLE: dict[int, tuple[Callable[..., Any], str, str]] = {}
_ids = itertools.count(1)


def kinds(types: list[wasmtime.ValType]) -> str:
    """``"i"`` per i32 and ``"I"`` per i64 (``"?"`` for any other type)."""
    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
    return "".join("i" if t == i32 else "I" if t == i64 else "?" for t in types)


def set_fuel(store: wasmtime.Store) -> Callable[[int], None]:
    """A fast ``store.set_fuel`` (once per callback: the loop guard's budget)."""
    if not ENABLED:
        return store.set_fuel
    context = store._context()
    set_raw = raw._wasmtime_context_set_fuel

    def set_(fuel: int) -> None:
        error = set_raw(context, fuel)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)

    return set_


def memory_view(store: wasmtime.Store, memory: wasmtime.Memory) -> Callable[[], tuple[int, int]] | None:
    """A fast ``() -> (base address, length)`` of ``memory`` (two plain C calls), or ``None``."""
    if not ENABLED:
        return None
    try:
        data = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
            ("wasmtime_memory_data", raw.dll)
        )
        size = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p)(
            ("wasmtime_memory_data_size", raw.dll)
        )
        context = ctypes.cast(store._context(), ctypes.c_void_p).value
        mem = ctypes.addressof(memory._memory)
    except (AttributeError, TypeError):  # pragma: no cover - depends on the wasmtime-py version
        return None

    def view() -> tuple[int, int]:
        return data(context, mem) or 0, size(context, mem)

    return view


def _trampoline(idx: int, _caller: Any, vals: Any, _n: int) -> int:
    try:
        fn, kinds, result = _TABLE[idx or 0]
        # Every i32 of the ABI is a u32 (sizes, offsets, pointers, ids): cpp-host reads them with
        # ``get<uint32_t>()``, so 0xffffffff is 4294967295, never -1. i64s stay signed: the one
        # signed parameter is ``proxy_increment_metric``'s delta; u64 users mask it themselves.
        if "I" not in kinds:
            value = fn(*[vals[i].i32 & 0xFFFFFFFF for i in range(len(kinds))])
        else:
            value = fn(*[vals[i].i32 & 0xFFFFFFFF if k == "i" else vals[i].i64 for i, k in enumerate(kinds)])
        if result == "i":
            vals[0].i32 = int(value)
        elif result == "I":
            vals[0].i64 = int(value)
        return 0
    except BaseException as exc:  # re-raised after the call unwinds, as wasmtime-py does
        wfunc.LAST_EXCEPTION = exc  # type: ignore[assignment]
        trap = wasmtime.Trap("python exception")._consume()
        return int(ctypes.cast(trap, ctypes.c_void_p).value or 0)


def _finalize(idx: int) -> None:
    _TABLE.pop(idx or 0, None)


if ENABLED:
    _TRAMPOLINE = ffi.wasmtime_func_unchecked_callback_t(_trampoline)
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
    error = raw._wasmtime_linker_define_func_unchecked(
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
