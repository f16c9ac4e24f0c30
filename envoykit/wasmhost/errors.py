"""Errors raised by the Wasm host. All derive from :class:`WasmHostError`."""

from __future__ import annotations

from envoykit.wasmhost.abi import AbiError


class WasmHostError(Exception):
    """Base class of every error of ``envoykit.wasmhost``."""


class ModuleLoadError(WasmHostError):
    """The module could not be read, compiled or linked (bad bytes, unknown import, ABI refused)."""


class FilterFailure(WasmHostError):
    """A callback of the filter trapped, ran out of its fuel budget, or hit the memory limit.

    Attributes:
        callback: the export that was running (``proxy_on_request_headers``...).
        context_id: the context it ran for (0 for VM start-up).
        reason: ``"trap"``, ``"fuel"`` (the instruction budget ran out: an endless loop) or ``"memory"``.
        logs: the filter's log lines up to the failure, for the test report.

    Envoy fails the VM the same way: after a trap the plugin is marked failed and later requests
    get the plugin's fail-open / fail-closed behaviour; here the :class:`~envoykit.wasmhost.Plugin`
    is marked failed and refuses further calls.
    """

    def __init__(self, message: str, *, callback: str, context_id: int, reason: str) -> None:
        super().__init__(message)
        self.callback = callback
        self.context_id = context_id
        self.reason = reason


class PluginFailedError(WasmHostError):
    """The plugin failed earlier (trap, on_vm_start/on_configure returned false) and cannot run."""


class StreamStateError(WasmHostError):
    """The test drove a stream out of order (e.g. request headers twice, body after end of stream)."""


class OutOfBounds(Exception):
    """A pointer/size pair from the module falls outside its memory (→ ``INVALID_MEMORY_ACCESS``)."""


class HostTrap(Exception):
    """Raised inside a host function to fail the running callback (a trap in Envoy's terms)."""


__all__ = [
    "AbiError",
    "FilterFailure",
    "HostTrap",
    "ModuleLoadError",
    "OutOfBounds",
    "PluginFailedError",
    "StreamStateError",
    "WasmHostError",
]
