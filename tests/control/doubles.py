"""gRPC servers standing in for envoykit's authz, ratelimit and extproc servers in wiring tests.

They implement Envoy's real service APIs (envoy.service.auth.v3, ratelimit.v3, ext_proc.v3) and record
what Envoy sent, so a test can check what the control plane wired: which requests are checked, with
which context extensions, descriptors and attributes. The servers themselves are tested by their rooms.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.rpc import code_pb2, status_pb2


class _Authz(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, owner: GrpcDouble) -> None:
        self.owner = owner

    def Check(self, request: external_auth_pb2.CheckRequest, context: Any) -> external_auth_pb2.CheckResponse:
        self.owner.record(request)
        denied = request.attributes.request.http.path.startswith("/deny")
        code = code_pb2.PERMISSION_DENIED if denied else code_pb2.OK
        return external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code))


class _RateLimit(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, owner: GrpcDouble) -> None:
        self.owner = owner

    def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
        self.owner.record(request)
        over = any(e.value == "greedy" for d in request.descriptors for e in d.entries)
        code = rls_pb2.RateLimitResponse.OVER_LIMIT if over else rls_pb2.RateLimitResponse.OK
        return rls_pb2.RateLimitResponse(overall_code=code)


class _ExtProc(external_processor_pb2_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, owner: GrpcDouble) -> None:
        self.owner = owner

    def Process(
        self, request_iterator: Iterator[external_processor_pb2.ProcessingRequest], context: Any
    ) -> Iterator[external_processor_pb2.ProcessingResponse]:
        for req in request_iterator:  # observability mode: Envoy expects no answer
            self.owner.record(req)
        return iter(())


class GrpcDouble:
    """One of ``authz``, ``ratelimit``, ``extproc`` on a free loopback port; ``requests`` it received."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.requests: list[Any] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        if kind == "authz":
            external_auth_pb2_grpc.add_AuthorizationServicer_to_server(_Authz(self), self.server)
        elif kind == "ratelimit":
            rls_pb2_grpc.add_RateLimitServiceServicer_to_server(_RateLimit(self), self.server)
        else:
            external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(_ExtProc(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def record(self, msg: Any) -> None:
        with self._lock:
            self.requests.append(msg)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> GrpcDouble:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(0)
