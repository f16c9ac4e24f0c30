"""One wasmtime instance of a Proxy-Wasm module: linking, guest memory, guarded calls into it.

The VM knows nothing of HTTP: :class:`~envoykit.wasmhost.Plugin` drives it. Host functions are
linked only for the imports the module declares, from the families in
:mod:`envoykit.wasmhost.hostcalls`, with the set of names cpp-host registers for the module's ABI
version (``src/wasm.cc`` ``registerCallbacks``); any other import fails the load like Envoy's
"Failed to load Wasm module due to a missing import".
"""

from __future__ import annotations

import ctypes
import struct
from typing import TYPE_CHECKING, Any

import wasmtime

from envoykit.wasmhost import fastcall
from envoykit.wasmhost.errors import FilterFailure, HostTrap, ModuleLoadError, OutOfBounds
from envoykit.wasmhost.hostcalls import host_functions
from envoykit.wasmhost.module import WasmModule, engine

if TYPE_CHECKING:
    from envoykit.wasmhost.plugin import Plugin

WASM_PAGE = 65536
_U32 = struct.Struct("<I")


class VM:
    """A module instance with its own store, fuel budget and memory limit.

    Args:
        module: the compiled module.
        plugin: the plugin whose state host functions read and write.
        fuel: instruction budget of each top-level call into the module (a loop guard).
        memory_limit: bytes the module's memory may grow to; growth past it fails (``memory.grow``
            returns -1, allocators return NULL) and a trap with more than 3/4 of it in use is
            reported as a memory failure.

    Raises:
        ModuleLoadError: an import the host does not provide for this ABI version, or a module
            without exported ``memory``.
    """

    def __init__(self, module: WasmModule, plugin: Plugin, *, fuel: int, memory_limit: int) -> None:
        self.module = module
        self.plugin = plugin
        self.fuel = fuel
        self.memory_limit = memory_limit
        self.store = wasmtime.Store(engine())
        self.store.set_limits(memory_size=memory_limit)
        self.depth = 0  # nesting of calls into the module (malloc inside a host call...)
        # The allocator's trap inside a host call: the VM failed, the module ran on (see
        # return_bytes); whoever made the outer call raises it once the call returns.
        self.host_failure: FilterFailure | None = None
        self.restricted = False  # only start-up-safe host calls during _initialize/_start
        linker = wasmtime.Linker(engine())
        table = host_functions(module.abi_version)
        for imp in module.module.imports:
            key = (imp.module, imp.name or "")
            entry = table.get(key)
            if entry is None or not isinstance(imp.type, wasmtime.FuncType):
                raise ModuleLoadError(
                    f"{module.name}: Failed to load Wasm module due to a missing import: "
                    f"{imp.module}.{imp.name} (not provided for ABI {module.abi_version.value})"
                )
            fn = entry.raw if entry.raw is not None else entry.fn
            fastcall.define(
                linker, imp.module, imp.name or "", entry.functype, entry.sig, fn, owner=self,
                gated=key not in _STARTUP_ALLOWED, fault=entry.fault, fault_on=OutOfBounds,
            )  # fmt: skip
        self.store.set_fuel(fuel)
        try:
            self.instance = linker.instantiate(self.store, module.module)
        except wasmtime.WasmtimeError as exc:  # signature mismatch of an import, start trap...
            raise ModuleLoadError(f"{module.name}: cannot instantiate: {exc}") from exc
        exports = self.instance.exports(self.store)
        mem = exports.get("memory")
        if not isinstance(mem, wasmtime.Memory):
            raise ModuleLoadError(f"{module.name}: the module exports no memory")
        self.memory = mem
        self._memory_view = fastcall.memory_view(self.store, mem)
        self._mem_base, self._mem_len = 0, 0
        self._mv = memoryview(bytearray())  # replaced by the view over the memory at once
        self._mem: Any = None
        self._base()
        self.funcs: dict[str, fastcall.Caller] = {}
        for name in module.exports:
            f = exports.get(name)
            if isinstance(f, wasmtime.Func):
                ty = f.type(self.store)
                self.funcs[name] = fastcall.caller(
                    f, self.store, fastcall.kinds(ty.params), fastcall.kinds(ty.results)
                )
        # Whether a stream's end runs any of the module (else no access-log maps are set up).
        self.end_callbacks = bool(self.funcs.keys() & {"proxy_on_log", "proxy_on_done", "proxy_on_delete"})
        self.set_fuel = fastcall.set_fuel(self.store)
        self.set_fuel_raw, (self.fuel_context, self.fuel_amount) = fastcall.raw_fuel_setter(self.store, fuel)
        # cpp-host getFunctions: malloc first, proxy_on_memory_allocate only without it.
        self.malloc = self.funcs.get("malloc") or self.funcs.get("proxy_on_memory_allocate")
        if self.malloc is None:
            raise ModuleLoadError(f"{module.name}: Wasm module is missing malloc function.")

    def deny(self, label: str) -> None:
        """cpp-host ``setRestrictedCallback``: the VM fails on any other host call during start-up.

        Raises:
            HostTrap: always (the fast path calls it only while :attr:`restricted`).
        """
        raise HostTrap(f"Function: {label} is not allowed during VM start-up (_initialize/_start)")

    # -- memory -----------------------------------------------------------------------------------
    def _base(self) -> tuple[int, int]:
        """(base address, length) of the memory, asked of wasmtime; cached for the fast paths.

        The engine never moves a memory (``memory_may_move`` off), so the base and a view over
        the whole 32-bit address space from it stay valid; the length only grows, so a cached
        length is a safe lower bound, refreshed on a miss. Every access checks the length first."""
        if self._memory_view is not None:
            base, length = self._memory_view()
        else:
            ptr = self.memory.data_ptr(self.store)
            base, length = ctypes.cast(ptr, ctypes.c_void_p).value or 0, self.memory.data_len(self.store)
        if base != self._mem_base or not len(self._mv):
            # A c_char array's slice is the bytes at once (half the cost of a view's slice and
            # tobytes); the byte view serves writes and struct packing.
            self._mem = (ctypes.c_char * (1 << 32)).from_address(base)
            self._mv = memoryview(self._mem).cast("B")
        self._mem_base, self._mem_len = base, length
        return base, length

    def read(self, ptr: int, size: int) -> bytes:
        """``size`` bytes at ``ptr``. Raises :class:`OutOfBounds`."""
        end = ptr + size
        if (end > self._mem_len and end > self._base()[1]) or ptr < 0 or size < 0:
            raise OutOfBounds
        return self._mem[ptr:end]

    def read_two(self, ptr: int, size: int, ptr2: int, size2: int) -> tuple[bytes, bytes]:
        """``(read(ptr, size), read(ptr2, size2))`` in one call (a key and a value: the common
        header host calls). Raises :class:`OutOfBounds`."""
        end, end2 = ptr + size, ptr2 + size2
        top = end if end > end2 else end2
        if (top > self._mem_len and top > self._base()[1]) or ptr < 0 or size < 0 or ptr2 < 0 or size2 < 0:
            raise OutOfBounds
        mem = self._mem
        return mem[ptr:end], mem[ptr2:end2]

    def check(self, ptr: int, size: int) -> None:
        """Raise :class:`OutOfBounds` unless ``[ptr, ptr + size)`` is inside memory (no copy)."""
        end = ptr + size
        if (end > self._mem_len and end > self._base()[1]) or ptr < 0 or size < 0:
            raise OutOfBounds

    def write(self, ptr: int, data: bytes) -> None:
        """Copy ``data`` to ``ptr``. Raises :class:`OutOfBounds`."""
        end = ptr + len(data)
        if (end > self._mem_len and end > self._base()[1]) or ptr < 0:
            raise OutOfBounds
        self._mv[ptr:end] = data

    def write_u32(self, ptr: int, value: int) -> None:
        """Little-endian u32 at ``ptr`` (out-parameters)."""
        if (ptr + 4 > self._mem_len and ptr + 4 > self._base()[1]) or ptr < 0:
            raise OutOfBounds
        _U32.pack_into(self._mv, ptr, value & 0xFFFFFFFF)

    def write_u64(self, ptr: int, value: int) -> None:
        """Little-endian u64 at ``ptr``."""
        self.write(ptr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def read_u32(self, ptr: int) -> int:
        """Little-endian u32 at ``ptr``."""
        return int(struct.unpack("<I", self.read(ptr, 4))[0])

    def return_bytes(self, data: bytes, ptr_ptr: int, size_ptr: int) -> None:
        """Hand ``data`` to the module: allocate with its malloc, copy, write ptr and size.

        Zero-length data is returned as ptr 0, size 0 without allocating (cpp-host
        ``BufferBase::copyTo`` / ``get_header_map_pairs``). Raises :class:`OutOfBounds` when the
        allocator fails (returns 0) or the out-pointers are bad.
        """
        if not data:
            self.write_u32(ptr_ptr, 0)
            self.write_u32(size_ptr, 0)
            return
        assert self.malloc is not None
        self.depth += 1
        try:
            addr = self.malloc(self.store, len(data))
        except (wasmtime.Trap, HostTrap, wasmtime.WasmtimeError) as exc:
            # cpp-host allocMemory: the trap fails the VM and malloc reads as 0, so the host call
            # answers INVALID_MEMORY_ACCESS and the module runs on to the end of its callback,
            # whose stream then fails (observed in Envoy 1.40, malloc_trap.yaml).
            if self.host_failure is None:
                ctx = self.plugin.effective
                self.host_failure = self.failure("malloc", ctx.id, exc)
                self.plugin._dirty.append(ctx)  # Plugin.call's after-call step raises it
            raise OutOfBounds from exc
        finally:
            self.depth -= 1
        if not isinstance(addr, int) or addr == 0:
            raise OutOfBounds
        self.write(addr, data)
        self.write_u32(ptr_ptr, addr)
        self.write_u32(size_ptr, len(data))

    # -- calls into the module --------------------------------------------------------------------
    def has(self, name: str) -> bool:
        """Whether the module exports callback ``name``."""
        return name in self.funcs

    def call(self, name: str, *args: int, context_id: int = 0) -> Any:
        """Call export ``name`` with a fresh fuel budget; turn traps into :class:`FilterFailure`.

        Raises:
            FilterFailure: the call trapped, ran out of fuel, or died after hitting the memory limit.
        """
        func = self.funcs[name]
        self.set_fuel(self.fuel)
        self.depth += 1
        try:
            result = func(self.store, *args)
        except (wasmtime.Trap, HostTrap, wasmtime.WasmtimeError) as exc:
            self.host_failure = None
            raise self.failure(name, context_id, exc) from exc
        finally:
            self.depth -= 1
        if self.host_failure is not None and not self.depth:
            failure, self.host_failure = self.host_failure, None
            raise failure
        return result

    def failure(self, name: str, context_id: int, exc: Exception) -> FilterFailure:
        """The :class:`FilterFailure` for ``exc`` raised by a call of ``name`` for ``context_id``."""
        if not isinstance(exc, wasmtime.Trap):  # a HostTrap or a wasmtime error
            return FilterFailure(
                f"{name} (context {context_id}) failed: {exc}",
                callback=name,
                context_id=context_id,
                reason="trap",
            )
        code = exc.trap_code
        lines = [ln.strip() for ln in (exc.message or "").splitlines() if ln.strip()]
        cause = next((ln.split("wasm trap:", 1)[1].strip() for ln in lines if "wasm trap:" in ln), "")
        cause = cause or (lines[-1] if lines else str(code))
        named = [f.func_name for f in (exc.frames or []) if f.func_name]
        if named:
            cause += f" (in {' <- '.join(named[:4])})"
        size = self.memory.data_len(self.store)
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            reason = "fuel"
            text = f"exceeded its budget of {self.fuel} fuel units (an endless loop?)"
        elif size * 4 > self.memory_limit * 3:
            # wasmtime-py has no hook on refused growth: a trap with memory over 3/4 of the limit
            # is reported as the memory bomb it almost always is.
            reason = "memory"
            text = f"trapped near its memory limit of {self.memory_limit} bytes ({size} in use): {cause}"
        else:
            reason = "trap"
            text = f"trapped: {cause}"
        return FilterFailure(
            f"{name} (context {context_id}) {text}", callback=name, context_id=context_id, reason=reason
        )


# cpp-host WasmBase::startVm: the only host calls allowed while _initialize / _start run.
_STARTUP_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [("env", "proxy_log")]
    + [
        (m, n)
        for m in ("wasi_unstable", "wasi_snapshot_preview1")
        for n in (
            "fd_write",
            "args_sizes_get",
            "args_get",
            "environ_sizes_get",
            "environ_get",
            "fd_prestat_get",
            "fd_prestat_dir_name",
            "clock_time_get",
            "random_get",
        )
    ]
)
