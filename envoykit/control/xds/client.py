"""A small ADS client (SotW) over the real gRPC API: for tests, the benchmark and debugging.

Example::

    async with AdsClient("127.0.0.1:15010", "sidecar~backend-v1", token) as ads:
        await ads.send(CLUSTER)
        resp = await ads.recv()          # a DiscoveryResponse
        await ads.ack(resp)              # ACK (or ads.nack(resp, "why"))
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2

from envoykit.control.xds.tokens import NODE_TOKEN_HEADER


class AdsClient:
    """One ADS stream as node ``node_id``, presenting ``token`` (``x-envoykit-node-token``) when given.

    Requests carry the node on the first message only, as Envoy does with
    ``set_node_on_first_message_only``.
    """

    def __init__(
        self, address: str, node_id: str, token: str | None = None, *, own_connection: bool = False
    ) -> None:
        self.address = address
        # no cap on a response's size, as Envoy's ADS client (a mesh of thousands of services sends
        # CDS responses beyond gRPC's default 4 MiB); gRPC shares one connection among channels to one
        # target, while a simulated Envoy has its own
        self._options: list[tuple[str, int]] = [("grpc.max_receive_message_length", -1)]
        if own_connection:
            self._options.append(("grpc.use_local_subchannel_pool", 1))
        self.node_id = node_id
        self.token = token
        self._out: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._first = True
        self._in: asyncio.Queue[discovery_pb2.DiscoveryResponse | BaseException] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AdsClient:
        self._channel = grpc.aio.insecure_channel(self.address, options=self._options)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        metadata = ((NODE_TOKEN_HEADER, self.token),) if self.token else None
        self._call = stub.StreamAggregatedResources(self._requests(), metadata=metadata)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        # reads on its own task: cancelling a pending read would cancel the whole RPC
        try:
            async for resp in self._call:
                self._in.put_nowait(resp)
            self._in.put_nowait(EOFError("the server closed the stream"))
        except grpc.aio.AioRpcError as exc:
            self._in.put_nowait(exc)
        except asyncio.CancelledError:
            pass

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._out.put_nowait(None)
        if self._reader is not None:
            self._reader.cancel()
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            req = await self._out.get()
            if req is None:
                return
            yield req

    async def send(
        self,
        type_url: str,
        names: Iterable[str] = (),
        *,
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        """Send a DiscoveryRequest (subscribe, ACK with ``nonce``, NACK with ``error``)."""
        req = discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
        )
        if self._first:
            req.node.CopyFrom(base_pb2.Node(id=self.node_id))
            self._first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._out.put_nowait(req)

    async def recv(self, timeout: float = 10.0) -> discovery_pb2.DiscoveryResponse:
        """The next response.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
            grpc.aio.AioRpcError: the server ended the stream (e.g. PERMISSION_DENIED).
            EOFError: the stream ended without an error.
        """
        item = await asyncio.wait_for(self._in.get(), timeout)
        if isinstance(item, BaseException):
            self._in.put_nowait(item)  # stays ended
            raise item
        return item

    async def ack(self, resp: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        """Accept ``resp`` (keep subscribing to ``names``)."""
        await self.send(resp.type_url, names, version=resp.version_info, nonce=resp.nonce)

    async def nack(
        self,
        resp: discovery_pb2.DiscoveryResponse,
        message: str,
        accepted_version: str = "",
        names: Iterable[str] = (),
    ) -> None:
        """Refuse ``resp`` with ``message``; ``accepted_version`` is what the client still runs."""
        await self.send(resp.type_url, names, version=accepted_version, nonce=resp.nonce, error=message)


class DeltaAdsClient(AdsClient):
    """One incremental ADS stream (``DeltaAggregatedResources``) as node ``node_id``: the same
    connection options and token as :class:`AdsClient`, with delta requests and responses.

    Example::

        async with DeltaAdsClient(address, "sidecar~backend-v1", token) as ads:
            await ads.subscribe(CLUSTER)            # a first CDS request naming nothing: wildcard
            resp = await ads.recv()                 # a DeltaDiscoveryResponse
            await ads.ack(resp)
    """

    async def __aenter__(self) -> DeltaAdsClient:
        self._channel = grpc.aio.insecure_channel(self.address, options=self._options)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        metadata = ((NODE_TOKEN_HEADER, self.token),) if self.token else None
        self._call = stub.DeltaAggregatedResources(self._requests(), metadata=metadata)  # type: ignore[arg-type]
        self._reader = asyncio.create_task(self._read())
        return self

    async def subscribe(
        self,
        type_url: str,
        names: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        *,
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        """Send a DeltaDiscoveryRequest: subscribe to ``names``, drop ``unsubscribe``, ACK ``nonce``
        (NACK it with ``error``)."""
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(names),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
        )
        if self._first:
            req.node.CopyFrom(base_pb2.Node(id=self.node_id))
            self._first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._out.put_nowait(req)  # type: ignore[arg-type]

    async def ack(self, resp: Any, names: Iterable[str] = ()) -> None:
        """Accept the DeltaDiscoveryResponse ``resp`` (and subscribe to ``names`` in the same request)."""
        await self.subscribe(resp.type_url, names, nonce=resp.nonce)
