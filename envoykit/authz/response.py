"""Shape a decision into an ``envoy.service.auth.v3.CheckResponse``.

Every response sets ``status`` explicitly: Envoy reads an unset status as OK (code 0), so a deny must
carry a non-zero code (PERMISSION_DENIED 7, or UNAUTHENTICATED 16 for 401) besides its
``denied_response``. Header values are sent as ``value`` with ``append_action`` OVERWRITE_IF_EXISTS_OR_ADD
so a client cannot pre-set an identity header the policy injects.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2, status_pb2

from envoykit.authz.decisions import Allow, Deny

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_OK_STATUS = status_pb2.Status(code=code_pb2.OK)
_PLAIN_OK = ea.CheckResponse(status=_OK_STATUS, ok_response=ea.OkHttpResponse())


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
    )


def _struct(data: Any) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(data)
    return s


def ok_response(decision: Allow) -> ea.CheckResponse:
    """CheckResponse for an allow; a shared message when there is nothing to mutate."""
    if not (decision.headers or decision.remove_headers or decision.metadata or decision.response_headers):
        return _PLAIN_OK
    ok = ea.OkHttpResponse(
        headers=[_header(k, v) for k, v in decision.headers.items()],
        headers_to_remove=list(decision.remove_headers),
        response_headers_to_add=[_header(k, v) for k, v in decision.response_headers.items()],
    )
    resp = ea.CheckResponse(status=_OK_STATUS, ok_response=ok)
    if decision.metadata:
        resp.dynamic_metadata.CopyFrom(_struct(decision.metadata))
    return resp


def denied_response(decision: Deny, extra_headers: dict[str, str] | None = None) -> ea.CheckResponse:
    """CheckResponse for a deny: non-OK status plus the HTTP status, headers and body for the client."""
    code = code_pb2.UNAUTHENTICATED if decision.status == 401 else code_pb2.PERMISSION_DENIED
    headers = dict(decision.headers)
    if extra_headers:
        headers.update(extra_headers)
    if decision.body and "content-type" not in headers:
        headers["content-type"] = "text/plain"
    return ea.CheckResponse(
        status=status_pb2.Status(code=code, message=decision.body[:200]),
        denied_response=ea.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.status),  # type: ignore[arg-type]
            headers=[_header(k, v) for k, v in headers.items()],
            body=decision.body,
        ),
    )


def response_for(decision: Allow | Deny) -> ea.CheckResponse:
    """The CheckResponse for ``decision``."""
    return ok_response(decision) if isinstance(decision, Allow) else denied_response(decision)


_BYTES_CACHE_MAX = 4096
_bytes_cache: dict[tuple[Any, ...], bytes] = {}


def response_bytes(decision: Allow | Deny) -> bytes:
    """The serialised CheckResponse for ``decision``, cached for decisions without metadata.

    Most answers repeat (the plain allow, an allow setting the same identity header, the same deny),
    so each distinct one is built and serialised once; at most ``4096`` are kept (then the cache
    starts over).
    """
    if isinstance(decision, Allow):
        if decision.metadata:
            return ok_response(decision).SerializeToString()
        key: tuple[Any, ...] = (
            True,
            tuple(decision.headers.items()),
            decision.remove_headers,
            tuple(decision.response_headers.items()),
        )
    else:
        key = (False, decision.status, decision.body, tuple(decision.headers.items()))
    hit = _bytes_cache.get(key)
    if hit is None:
        if len(_bytes_cache) >= _BYTES_CACHE_MAX:
            _bytes_cache.clear()
        hit = _bytes_cache[key] = response_for(decision).SerializeToString()
    return hit
