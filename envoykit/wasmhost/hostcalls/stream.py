"""Stream control: ``proxy_send_local_response``, ``proxy_continue_stream``, ``proxy_close_stream``,
``proxy_get_status`` (and 0.1.0's ``proxy_continue_request/response``, ``proxy_clear_route_cache``).

As in Envoy, these are *deferred*: the host records them and acts after the module returns
(Envoy ``Context::sendLocalResponse`` / ``continueStream`` use ``addAfterVmCallAction``).
``continue_stream`` also forgets the request maps and body, as Envoy's ``continueStream`` does.
The local response's details have whitespace replaced by ``_`` (``StringUtil::replaceAllEmptySpace``)
and a gRPC status outside 0..16 means "none" (SDKs pass -1).
"""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.abi import Status as S
from envoykit.wasmhost.abi import StreamType
from envoykit.wasmhost.hostcalls.table import Table
from envoykit.wasmhost.pairs import decode_pairs
from envoykit.wasmhost.types import LocalResponse


def proxy_continue_stream(vm: Any, stream_type: int) -> int:
    """``proxy_continue_stream(stream_type) -> status``."""
    if stream_type > StreamType.UPSTREAM:
        return S.BAD_ARGUMENT
    if stream_type == StreamType.UPSTREAM:
        return S.UNIMPLEMENTED  # Envoy continueStream(Upstream)
    vm.plugin.effective.defer("continue", StreamType(stream_type))
    return S.OK


def proxy_close_stream(vm: Any, stream_type: int) -> int:
    """``proxy_close_stream(stream_type) -> status``."""
    if stream_type > StreamType.UPSTREAM:
        return S.BAD_ARGUMENT
    vm.plugin.effective.defer("close", StreamType(stream_type))
    return S.OK


def proxy_continue_request(vm: Any) -> int:
    """``proxy_continue_request() -> status``."""
    return proxy_continue_stream(vm, StreamType.HTTP_REQUEST)


def proxy_continue_response(vm: Any) -> int:
    """``proxy_continue_response() -> status``."""
    return proxy_continue_stream(vm, StreamType.HTTP_RESPONSE)


def proxy_clear_route_cache(vm: Any) -> int:
    """``proxy_clear_route_cache() -> status``."""
    vm.plugin.effective.route_cache_cleared += 1
    return S.OK


def proxy_send_local_response(
    vm: Any,
    status_code: int,
    details_ptr: int,
    details_size: int,
    body_ptr: int,
    body_size: int,
    headers_ptr: int,
    headers_size: int,
    grpc_status: int,
) -> int:
    """``proxy_send_local_response(status_code, details_data, details_size, body_data, body_size,
    serialized_headers_data, serialized_headers_size, grpc_status) -> status``.
    """
    details = vm.read(details_ptr, details_size).decode(errors="replace")
    body = vm.read(body_ptr, body_size)
    pairs = decode_pairs(vm.read(headers_ptr, headers_size)) or []
    grpc = grpc_status if 0 <= grpc_status <= 16 else None
    response = LocalResponse(
        status=status_code & 0xFFFF,  # Envoy's Http::Code is 16 bits: 65736 answers 200 (local_reply.yaml)
        body=body,
        headers=[(k.decode(errors="replace").lower(), v.decode(errors="replace")) for k, v in pairs],
        details="_".join(details.split(" ")) if details else "",
        grpc_status=grpc,
    )
    vm.plugin.effective.defer("local_response", response)
    return S.OK


def proxy_get_status(vm: Any, code_ptr: int, msg_ptr_ptr: int, msg_size_ptr: int) -> int:
    """``proxy_get_status(return_status_code *u32, return_status_message_data **, return_status_message_size
    *) -> status``.
    """
    code, message = vm.plugin.status
    vm.write_u32(code_ptr, code)
    vm.return_bytes(message.encode(), msg_ptr_ptr, msg_size_ptr)
    return S.OK


FUNCTIONS: Table = {
    "proxy_send_local_response": ("iiiiiiii>i", proxy_send_local_response),
    "proxy_get_status": ("iii>i", proxy_get_status),
}
ABI_0_1_0: Table = {
    "proxy_continue_request": (">i", proxy_continue_request),
    "proxy_continue_response": (">i", proxy_continue_response),
    "proxy_clear_route_cache": (">i", proxy_clear_route_cache),
}
ABI_0_2_0: Table = {
    "proxy_continue_stream": ("i>i", proxy_continue_stream),
    "proxy_close_stream": ("i>i", proxy_close_stream),
}
