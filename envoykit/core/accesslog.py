"""The access-log contract: what the control plane asks Envoy to log and the telemetry server reads.

Envoy's gRPC access loggers (``envoy.access_loggers.http_grpc`` / ``tcp_grpc``,
``envoy.extensions.access_loggers.grpc.v3``) stream ``StreamAccessLogsMessage`` batches; both sides
agree here on:

* ``log_name`` → reporter: a sidecar's inbound side logs as :data:`LOG_NAMES` ``["destination"]``,
  its outbound side and the gateways as ``["source"]`` (Istio's ``reporter`` label);
* the request/response headers and trailers each HTTP entry carries (the peer header, ``content-type``
  to tell gRPC, ``grpc-status``, trace ids);
* Istio-shaped cluster names, from which the source reporter learns the destination service:
  ``outbound|<port>|<subset>|<name>.<namespace>`` and ``external|<port>||<host>``.
"""

from __future__ import annotations

from typing import NamedTuple

from envoykit.core.peer import PEER_HEADER

#: reporter (Istio's label value) → the ``log_name`` of the access logger reporting it.
LOG_NAMES = {"destination": "envoykit.destination", "source": "envoykit.source"}
_REPORTERS = {v: k for k, v in LOG_NAMES.items()}

#: ``HttpGrpcAccessLogConfig.additional_request_headers_to_log``.
REQUEST_HEADERS = (PEER_HEADER, "content-type", "traceparent", "x-b3-traceid")
#: ``additional_response_headers_to_log`` (``grpc-status`` here for trailers-only gRPC answers).
RESPONSE_HEADERS = (PEER_HEADER, "grpc-status")
#: ``additional_response_trailers_to_log``.
RESPONSE_TRAILERS = ("grpc-status",)

#: Istio's service host suffix: ``destination_service`` is ``<name>.<namespace>.svc.cluster.local``.
SERVICE_DOMAIN = "svc.cluster.local"


def reporter_of(log_name: str) -> str:
    """The reporter (``destination``, ``source``) for a logger's ``log_name``; ``unknown`` otherwise."""
    return _REPORTERS.get(log_name, "unknown")


class ClusterName(NamedTuple):
    """The parts of an Istio-shaped cluster name (``direction|port|subset|host``)."""

    direction: str
    port: str
    subset: str
    host: str


def parse_cluster_name(name: str) -> ClusterName | None:
    """``"outbound|80|v1|backend.default"`` → ``ClusterName("outbound", "80", "v1", "backend.default")``;
    None for names of another shape (``ext_authz``, ``inbound|80||`` has an empty host)."""
    parts = name.split("|")
    if len(parts) != 4:
        return None
    return ClusterName(*parts)


def service_fqdn(name: str, namespace: str) -> str:
    """``("backend", "default")`` → ``"backend.default.svc.cluster.local"`` (Istio's ``destination_service``)."""
    return f"{name}.{namespace}.{SERVICE_DOMAIN}"
