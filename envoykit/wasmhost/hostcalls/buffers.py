"""Buffers: ``proxy_get_buffer_bytes``, ``proxy_get_buffer_status``, ``proxy_set_buffer_bytes``
(and 0.1.0's ``proxy_get_configuration``).

Availability follows Envoy ``Context::getBuffer``: bodies and TCP data while their callback (or a
buffering pause) holds them; the VM configuration always; the plugin configuration only during
``proxy_on_configure`` / ``proxy_validate_configuration``; the HTTP-call response body only inside its callback (else NOT_FOUND); the gRPC message and
call-data buffers read as empty outside their callbacks (Envoy's wrapper is always there). Writes follow
Envoy ``Buffer::copyFrom``: ``start == 0`` drains ``size`` bytes (all if ``size >= length``) and
prepends the data, ``start >= length`` appends, anything else is BAD_ARGUMENT; the
read-only buffers refuse writes with BAD_ARGUMENT, and so does a body write outside a body
callback.
"""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.abi import BufferType, Status
from envoykit.wasmhost.hostcalls.table import Table

_MUTABLE = {
    BufferType.HTTP_REQUEST_BODY,
    BufferType.HTTP_RESPONSE_BODY,
    BufferType.DOWNSTREAM_DATA,
    BufferType.UPSTREAM_DATA,
}


def _buffer(vm: Any, kind: int) -> bytes | bytearray | None:
    plugin = vm.plugin
    ctx = plugin.effective
    if kind in (BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY):
        return ctx.bodies.get(kind) if ctx.bodies.get(kind) is not None else bytearray()
    if kind in (BufferType.DOWNSTREAM_DATA, BufferType.UPSTREAM_DATA):
        return ctx.bodies.get(kind) if ctx.bodies.get(kind) is not None else bytearray()
    if kind == BufferType.VM_CONFIGURATION:
        return plugin.vm_configuration
    if kind == BufferType.PLUGIN_CONFIGURATION:
        return plugin.configuration if plugin.configuring else None
    if kind == BufferType.HTTP_CALL_RESPONSE_BODY:
        resp = plugin.http_call_response
        return resp.body if resp is not None else None
    # Envoy hands out its per-context buffer wrapper for these even when nothing is behind it:
    # OK and empty outside their callbacks (checked by the differential tests).
    if kind == BufferType.GRPC_RECEIVE_BUFFER:
        return plugin.grpc_receive_buffer if plugin.grpc_receive_buffer is not None else b""
    if kind == BufferType.CALL_DATA:
        return plugin.call_data if plugin.call_data is not None else b""
    return None


def proxy_get_buffer_bytes(vm: Any, kind: int, start: int, max_size: int, ptr_ptr: int, size_ptr: int) -> int:
    """``proxy_get_buffer_bytes(buffer_id, start, max_size, return_value_data **, return_value_size *) ->
    status``.
    """
    if kind > BufferType.CALL_DATA:
        return Status.BAD_ARGUMENT
    buf = _buffer(vm, kind)
    if buf is None:
        return Status.NOT_FOUND
    # cpp-host adds start and max_size as 64-bit words: two u32s never overflow, and a read past
    # the end is cut to what is there (max_size 0xffffffff is "to the end").
    chunk = bytes(buf[start : start + max_size])
    vm.return_bytes(chunk, ptr_ptr, size_ptr)
    return Status.OK


def proxy_get_buffer_status(vm: Any, kind: int, size_ptr: int, flags_ptr: int) -> int:
    """``proxy_get_buffer_status(buffer_id, return_buffer_size *, return_unused_flags *) -> status``."""
    if kind > BufferType.CALL_DATA:
        return Status.BAD_ARGUMENT
    buf = _buffer(vm, kind)
    if buf is None:
        return Status.NOT_FOUND
    vm.write_u32(size_ptr, len(buf))
    vm.write_u32(flags_ptr, 0)
    return Status.OK


def proxy_set_buffer_bytes(vm: Any, kind: int, start: int, size: int, data_ptr: int, data_size: int) -> int:
    """``proxy_set_buffer_bytes(buffer_id, start, size, value_data, value_size) -> status``."""
    if kind > BufferType.CALL_DATA:
        return Status.BAD_ARGUMENT
    data = vm.read(data_ptr, data_size)
    if kind not in _MUTABLE:
        return Status.BAD_ARGUMENT if _buffer(vm, kind) is not None else Status.NOT_FOUND
    ctx = vm.plugin.effective
    buf = ctx.bodies.get(kind)
    if buf is None:
        return Status.BAD_ARGUMENT  # no body in this callback: Envoy refuses the write
    if start == 0:
        # Envoy drains ``size`` bytes (at most all of them), then prepends: size 0 prepends,
        # size >= length (0xffffffff) replaces, a size in between replaces that many bytes.
        buf[: min(size, len(buf))] = data
    elif start >= len(buf):
        buf += data
    else:
        return Status.BAD_ARGUMENT
    return Status.OK


def proxy_get_configuration(vm: Any, ptr_ptr: int, size_ptr: int) -> int:
    # 0.1.0: the plugin configuration inside on_configure, the VM configuration otherwise
    # (Envoy Context::getConfiguration).
    """``proxy_get_configuration(return_value_data **, return_value_size *) -> status``."""
    plugin = vm.plugin
    data = plugin.configuration if plugin.configuring else plugin.vm_configuration
    vm.return_bytes(bytes(data), ptr_ptr, size_ptr)
    return Status.OK


FUNCTIONS: Table = {
    "proxy_get_buffer_bytes": ("iiiii>i", proxy_get_buffer_bytes),
    "proxy_get_buffer_status": ("iii>i", proxy_get_buffer_status),
    "proxy_set_buffer_bytes": ("iiiii>i", proxy_set_buffer_bytes),
}
ABI_0_1_0: Table = {"proxy_get_configuration": ("ii>i", proxy_get_configuration)}
