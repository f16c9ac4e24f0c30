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
import struct
import weakref
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


def _raw_call(name: str) -> Any:
    """C function ``name`` returning a pointer, called holding the GIL (``PYFUNCTYPE``) and
    without declared argument types: its arguments are the ``from_param`` objects made once per
    function (:func:`_arg`), which ctypes copies as they are (declared types would run a
    converter and build a new argument object for each, every call). Releasing the GIL costs
    more than most callbacks, and every host function the module calls takes it back at once;
    a runaway callback is cut short by its fuel budget."""
    return ctypes.PYFUNCTYPE(ctypes.c_void_p)((name, raw.dll))


def _arg(ctype: Any, value: int) -> Any:
    """The ctypes argument object for ``value`` as a ``ctype`` (a C pointer or integer)."""
    return ctype.from_param(value)


def caller(func: wasmtime.Func, store: wasmtime.Store, params: str, results: str) -> Caller:
    """A callable ``(store, *ints) -> int | None`` for an export, its result read as a u32.

    ``params`` / ``results`` are the export's value kinds (``"i"`` i32, ``"I"`` i64, anything else
    makes it take the public path). The all-integer ones are called through
    ``wasmtime_func_call_unchecked`` with one preallocated raw value array per function, written
    and read through u32 / i64 views of it (a nested call of the same function gets its own).
    """
    if not ENABLED or any(k not in "iI" for k in params + results):

        def slow(store: wasmtime.Store, *args: int) -> int | None:
            result = func(store, *args)
            return result & 0xFFFFFFFF if isinstance(result, int) else None

        return slow
    call_raw = _CALL_UNCHECKED
    # The C call's arguments are ctypes objects made once: a Python int argument costs ctypes a
    # format-table search and a new argument object on every call.
    fref = _arg(ctypes.c_void_p, ctypes.addressof(func._func))
    context = _arg(ctypes.c_void_p, ctypes.cast(store._context(), ctypes.c_void_p).value or 0)
    size = max(len(params), len(results), 1)
    c_size = _arg(ctypes.c_size_t, size)
    n_results = len(results)
    i64_result = results == "I"
    all_i32 = "I" not in params
    end = 4 * len(params)  # the u32 slots of the arguments: 0, 4, 8... below this

    def buffers() -> tuple[Any, Any, Any, tuple[Any, ...]]:
        vals = (ffi.wasmtime_val_raw_t * size)()
        trap = (ctypes.c_void_p * 1)()
        u32 = (ctypes.c_uint32 * (4 * size)).from_buffer(vals)  # a raw value is 16 bytes, i32 first
        i64 = (ctypes.c_int64 * (2 * size)).from_buffer(vals)
        at = ctypes.addressof
        return (
            u32,
            i64,
            trap,
            (context, fref, _arg(ctypes.c_void_p, at(vals)), c_size, _arg(ctypes.c_void_p, at(trap))),
        )

    own = buffers()
    busy = [False]

    def call(store: wasmtime.Store, *args: int) -> int | None:
        if busy[0]:  # re-entered (the module called back into itself through a host function)
            u32, i64, trap, c_args = buffers()
        else:
            u32, i64, trap, c_args = own
            busy[0] = True
        try:
            if all_i32:
                # One slice store; a c_uint32 store keeps the low 32 bits of each argument (u32
                # and i32 alike, as cpp-host passes them).
                u32[0:end:4] = args
            else:
                for i, value in enumerate(args):
                    if params[i] == "i":
                        u32[4 * i] = value & 0xFFFFFFFF
                    else:
                        i64[2 * i] = value
            error = call_raw(*c_args)
            if error or trap[0]:
                _raise(error, trap)
            if not n_results:
                return None
            return i64[0] if i64_result else u32[0]  # u32, as cpp-host reads it
        finally:
            if u32 is own[0]:
                busy[0] = False

    if all_i32 and 1 <= len(params) <= 3 and results in ("", "i"):
        return _fixed(call, own, busy, len(params), results == "i")
    return call


