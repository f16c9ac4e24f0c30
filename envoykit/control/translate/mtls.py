"""Mesh mTLS for the translation: the CA's TLS builders (:mod:`envoykit.control.translate.tls`) per service.

Both sides present the node's ``default`` secret and verify the peer with ``ROOTCA`` (SDS over ADS):

* a sidecar's inbound listener accepts any SPIFFE ID of the mesh's trust domain (STRICT: client
  certificate required; PERMISSIVE: a plaintext chain beside it);
* a cluster towards a service verifies that service's SPIFFE ID exactly
  (``spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>``), so a wrong service answering is
  refused (Istio's secure naming).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2

from envoykit.control.model.mesh import Gateway, Mesh, Service
from envoykit.control.translate.tls import inbound_tls_context, outbound_tls_context, tls_transport_socket
from envoykit.core.spiffe import spiffe_id


class SpiffeMeshTls:
    """:class:`~envoykit.control.translate.translation.MeshTls` built on the mesh CA's SPIFFE certificates."""

    def __init__(self) -> None:
        self._downstream: dict[str, bytes] = {}  # trust domain → the socket, serialized

    def downstream(self, mesh: Mesh, svc: Service | Gateway) -> base_pb2.TransportSocket:
        """The inbound TLS socket of ``svc``'s sidecars or of an egress gateway (client certificate
        required, SANs of the trust domain). The same for every sidecar of a trust domain: built
        once, each caller gets its own copy."""
        wire = self._downstream.get(mesh.trust_domain)
        if wire is None:
            wire = tls_transport_socket(inbound_tls_context(mesh.trust_domain)).SerializeToString()
            self._downstream[mesh.trust_domain] = wire
        return base_pb2.TransportSocket.FromString(wire)

    def upstream(self, mesh: Mesh, svc: Service | Gateway) -> base_pb2.TransportSocket:
        """The TLS socket of clusters calling ``svc``: verifies its SPIFFE ID; ALPN h2 for HTTP/2."""
        sid = spiffe_id(mesh.trust_domain, mesh.ns(svc), mesh.service_account(svc))
        alpn = ("h2",) if isinstance(svc, Service) and svc.protocol in ("http2", "grpc") else ()
        return tls_transport_socket(outbound_tls_context(sid, alpn=alpn))
