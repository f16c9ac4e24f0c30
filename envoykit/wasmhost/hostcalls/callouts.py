"""Callouts: ``proxy_http_call`` and the gRPC family (``proxy_grpc_call``, ``_stream``, ``_send``,
``_cancel``, ``_close``).

Calls are recorded on the plugin for the test to answer (:class:`~envoykit.wasmhost.HttpCall`).
Envoy's checks (``Context::httpCall``): a negative timeout or an unknown cluster is BAD_ARGUMENT;
the headers must carry ``:path``, ``:method`` and ``:authority`` (else BAD_ARGUMENT). Call ids
follow cpp-host ``wasm.h``: HTTP 4, 8, 12...; gRPC calls 5, 9...; gRPC streams 6, 10...
(the low two bits tell the kind). An unknown gRPC cluster is PARSE_FAILURE (Envoy ``grpcCall``).
"""

from __future__ import annotations

from typing import Any

from envoykit.wasmhost.abi import Status
from envoykit.wasmhost.callouts import GrpcCall, HttpCall
from envoykit.wasmhost.headermap import HeaderMap
from envoykit.wasmhost.hostcalls.table import Table
from envoykit.wasmhost.pairs import decode_pairs


def proxy_http_call(
    vm: Any,
    up_ptr: int,
    up_size: int,
    hdr_ptr: int,
    hdr_size: int,
    body_ptr: int,
    body_size: int,
    trl_ptr: int,
    trl_size: int,
    timeout_ms: int,
    token_ptr: int,
) -> int:
    """``proxy_http_call(upstream_data, upstream_size, serialized_headers_data, serialized_headers_size,
    body_data, body_size, serialized_trailers_data, serialized_trailers_size, timeout_ms, return_call_id
    *) -> status``.
    """
    cluster = vm.read(up_ptr, up_size).decode(errors="replace")
    headers = HeaderMap(decode_pairs(vm.read(hdr_ptr, hdr_size)) or [])
    body = vm.read(body_ptr, body_size)
    trailers = HeaderMap(decode_pairs(vm.read(trl_ptr, trl_size)) or [])
    timeout = timeout_ms - (1 << 32) if timeout_ms >= 1 << 31 else timeout_ms
    plugin = vm.plugin
    if timeout < 0 or not plugin.host.knows_cluster(cluster):
        return Status.BAD_ARGUMENT
    if not all(k in headers for k in (":path", ":method", ":authority")):
        return Status.BAD_ARGUMENT
    if body:
        headers.replace("content-length", str(len(body)))
    token = plugin.next_call_id(0)
    call = HttpCall(
        plugin=plugin,
        token=token,
        cluster=cluster,
        headers=headers,
        body=body,
        trailers=trailers,
        timeout_ms=timeout,
        context_id=plugin.effective.id,
    )
    vm.write_u32(token_ptr, token)
    plugin.http_calls.append(call)
    return Status.OK


def _grpc_common(
    vm: Any, up: tuple[int, int], svc: tuple[int, int], meth: tuple[int, int], md: tuple[int, int]
) -> Any:
    return (
        vm.read(*up).decode(errors="replace"),
        vm.read(*svc).decode(errors="replace"),
        vm.read(*meth).decode(errors="replace"),
        HeaderMap(decode_pairs(vm.read(*md)) or []),
    )


def proxy_grpc_call(
    vm: Any, up_p: int, up_s: int, sv_p: int, sv_s: int, me_p: int, me_s: int,
    md_p: int, md_s: int, msg_p: int, msg_s: int, timeout_ms: int, token_ptr: int,
) -> int:  # fmt: skip
    """``proxy_grpc_call(upstream_data, upstream_size, service_name_data, service_name_size,
    method_name_data, method_name_size, serialized_initial_metadata_data,
    serialized_initial_metadata_size, message_data, message_size, timeout_ms, return_call_id *) ->
    status``.
    """
    cluster, service, method, metadata = _grpc_common(
        vm, (up_p, up_s), (sv_p, sv_s), (me_p, me_s), (md_p, md_s)
    )
    message = vm.read(msg_p, msg_s)
    plugin = vm.plugin
    if not plugin.host.knows_cluster(cluster):
        return Status.PARSE_FAILURE
    token = plugin.next_call_id(1)
    plugin.grpc_calls.append(
        GrpcCall(plugin, token, cluster, service, method, metadata, [message], timeout_ms, stream=False)
    )
    vm.write_u32(token_ptr, token)
    return Status.OK


def proxy_grpc_stream(
    vm: Any,
    up_p: int,
    up_s: int,
    sv_p: int,
    sv_s: int,
    me_p: int,
    me_s: int,
    md_p: int,
    md_s: int,
    token_ptr: int,
) -> int:
    """``proxy_grpc_stream(upstream_data, upstream_size, service_name_data, service_name_size,
    method_name_data, method_name_size, serialized_initial_metadata_data,
    serialized_initial_metadata_size, return_stream_id *) -> status``.
    """
    cluster, service, method, metadata = _grpc_common(
        vm, (up_p, up_s), (sv_p, sv_s), (me_p, me_s), (md_p, md_s)
    )
    plugin = vm.plugin
    if not plugin.host.knows_cluster(cluster):
        return Status.PARSE_FAILURE
    token = plugin.next_call_id(2)
    plugin.grpc_calls.append(GrpcCall(plugin, token, cluster, service, method, metadata, [], 0, stream=True))
    vm.write_u32(token_ptr, token)
    return Status.OK


def proxy_grpc_send(vm: Any, token: int, msg_ptr: int, msg_size: int, end_stream: int) -> int:
    """``proxy_grpc_send(stream_id, message_data, message_size, end_stream) -> status``."""
    message = vm.read(msg_ptr, msg_size)
    if token & 3 != 2:
        return Status.BAD_ARGUMENT
    call = vm.plugin.grpc_call(token)
    if call is None:
        return Status.NOT_FOUND
    call.messages.append(message)
    call.local_closed = call.local_closed or bool(end_stream)
    return Status.OK


def proxy_grpc_cancel(vm: Any, token: int) -> int:
    """``proxy_grpc_cancel(call_or_stream_id) -> status``."""
    call = vm.plugin.grpc_call(token)
    if call is None:
        return Status.NOT_FOUND
    call.cancelled = True
    vm.plugin.grpc_calls.remove(call)
    return Status.OK


def proxy_grpc_close(vm: Any, token: int) -> int:
    """``proxy_grpc_close(call_or_stream_id) -> status``."""
    call = vm.plugin.grpc_call(token)
    if call is None:
        return Status.NOT_FOUND
    call.local_closed = True
    if not call.stream:
        vm.plugin.grpc_calls.remove(call)  # Envoy grpcClose on a call cancels it
    return Status.OK


FUNCTIONS: Table = {
    "proxy_http_call": ("iiiiiiiiii>i", proxy_http_call),
    "proxy_grpc_call": ("iiiiiiiiiiii>i", proxy_grpc_call),
    "proxy_grpc_stream": ("iiiiiiiii>i", proxy_grpc_stream),
    "proxy_grpc_send": ("iiii>i", proxy_grpc_send),
    "proxy_grpc_cancel": ("i>i", proxy_grpc_cancel),
    "proxy_grpc_close": ("i>i", proxy_grpc_close),
}