def _fixed(general: Caller, own: tuple[Any, ...], busy: list[bool], n: int, has_result: bool) -> Caller:
    """``general`` for the callbacks of one to three i32s (every stream callback and malloc):
    the arguments stored one by one, the C call's arguments passed by name, no ``try`` (a host
    function's exception comes back as a trap, never out of the C call). A nested call of the
    same function, or another count of arguments, takes ``general``."""
    u32, _i64, trap, (c0, c1, c2, c3, c4) = own
    call_raw = _CALL_UNCHECKED

    def call1(store: wasmtime.Store, a: int, *more: int) -> int | None:
        if busy[0] or more:
            return general(store, a, *more)
        busy[0] = True
        u32[0] = a
        error = call_raw(c0, c1, c2, c3, c4)
        busy[0] = False
        if error or trap[0]:
            _raise(error, trap)
        return u32[0] if has_result else None

    def call2(store: wasmtime.Store, a: int, b: int, *more: int) -> int | None:
        if busy[0] or more:
            return general(store, a, b, *more)
        busy[0] = True
        u32[0] = a
        u32[4] = b
        error = call_raw(c0, c1, c2, c3, c4)
        busy[0] = False
        if error or trap[0]:
            _raise(error, trap)
        return u32[0] if has_result else None

    def call3(store: wasmtime.Store, a: int, b: int, c: int, *more: int) -> int | None:
        if busy[0] or more:
            return general(store, a, b, c, *more)
        busy[0] = True
        u32[0] = a
        u32[4] = b
        u32[8] = c
        error = call_raw(c0, c1, c2, c3, c4)
        busy[0] = False
        if error or trap[0]:
            _raise(error, trap)
        return u32[0] if has_result else None

    return (call1, call2, call3)[n - 1]


def _raise(error: int | None, trap: Any) -> None:
    """Raise the wasmtime error or the trap of a failed unchecked call (the trap slot is cleared:
    wasmtime writes it only on a trap, so it is not reset before every call)."""
    if error:
        wfunc.maybe_raise_last_exn()
        raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t)))
    failure = wasmtime.Trap._from_ptr(ctypes.cast(trap[0], ctypes.POINTER(ffi.wasm_trap_t)))
    trap[0] = None
    wfunc.maybe_raise_last_exn()  # a host function's exception wins, as in wasmtime-py
    raise failure


_TABLE: dict[int, Any] = {}  # id -> the host function's C callback
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# The process's user address space as bytes (a view, nothing mapped or copied): a host function
# reads its arguments at the address wasmtime passes, with no ctypes object per call.
_PROCESS_MEMORY = memoryview((ctypes.c_char * (1 << 47)).from_address(0)).cast("B")
_U32_SPACE = (ctypes.c_uint32 * (1 << 45)).from_address(0)  # the same, as u32s
_ids = itertools.count(1)


def kinds(types: list[wasmtime.ValType]) -> str:
    """``"i"`` per i32 and ``"I"`` per i64 (``"?"`` for any other type)."""
    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
    return "".join("i" if t == i32 else "I" if t == i64 else "?" for t in types)


def set_fuel(store: wasmtime.Store) -> Callable[[int], None]:
    """A fast ``store.set_fuel`` (once per callback: the loop guard's budget)."""
    if not ENABLED:
        return store.set_fuel
    context = ctypes.cast(store._context(), ctypes.c_void_p).value
    set_raw = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64)(
        ("wasmtime_context_set_fuel", raw.dll)
    )

    def set_(fuel: int) -> None:
        error = set_raw(context, fuel)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, ctypes.POINTER(ffi.wasmtime_error_t)))

    return set_


