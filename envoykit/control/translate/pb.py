"""Small protobuf builders shared by the translation modules (durations, addresses, config sources)."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, config_source_pb2, grpc_service_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from envoykit.control.model.types import Address


def pack(msg: Message) -> any_pb2.Any:
    """``msg`` packed into a ``google.protobuf.Any`` (``type.googleapis.com/<full name>``)."""
    out = any_pb2.Any()
    out.Pack(msg)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    """A ``google.protobuf.Duration`` of ``seconds`` (float, millisecond precision is enough here)."""
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def socket_address(addr: Address) -> address_pb2.Address:
    """``envoy.config.core.v3.Address`` (TCP) for ``addr``."""
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=addr.host, port_value=addr.port)
    )


def ads_source() -> config_source_pb2.ConfigSource:
    """A ``ConfigSource`` meaning "over the ADS stream" (v3 resources)."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def envoy_grpc(cluster: str, timeout: float | None = None) -> grpc_service_pb2.GrpcService:
    """A ``GrpcService`` using Envoy's own gRPC client towards ``cluster``; ``timeout`` in seconds."""
    svc = grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster)
    )
    if timeout is not None:
        svc.timeout.CopyFrom(duration(timeout))
    return svc


def fraction(percent: float) -> percent_pb2.FractionalPercent:
    """A percentage 0..100 as ``FractionalPercent`` per million (so 0.1 % is exact)."""
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
    )
