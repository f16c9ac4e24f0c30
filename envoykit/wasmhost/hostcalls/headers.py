"""Header, trailer and metadata maps: the seven ``proxy_*_header_map_*`` functions.

Availability is Envoy's (``Context::getMap`` / ``getConstMap``): request headers while
``on_request_headers`` runs or its pause holds them, and so on; the HTTP-call response maps only
inside ``on_http_call_response``, the gRPC metadata maps inside their callbacks. Envoy's answers
for a map that is not there: ``get_header_map_value`` BAD_ARGUMENT (NOT_FOUND in the access-log
phase), ``get_header_map_pairs`` OK and empty, the writers and ``get_header_map_size`` BAD_ARGUMENT.
An HTTP-call answer without trailers has no trailer map at all (BAD_ARGUMENT on a lookup).
A missing key is NOT_FOUND, except ABI 0.1.0 which gets OK and an empty value.
"""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.abi import AbiVersion, MapType, Status
from envoykit.wasmhost.headermap import HeaderMap, bad_value, invalid_header, valid_name
from envoykit.wasmhost.hostcalls.table import Table
from envoykit.wasmhost.pairs import decode_pairs

# Plain names for the enum members used per request: an attribute of an Enum class goes
# through EnumType.__getattr__ on Python 3.11, which costs more than the rest of the line.
_OK = Status.OK
_BAD_ARGUMENT = Status.BAD_ARGUMENT
_NOT_FOUND = Status.NOT_FOUND
_V0_1_0 = AbiVersion.V0_1_0


# Plain ints: the map type arrives as one, and the streams key their maps by ints.
_LAST_MAP = int(MapType.HTTP_CALL_RESPONSE_TRAILERS)
_WRITABLE = frozenset(
    int(m)
    for m in (
        MapType.HTTP_REQUEST_HEADERS,
        MapType.HTTP_REQUEST_TRAILERS,
        MapType.HTTP_RESPONSE_HEADERS,
        MapType.HTTP_RESPONSE_TRAILERS,
    )
)


def _map(vm: Any, kind: int) -> HeaderMap | None:
    plugin = vm.plugin
    if kind in _WRITABLE:
        return plugin.effective.maps.get(kind)  # keyed by MapType, an int
    if kind in (MapType.HTTP_CALL_RESPONSE_HEADERS, MapType.HTTP_CALL_RESPONSE_TRAILERS):
        resp = plugin.http_call_response
        if resp is None:
            return None
        return resp.headers if kind == MapType.HTTP_CALL_RESPONSE_HEADERS else resp.trailers
    if kind == MapType.GRPC_RECEIVE_INITIAL_METADATA:
        return plugin.grpc_initial_metadata
    if kind == MapType.GRPC_RECEIVE_TRAILING_METADATA:
        return plugin.grpc_trailing_metadata
    return None


def _writable(vm: Any, kind: int) -> HeaderMap | None:
    if kind not in _WRITABLE:
        return None
    ctx = vm.plugin.effective
    if ctx.access_log_phase:
        # Envoy getMap in on_log: only the maps its pointers still reach (not the access-log view).
        return ctx.live_maps.get(kind)
    return ctx.maps.get(kind)  # _map of a writable kind


def proxy_get_header_map_value(
    vm: Any, kind: int, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int
) -> int:
    """``proxy_get_header_map_value(map_id, key_data, key_size, return_value_data **, return_value_size *) ->
    status``.
    """
    if kind > _LAST_MAP:  # cpp-host checks the map type before anything else
        return _BAD_ARGUMENT
    key = vm.read(key_ptr, key_size)
    hmap = _map(vm, kind)
    old_abi = vm.module.abi_version is _V0_1_0
    if hmap is None:
        if vm.plugin.effective.access_log_phase:
            if old_abi:
                vm.return_bytes(b"", ptr_ptr, size_ptr)
                return _OK
            return _NOT_FOUND
        return _BAD_ARGUMENT
    value = hmap.get_bytes(key)
    if value is None:
        if old_abi:
            vm.return_bytes(b"", ptr_ptr, size_ptr)
            return _OK
        return _NOT_FOUND
    vm.return_bytes(value, ptr_ptr, size_ptr)
    return _OK