def raw_fuel_setter(store: wasmtime.Store, fuel: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """``(setter, (context, amount))``: ``setter(context, amount)`` sets the store's fuel to
    ``fuel`` and returns a non-NULL error pointer on failure (one C call with arguments made
    once, no Python frame around it; :func:`set_fuel` raises the error)."""
    if not ENABLED:
        return (lambda _context, amount: store.set_fuel(amount)), (None, fuel)
    context = ctypes.cast(store._context(), ctypes.c_void_p).value or 0
    return _SET_FUEL, (_arg(ctypes.c_void_p, context), _arg(ctypes.c_uint64, fuel))


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


class _Never(Exception):
    """Never raised: the ``fault_on`` of a host function without a bad-pointer answer."""


def _handler(
    fn: Callable[..., Any],
    params: str,
    result: str,
    owner_ref: weakref.ref[Any],
    gated: bool,
    label: str,
    fault: int | None,
    fault_on: type[BaseException],
) -> Callable[[int, int, Any, int], int]:
    """The C callback of one host function (wasmtime's unchecked callback signature), its
    argument reader chosen once; an exception becomes a trap and is re-raised by the caller.

    Every i32 of the ABI is a u32 (sizes, offsets, pointers, ids): cpp-host reads them with
    ``get<uint32_t>()``, so 0xffffffff is 4294967295, never -1. i64s stay signed: the one signed
    parameter is ``proxy_increment_metric``'s delta; u64 users mask it themselves.
    """
    if params and "I" not in params and result == "i" and len(params) <= len(_ARGS):
        return _u32_handler(fn, len(params), owner_ref, gated, label, fault, fault_on)
    # The raw values (16 bytes each, an i32 in the low 4, an i64 in the low 8) read in one
    # struct unpack from the process memory view: u32 for i32, signed for i64.
    read: Callable[[Any, Any], tuple[int, ...]] = (
        struct.Struct("<" + "".join("I12x" if k == "i" else "q8x" for k in params)).unpack_from
        if params
        else lambda _mem, _vals: ()  # the array may be NULL (None) when empty
    )
    mem = _PROCESS_MEMORY
    put32 = _U32.pack_into
    put64 = _U64.pack_into

    def handle(_env: int, _caller: int, vals: int, _n: int) -> int:
        # ``vals`` is the address of the raw value array; results go to its first value.
        try:
            owner: Any = owner_ref()  # alive: its store is running this call
            if gated and owner.restricted:
                owner.deny(label)  # raises: the call is not allowed now (start-up)
            try:
                value = fn(owner, *read(mem, vals))
            except fault_on:
                if fault is None:
                    raise
                value = fault
            if result == "i":
                put32(mem, vals, value & 0xFFFFFFFF)
            elif result == "I":
                put64(mem, vals, int(value) & 0xFFFFFFFFFFFFFFFF)
            return 0
        except BaseException as exc:  # re-raised after the call unwinds, as wasmtime-py does
            return _trap(exc)

    return handle


def _trap(exc: BaseException) -> int:
    """The trap a host function's exception becomes (re-raised after the call unwinds, as
    wasmtime-py does)."""
    wfunc.LAST_EXCEPTION = exc  # type: ignore[assignment]
    trap = wasmtime.Trap("python exception")._consume()
    return int(ctypes.cast(trap, ctypes.c_void_p).value or 0)


# The argument list of a host function of n u32s, read from the u32 view of the address space
# at index i (the raw values are 16 bytes apart: a u32 every 4 slots).
_ARGS = ["U[i]", "U[i], U[i + 4]", "U[i], U[i + 4], U[i + 8]", "U[i], U[i + 4], U[i + 8], U[i + 12]",
         "U[i], U[i + 4], U[i + 8], U[i + 12], U[i + 16]",
         "U[i], U[i + 4], U[i + 8], U[i + 12], U[i + 16], U[i + 20]"]  # fmt: skip
_U32_HANDLER = """
def handle(_env, _caller, vals, _n):
    try:
        owner = owner_ref()
        if gated and owner.restricted:
            owner.deny(label)
        i = vals >> 2
        try:
            U[i] = fn(owner, {args})
        except fault_on:
            if fault is None:
                raise
            U[i] = fault
        return 0
    except BaseException as exc:
        return trap(exc)
"""


def _u32_handler(
    fn: Callable[..., Any],
    n: int,
    owner_ref: weakref.ref[Any],
    gated: bool,
    label: str,
    fault: int | None,
    fault_on: type[BaseException],
) -> Callable[[int, int, Any, int], int]:
    """:func:`_handler` for the host functions of one to six u32s returning one (the hot ones):
    each argument read and the result stored by an item of the u32 view of the address space
    (a ctypes item costs a fraction of a struct unpack or pack); the source is made per count of
    arguments, so the call passes them by position. A c_uint32 store keeps the low 32 bits."""
    scope: dict[str, Any] = {
        "U": _U32_SPACE, "owner_ref": owner_ref, "gated": gated, "label": label, "fn": fn,
        "fault": fault, "fault_on": fault_on, "trap": _trap,
    }  # fmt: skip
    exec(_U32_HANDLER.format(args=_ARGS[n - 1]), scope)  # a fixed template
    return scope["handle"]  # type: ignore[no-any-return]


def _finalize(idx: int, table: dict[int, Any] = _TABLE) -> None:
    # the table is bound here: at interpreter exit module globals may already be gone
    table.pop(idx or 0, None)


if ENABLED:
    # A host function's callback gets the value array's address as a plain int (a pointer
    # argument would be a new ctypes object per call); it is handed to wasmtime as the C API's
    # callback type, which has the same C signature.
    _CALLBACK = ctypes.CFUNCTYPE(
        ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
    )
    _FINALIZE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_finalize)
    _CALL_UNCHECKED = _raw_call("wasmtime_func_call_unchecked")
    _SET_FUEL = _raw_call("wasmtime_context_set_fuel")  # holding the GIL: a few instructions of C
    # Stores still alive when the interpreter exits are deleted after this module's globals are
    # cleared, and each calls the finalizer: its thunk must never be freed, or wasmtime jumps
    # into freed memory (a crash at exit). One extra reference, never released. (A host
    # function's thunk lives in the table until the finalizer drops it: nothing calls it later.)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(_FINALIZE))


