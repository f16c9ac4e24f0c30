"""Shared data and shared queues (cpp-host ``exports.cc`` / ``shared_data.cc`` / ``shared_queue.cc``).

Shared data is per VM id with a CAS token (see :class:`~envoykit.wasmhost.state.SharedData`); a
missing key is NOT_FOUND. Queues: register gives a token, resolve with an empty VM id looks in
the caller's VM id, an unknown queue is NOT_FOUND, dequeue of an empty queue is EMPTY. Enqueue
schedules ``proxy_on_queue_ready`` on the registering root context, after the current call.
"""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.abi import Status
from envoykit.wasmhost.hostcalls.table import Table


def proxy_get_shared_data(vm: Any, kp: int, ks: int, ptr_ptr: int, size_ptr: int, cas_ptr: int) -> int:
    """``proxy_get_shared_data(key_data, key_size, return_value_data **, return_value_size *, return_cas
    *u32) -> status``.
    """
    key = vm.read(kp, ks)
    found = vm.plugin.host.shared_data.get(vm.plugin.vm_id, key)
    if found is None:
        return Status.NOT_FOUND
    value, cas = found
    vm.return_bytes(value, ptr_ptr, size_ptr)
    vm.write_u32(cas_ptr, cas)
    return Status.OK


def proxy_set_shared_data(vm: Any, kp: int, ks: int, vp: int, vs: int, cas: int) -> int:
    """``proxy_set_shared_data(key_data, key_size, value_data, value_size, cas) -> status``."""
    key, value = vm.read(kp, ks), vm.read(vp, vs)
    return int(vm.plugin.host.shared_data.set(vm.plugin.vm_id, key, value, cas))


def proxy_register_shared_queue(vm: Any, np: int, ns: int, token_ptr: int) -> int:
    """``proxy_register_shared_queue(name_data, name_size, return_queue_id *) -> status``."""
    name = vm.read(np, ns).decode(errors="replace")
    token = vm.plugin.host.queues.register(vm.plugin.vm_id, name, vm.plugin)
    vm.write_u32(token_ptr, token)
    return Status.OK


def proxy_resolve_shared_queue(vm: Any, vp: int, vs: int, np: int, ns: int, token_ptr: int) -> int:
    """``proxy_resolve_shared_queue(vm_id_data, vm_id_size, name_data, name_size, return_queue_id *) ->
    status``.
    """
    vm_id = vm.read(vp, vs).decode(errors="replace") or vm.plugin.vm_id
    name = vm.read(np, ns).decode(errors="replace")
    token = vm.plugin.host.queues.resolve(vm_id, name)
    if token is None:
        return Status.NOT_FOUND
    vm.write_u32(token_ptr, token)
    return Status.OK


def proxy_enqueue_shared_queue(vm: Any, token: int, vp: int, vs: int) -> int:
    """``proxy_enqueue_shared_queue(queue_id, value_data, value_size) -> status``."""
    value = vm.read(vp, vs)
    queue = vm.plugin.host.queues.get(token)
    if queue is None:
        return Status.NOT_FOUND
    queue.items.append(value)
    vm.plugin.host.notify_queue(queue)
    return Status.OK


def proxy_dequeue_shared_queue(vm: Any, token: int, ptr_ptr: int, size_ptr: int) -> int:
    """``proxy_dequeue_shared_queue(queue_id, return_value_data **, return_value_size *) -> status``."""
    queue = vm.plugin.host.queues.get(token)
    if queue is None:
        return Status.NOT_FOUND
    if not queue.items:
        return Status.EMPTY
    vm.return_bytes(queue.items.popleft(), ptr_ptr, size_ptr)
    return Status.OK


FUNCTIONS: Table = {
    "proxy_get_shared_data": ("iiiii>i", proxy_get_shared_data),
    "proxy_set_shared_data": ("iiiii>i", proxy_set_shared_data),
    "proxy_register_shared_queue": ("iii>i", proxy_register_shared_queue),
    "proxy_resolve_shared_queue": ("iiiii>i", proxy_resolve_shared_queue),
    "proxy_enqueue_shared_queue": ("iii>i", proxy_enqueue_shared_queue),
    "proxy_dequeue_shared_queue": ("iii>i", proxy_dequeue_shared_queue),
}
