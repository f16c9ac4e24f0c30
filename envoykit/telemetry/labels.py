"""Istio's metric labels from one access-log entry, and the bound on how many values a label may take.

Label names, order and meaning follow https://istio.io/latest/docs/reference/config/metrics/ (the
"Labels" section). Where each value comes from:

* ``reporter``: the logger's ``log_name`` (:mod:`envoykit.core.accesslog`): a sidecar's inbound side is
  ``destination``, its outbound side and the gateways are ``source``;
* the reporting Envoy's own side: its node metadata (``StreamAccessLogsMessage.identifier.node``,
  keys of :mod:`envoykit.control.model.nodes`);
* the other side: the ``x-envoykit-peer`` header (request header inbound, response header outbound,
  :mod:`envoykit.core.peer`). Inbound, the source principal comes only from the verified client
  certificate (``AccessLogCommon.tls_properties.peer_certificate_properties`` URI SAN), and
  ``connection_security_policy`` is ``mutual_tls`` exactly then, else ``none``; outbound it is
  ``unknown``, as Istio reports it on the client side;
* ``destination_service``: ``<name>.<namespace>.svc.cluster.local`` (inbound: the reporting workload's
  service; outbound: from the Istio-shaped ``upstream_cluster``; an external host as is);
* ``source_cluster`` / ``destination_cluster``: an envoykit mesh is one cluster, named by its ``mesh_id``;
* canonical service / revision: the ``app`` and ``version`` labels (``latest`` when absent), as Istio
  falls back to them without ``service.istio.io/canonical-*`` labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoykit.core.accesslog import parse_cluster_name, reporter_of, service_fqdn
from envoykit.core.cardinality import UNKNOWN
from envoykit.core.cardinality import LabelGuard as BaseLabelGuard
from envoykit.core.peer import spiffe_parts

#: Labels of the HTTP/gRPC metrics, in Istio's order.
HTTP_LABELS = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
#: Labels of the TCP metrics: the HTTP ones without response code and gRPC status.
TCP_LABELS = tuple(n for n in HTTP_LABELS if n not in ("response_code", "grpc_response_status"))
_TCP_INDEX = tuple(HTTP_LABELS.index(n) for n in TCP_LABELS)
_GRPC = HTTP_LABELS.index("grpc_response_status")


class LabelGuard(BaseLabelGuard):
    """:class:`envoykit.core.cardinality.LabelGuard` with the telemetry labels' own rule for
    ``grpc_response_status`` (:meth:`apply`)."""

    def apply(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """``values`` with each label bounded (label positions as in :data:`HTTP_LABELS`); an empty
        ``grpc_response_status`` stays empty (not gRPC), as Istio reports it."""
        return tuple(v if i == _GRPC and not v else self(i, v) for i, v in enumerate(values))


@dataclass
class Reporter:
    """The Envoy at the other end of one access-log stream.

    Attributes:
        reporter: ``destination``, ``source`` or ``unknown`` (from ``log_name``).
        node_id: ``Node.id`` (``sidecar~backend-v1``), as sent.
        meta: its node metadata (string values only).
        cache: raw entry facts → series, filled by the recorder (few distinct keys per stream).
        connected: open TCP connections' ``stream_id`` → [sent, received] bytes counted for them so far.
    """

    reporter: str
    node_id: str
    meta: dict[str, str]
    cache: dict[Any, Any] = field(default_factory=dict)
    connected: dict[str, list[int]] = field(default_factory=dict)
    node_label: str = ""  # node_id as the server's own metrics label it (bounded like the others)

    @classmethod
    def from_identifier(cls, identifier: Any) -> Reporter:
        """From ``StreamAccessLogsMessage.Identifier`` (``node``, ``log_name``)."""
        meta: dict[str, str] = {}
        for key, value in identifier.node.metadata.fields.items():
            if value.WhichOneof("kind") == "string_value":
                meta[key] = value.string_value
        return cls(reporter_of(identifier.log_name), identifier.node.id, meta)


def _side(meta: Mapping[str, str], principal: str) -> tuple[str, ...]:
    """workload, canonical service, canonical revision, namespace, principal, app, version, cluster."""
    app = meta.get("app", "")
    version = meta.get("version", "")
    return (
        meta.get("workload", ""),
        app or meta.get("workload", ""),
        version or "latest",
        meta.get("namespace") or spiffe_parts(principal)[0],
        principal,
        app,
        version,
        meta.get("mesh_id", ""),
    )


def destination_service(upstream_cluster: str, authority: str) -> tuple[str, str, str]:
    """``(destination_service, destination_service_name, destination_service_namespace)`` as the source
    reporter sees it: from an ``outbound|port|subset|name.ns`` or ``external|port||host`` cluster, else
    the request's authority without port."""
    parts = parse_cluster_name(upstream_cluster)
    if parts is not None and parts.host:
        if parts.direction == "outbound":
            name, _, ns = parts.host.partition(".")
            if ns:
                return service_fqdn(name, ns), name, ns
        return parts.host, parts.host, ""
    host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    return host, host, ""


def label_values(
    rep: Reporter,
    peer: Mapping[str, str],
    peer_principal: str,
    upstream_cluster: str,
    authority: str,
    protocol: str,
    code: str,
    grpc_status: str,
    flags: str,
) -> tuple[str, ...]:
    """The values of :data:`HTTP_LABELS` (unbounded; see :class:`LabelGuard`).

    Args:
        rep: the reporting Envoy.
        peer: the other side's labels (parsed ``x-envoykit-peer``; empty when absent).
        peer_principal: inbound, the URI SAN of the verified client certificate ('' without one).
        upstream_cluster / authority: where the request went (the source side's destination service).
        protocol: ``http``, ``grpc`` or ``tcp``.
        code: the response code ('0' when none was sent), '' for TCP.
        grpc_status: the ``grpc-status`` ('' when not gRPC).
        flags: Envoy's response flags (``-`` for none).
    """
    me = rep.meta
    if rep.reporter == "destination":
        src = _side(peer, peer_principal)
        dst = _side(me, me.get("principal", ""))
        security = "mutual_tls" if peer_principal else "none"
        ns = me.get("namespace", "")
        name = me.get("app", "")
        service = service_fqdn(name, ns) if name and ns else ""
    else:
        src = _side(me, me.get("principal", ""))
        dst = _side(peer, peer.get("principal", ""))
        security = UNKNOWN
        service, name, ns = destination_service(upstream_cluster, authority)
        if peer.get("namespace") and not ns:
            ns = peer["namespace"]
    return (
        rep.reporter,
        *src,
        dst[0],
        dst[3],
        dst[4],
        dst[5],
        dst[6],
        service,
        dst[1],
        dst[2],
        name,
        ns,
        dst[7],
        protocol,
        code,
        grpc_status,
        flags,
        security,
    )


def tcp_values(http_values: tuple[str, ...]) -> tuple[str, ...]:
    """:data:`TCP_LABELS` values picked from a full :data:`HTTP_LABELS` tuple."""
    return tuple(http_values[i] for i in _TCP_INDEX)
