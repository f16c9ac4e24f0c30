"""Helpers for the extproc tests: an in-thread ext_proc server and Envoy configs with the filter."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from envoykit.core import AioGrpcServer
from envoykit.extproc.processor import Processor
from envoykit.extproc.service import ExternalProcessorService, add_to_server
from tests.envoycfg import bootstrap, cluster, http_listener, route_to

EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"


class ThreadedServer:
    """An envoykit ext_proc gRPC server on its own event loop in a thread (so tests stay sync)."""

    def __init__(self, processors: list[Processor]) -> None:
        self.service = ExternalProcessorService(processors)
        self.loop = asyncio.new_event_loop()
        self.server: AioGrpcServer | None = None
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()

        async def start() -> int:
            self.server = AioGrpcServer("extproc-test", "127.0.0.1:0")
            add_to_server(self.server, self.service)
            return await self.server.start()

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.stop(0.1), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def ext_proc_filter(
    *,
    processing_mode: dict[str, str] | None = None,
    observability_mode: bool = False,
    failure_mode_allow: bool = False,
    request_attributes: list[str] | None = None,
    response_attributes: list[str] | None = None,
    processors: str | None = None,
    timeout_ms: int = 2000,
    **extra: Any,
) -> dict[str, Any]:
    """The ext_proc HTTP filter pointing at the ``extproc`` cluster."""
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": "extproc"}}
    if processors is not None:
        grpc_service["initial_metadata"] = [{"key": "x-envoykit-processors", "value": processors}]
    cfg: dict[str, Any] = {
        "@type": EXT_PROC_TYPE,
        "grpc_service": grpc_service,
        "failure_mode_allow": failure_mode_allow,
        "observability_mode": observability_mode,
        "message_timeout": f"{timeout_ms / 1000}s",
        "processing_mode": processing_mode or {},
        **extra,
    }
    if request_attributes:
        cfg["request_attributes"] = request_attributes
    if response_attributes:
        cfg["response_attributes"] = response_attributes
    return {"name": "envoy.filters.http.ext_proc", "typed_config": cfg}


def telemetry_filter(*, failure_mode_allow: bool = False) -> dict[str, Any]:
    """The telemetry ext_proc filter as envoy/extproc.yaml configures it (observability mode)."""
    from envoykit.extproc import RESPONSE_ATTRIBUTES

    return ext_proc_filter(
        observability_mode=True,
        failure_mode_allow=failure_mode_allow,
        processing_mode={
            "request_header_mode": "SKIP",
            "response_header_mode": "SEND",
            "response_trailer_mode": "SEND",
        },
        response_attributes=list(RESPONSE_ATTRIBUTES),
        deferred_close_timeout="1s",
    )


def proxy_config(
    port: int,
    upstream_port: int,
    extproc_port: int,
    filters: list[dict[str, Any]],
    *,
    listener_extra: dict[str, Any] | None = None,
    node: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One listener on ``port`` with ``filters`` routing to the echo upstream."""
    lst = http_listener(port, [route_to("echo", route={"timeout": "10s"})], filters)
    lst.update(listener_extra or {})
    cfg = bootstrap([lst], [cluster("echo", upstream_port), cluster("extproc", extproc_port, http2=True)])
    if node:
        cfg["node"] = node
    return cfg