def proxy_get_header_map_pairs(vm: Any, kind: int, ptr_ptr: int, size_ptr: int) -> int:
    """``proxy_get_header_map_pairs(map_id, return_serialized_pairs_data **, return_serialized_pairs_size *)
    -> status``.
    """
    if kind > _LAST_MAP:  # cpp-host checks the map type before anything else
        return _BAD_ARGUMENT
    hmap = _map(vm, kind)
    vm.return_bytes(hmap.encoded() if hmap is not None else b"", ptr_ptr, size_ptr)
    return _OK


def proxy_get_header_map_size(vm: Any, kind: int, size_ptr: int) -> int:
    """``proxy_get_header_map_size(map_id, return_serialized_pairs_size *) -> status``."""
    if kind > _LAST_MAP:  # cpp-host checks the map type before anything else
        return _BAD_ARGUMENT
    hmap = _writable(vm, kind)
    if hmap is None:
        return _BAD_ARGUMENT
    vm.write_u32(size_ptr, hmap.byte_size())
    return _OK


def proxy_set_header_map_pairs(vm: Any, kind: int, ptr: int, size: int) -> int:
    """``proxy_set_header_map_pairs(map_id, serialized_pairs_data, serialized_pairs_size) -> status``."""
    if kind > _LAST_MAP:  # cpp-host checks the map type before anything else
        return _BAD_ARGUMENT
    data = vm.read(ptr, size)
    hmap = _writable(vm, kind)
    if hmap is None:
        return _BAD_ARGUMENT
    pairs = decode_pairs(data)
    hmap.set_pairs(pairs or [])  # cpp-host: a malformed buffer reads as an empty map
    if kind == 0 and invalid_header(hmap._entries):
        vm.plugin.effective.bad_request_header = True
    return _OK


def proxy_add_header_map_value(vm: Any, kind: int, kp: int, ks: int, vp: int, vs: int) -> int:
    """``proxy_add_header_map_value(map_id, key_data, key_size, value_data, value_size) -> status``."""
    if kind > _LAST_MAP:  # cpp-host checks the map type before anything else
        return _BAD_ARGUMENT
    key, value = vm.read_two(kp, ks, vp, vs)
    ctx = vm.plugin.effective
    if kind not in _WRITABLE:  # _writable, inline (the common host call of header filters)
        return _BAD_ARGUMENT
    hmap = ctx.live_maps.get(kind) if ctx.access_log_phase else ctx.maps.get(kind)
    if hmap is None:
        return _BAD_ARGUMENT
    hmap.add(key, value)
    if kind == 0 and (bad_value(value) or not valid_name(key.lower())):
        ctx.bad_request_header = True  # checked when the request goes upstream
    return _OK


def proxy_replace_header_map_value(vm: Any, kind: int, kp: int, ks: int, vp: int, vs: int) -> int:
    """``proxy_replace_header_map_value(map_id, key_data, key_size, value_data, value_size) -> status``."""
    if kind > _LAST_MAP:  # cpp-host checks the map type before anything else
        return _BAD_ARGUMENT
    key, value = vm.read(kp, ks), vm.read(vp, vs)
    hmap = _writable(vm, kind)
    if hmap is None:
        return _BAD_ARGUMENT
    hmap.replace(key, value)
    if kind == 0 and (bad_value(value) or not valid_name(key.lower())):
        vm.plugin.effective.bad_request_header = True
    return _OK


def proxy_remove_header_map_value(vm: Any, kind: int, kp: int, ks: int) -> int:
    """``proxy_remove_header_map_value(map_id, key_data, key_size) -> status``."""
    if kind > _LAST_MAP:  # cpp-host checks the map type before anything else
        return _BAD_ARGUMENT
    key = vm.read(kp, ks)
    hmap = _writable(vm, kind)
    if hmap is None:
        return _BAD_ARGUMENT
    hmap.remove(key)
    return _OK


FUNCTIONS: Table = {
    "proxy_get_header_map_value": ("iiiii>i", proxy_get_header_map_value),
    "proxy_get_header_map_pairs": ("iii>i", proxy_get_header_map_pairs),
    "proxy_get_header_map_size": ("ii>i", proxy_get_header_map_size),
    "proxy_set_header_map_pairs": ("iii>i", proxy_set_header_map_pairs),
    "proxy_add_header_map_value": ("iiiii>i", proxy_add_header_map_value),
    "proxy_replace_header_map_value": ("iiiii>i", proxy_replace_header_map_value),
    "proxy_remove_header_map_value": ("iii>i", proxy_remove_header_map_value),
}
