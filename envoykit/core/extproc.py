"""The ext_proc contract: what the control plane configures in Envoy's ext_proc filters and the ext_proc
server reads.

* :data:`PROCESSORS_HEADER`: the gRPC metadata (``GrpcService.initial_metadata``) naming, comma-separated,
  the processors a filter's streams run (``x-envoykit-processors: name1,name2``);
* :data:`TELEMETRY_PROCESSOR`: the name of the built-in telemetry processor;
* :data:`RESPONSE_ATTRIBUTES`: the ``response_attributes`` of the telemetry filter (Envoy attributes,
  ``envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor.response_attributes``): the reporting
  Envoy's node metadata (the keys of the peer header), the listener direction (INBOUND → reporter
  destination), the request facts and both peers' certificates.

``response.grpc_status`` is not in the list: at response headers Envoy still reports 2 (UNKNOWN), so the
processor reads ``grpc-status`` from a trailers-only response or from the trailers instead.
"""

from __future__ import annotations

from envoykit.core.peer import PEER_HEADER, PEER_KEYS

PROCESSORS_HEADER = "x-envoykit-processors"
TELEMETRY_PROCESSOR = "telemetry"

RESPONSE_ATTRIBUTES: tuple[str, ...] = (
    *(f"xds.node.metadata.{k}" for k in PEER_KEYS),
    "xds.listener_direction",
    "xds.cluster_name",
    "request.host",
    "request.protocol",
    "request.time",
    "request.total_size",
    "request.headers['content-type']",
    f"request.headers['{PEER_HEADER}']",
    "response.code",
    "connection.mtls",
    "connection.uri_san_peer_certificate",
    "upstream.uri_san_peer_certificate",
)