def _guarded(
    fn: Callable[..., Any],
    kinds: str,
    owner: Any,
    gated: bool,
    label: str,
    fault: int | None,
    fault_on: type[BaseException],
) -> Callable[..., Any]:
    """``fn`` with the trampoline's checks, for the public path: i32 arguments read as u32, the
    owner's start-up restriction, ``fault`` answered for ``fault_on``."""

    def call(*args: int) -> Any:
        if gated and owner.restricted:
            owner.deny(label)
        try:
            return fn(owner, *(a & 0xFFFFFFFF if k == "i" else a for a, k in zip(args, kinds, strict=True)))
        except fault_on:
            if fault is None:
                raise
            return fault

    return call


def define(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    functype: wasmtime.FuncType,
    sig: str,
    fn: Callable[..., Any],
    *,
    owner: Any,
    gated: bool = False,
    fault: int | None = None,
    fault_on: type[BaseException] = _Never,
) -> None:
    """Define host function ``module.name`` with signature ``sig`` (``"iI>i"``: i32, i64 → i32).

    The C callback calls ``fn(owner, *arguments)`` (no Python wrapper in between): first, if
    ``gated`` and ``owner.restricted``, ``owner.deny("module.name")`` (which raises); a
    ``fault_on`` exception from ``fn`` becomes the result ``fault`` (a bad guest pointer's
    status). The table holds ``owner`` weakly: a VM nobody uses is freed with its store, whose
    finalizer drops the entries (a strong reference kept every VM to the end of the process).

    Raises:
        wasmtime.WasmtimeError: the linker refused the definition.
    """
    params, _, results = sig.partition(">")
    label = f"{module}.{name}"
    if not ENABLED:
        linker.define_func(module, name, functype, _guarded(fn, params, owner, gated, label, fault, fault_on))
        return
    idx = next(_ids)
    # One C callback per host function (no shared trampoline frame looking the function up).
    thunk = _CALLBACK(_handler(fn, params, results, weakref.ref(owner), gated, label, fault, fault_on))
    _TABLE[idx] = thunk
    mod, nm = module.encode(), name.encode()
    error = raw._wasmtime_linker_define_func_unchecked(
        linker.ptr(),
        ctypes.create_string_buffer(mod),
        len(mod),
        ctypes.create_string_buffer(nm),
        len(nm),
        functype.ptr(),
        ctypes.cast(thunk, ffi.wasmtime_func_unchecked_callback_t),
        idx,
        _FINALIZE,
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
