"""Properties: ``proxy_get_property`` / ``proxy_set_property``.

Paths are segments joined by ``\\0``, one trailing ``\\0`` allowed, an empty path
SERIALIZATION_FAILURE (Envoy ``Context::getProperty``; pinned by ``property_paths.wat``). Values are what
:mod:`envoykit.wasmhost.properties` builds with Envoy's encodings. ``set_property`` stores the
value under the path for the stream (Envoy keeps it as filter state ``wasm.<path>``; reading it
back returns the bytes); without a stream it is NOT_FOUND, like Envoy without stream info.
"""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.abi import Status
from envoykit.wasmhost.hostcalls.table import Table
from envoykit.wasmhost.properties import Unserializable


def proxy_get_property(vm: Any, pp: int, ps: int, ptr_ptr: int, size_ptr: int) -> int:
    """``proxy_get_property(path_data, path_size, return_value_data **, return_value_size *) -> status``."""
    path = vm.read(pp, ps)
    if not path:
        # Envoy's segment loop never runs: it serializes an empty value, which has no form.
        return Status.SERIALIZATION_FAILURE
    if path[-1:] == b"\0":
        # One NUL ends the last segment (the SDKs' terminator); any before it is an empty
        # segment ("request\0\0" is request[""]: NOT_FOUND), as Envoy's loop splits it.
        path = path[:-1]
    try:
        value = vm.plugin.lookup_property(path.split(b"\0"))
    except Unserializable:  # Envoy serializeValue of a null
        return Status.SERIALIZATION_FAILURE
    if value is None:
        return Status.NOT_FOUND
    vm.return_bytes(value, ptr_ptr, size_ptr)
    return Status.OK


def proxy_set_property(vm: Any, pp: int, ps: int, vp: int, vs: int) -> int:
    """``proxy_set_property(path_data, path_size, value_data, value_size) -> status``."""
    path, value = vm.read(pp, ps), vm.read(vp, vs)
    ctx = vm.plugin.effective
    if ctx.kind == "root":
        return Status.NOT_FOUND
    ctx.filter_state[path.rstrip(b"\0").replace(b"\0", b".").decode(errors="replace")] = value
    return Status.OK


FUNCTIONS: Table = {
    "proxy_get_property": ("iiii>i", proxy_get_property),
    "proxy_set_property": ("iiii>i", proxy_set_property),
}
