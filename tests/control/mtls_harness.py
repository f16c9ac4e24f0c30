"""Test harness: a tiny state-of-the-world ADS server and sidecar bootstraps.

:class:`MiniAds` serves, per node, Secrets from a :class:`SecretProvider` and Clusters given by the test,
checks each stream's node token (``x-envoykit-node-token``, :class:`NodeTokens`), records ACKs and NACKs,
and pushes again when :meth:`MiniAds.push` is called (wired to the provider's ``on_change``). It stands in
for the control plane's ADS server so the CA, SDS and mTLS builders are tested through real Envoys alone.
"""

from __future__ import annotations

import itertools
import queue
import ssl
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.message import Message

from envoykit.control.pki.sds import SECRET_TYPE_URL, SecretProvider
from envoykit.control.translate.tls import outbound_tls_context, tls_transport_socket
from envoykit.control.xds.tokens import NODE_TOKEN_HEADER, NodeTokens
from envoykit.core import free_port
from tests.envoycfg import cluster, socket_address

CLUSTER_TYPE_URL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


class MiniAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """SotW ADS for Secrets (from ``provider``) and Clusters (``self.clusters[node_id]``).

    Args:
        provider: the secret provider under test.
        identities: node ID → SPIFFE ID the node is entitled to.
        tokens: node credentials; a stream whose token does not verify for its node ID is refused.
    """

    def __init__(self, provider: SecretProvider, identities: dict[str, str], tokens: NodeTokens) -> None:
        self.provider = provider
        self.identities = identities
        self.tokens = tokens
        self.clusters: dict[str, list[Message]] = {}
        self.cluster_versions: dict[str, int] = {}
        self.acks: list[tuple[str, str, str]] = []  # (node, type_url, version)
        self.nacks: list[tuple[str, str, str]] = []  # (node, type_url, error message)
        self.refused: list[str] = []  # node IDs whose stream was refused
        self._streams: list[tuple[str, queue.Queue[Any]]] = []
        self._lock = threading.Lock()
        self._nonce = itertools.count(1)
        self.port = free_port()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")

    def __enter__(self) -> MiniAds:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(0)

    def push(self, node_id: str | None = None) -> None:
        """Wake the streams of ``node_id`` (all when None) to send whatever changed."""
        with self._lock:
            for nid, q in self._streams:
                if node_id is None or nid == node_id:
                    q.put(("push", None))

    def set_clusters(self, node_id: str, clusters: list[Message]) -> None:
        """Replace the clusters served to ``node_id`` and push them."""
        self.clusters[node_id] = clusters
        self.cluster_versions[node_id] = self.cluster_versions.get(node_id, 0) + 1
        self.push(node_id)

    def _version(self, node_id: str, type_url: str) -> str:
        if type_url == SECRET_TYPE_URL:
            return self.provider.version(node_id)
        return str(self.cluster_versions.get(node_id, 0))

    def _resources(self, node_id: str, type_url: str, names: list[str]) -> list[Message]:
        if type_url == SECRET_TYPE_URL:
            secrets = self.provider.secrets_for_node(node_id, self.identities[node_id])
            return [s for s in secrets if not names or s.name in names]
        if type_url == CLUSTER_TYPE_URL:
            return list(self.clusters.get(node_id, []))
        return []

    def StreamAggregatedResources(
        self, request_iterator: Iterator[discovery_pb2.DiscoveryRequest], context: grpc.ServicerContext
    ) -> Iterator[discovery_pb2.DiscoveryResponse]:
        token = dict(context.invocation_metadata()).get(NODE_TOKEN_HEADER)
        q: queue.Queue[Any] = queue.Queue()

        def read() -> None:
            try:
                for req in request_iterator:
                    q.put(("req", req))
            except grpc.RpcError:
                pass
            q.put(("end", None))

        threading.Thread(target=read, daemon=True).start()
        node_id = ""
        sent: dict[str, tuple[str, tuple[str, ...]]] = {}  # type → (version, names) last sent
        names: dict[str, tuple[str, ...]] = {}
        try:
            while True:
                kind, req = q.get()
                if kind == "end":
                    return
                if kind == "req":
                    if not node_id:
                        node_id = req.node.id
                        if node_id not in self.identities or not self.tokens.verify(node_id, token):
                            self.refused.append(node_id)
                            context.abort(
                                grpc.StatusCode.PERMISSION_DENIED, f"bad token for node {node_id!r}"
                            )
                        with self._lock:
                            self._streams.append((node_id, q))
                    if req.response_nonce:
                        if req.HasField("error_detail"):
                            self.nacks.append((node_id, req.type_url, req.error_detail.message))
                        else:
                            self.acks.append((node_id, req.type_url, req.version_info))
                    names[req.type_url] = tuple(sorted(req.resource_names))
                types = list(names) if kind == "push" else [req.type_url]
                for type_url in types:
                    version = self._version(node_id, type_url)
                    if sent.get(type_url) == (version, names[type_url]):
                        continue  # an ACK, or nothing new
                    resources = self._resources(node_id, type_url, list(names[type_url]))
                    packed = []
                    for r in resources:
                        a = any_pb2.Any()
                        a.Pack(r)
                        packed.append(a)
                    sent[type_url] = (version, names[type_url])
                    yield discovery_pb2.DiscoveryResponse(
                        version_info=version,
                        type_url=type_url,
                        resources=packed,
                        nonce=str(next(self._nonce)),
                    )
        finally:
            with self._lock:
                self._streams = [(n, s) for n, s in self._streams if s is not q]


def sidecar_bootstrap(
    node_id: str,
    ads: MiniAds | int,
    token: str | None,
    listeners: list[dict[str, Any]],
    static_clusters: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """A sidecar's bootstrap: node identity, ADS (with the node token) for CDS and SDS, static listeners."""
    port = ads.port if isinstance(ads, MiniAds) else ads
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": "xds"}}
    if token is not None:
        grpc_service["initial_metadata"] = [{"key": NODE_TOKEN_HEADER, "value": token}]
    return {
        "node": {"id": node_id, "cluster": node_id},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [grpc_service],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "listeners": listeners,
            "clusters": [cluster("xds", port, http2=True), *static_clusters],
        },
    }


def mesh_cluster(name: str, port: int, server_spiffe_id: str) -> cluster_pb2.Cluster:
    """An outbound cluster to ``127.0.0.1:port`` over mTLS, verifying ``server_spiffe_id``; one request per
    connection so every request makes a fresh handshake (what rotation tests need)."""
    c = cluster(name, port)
    c["transport_socket"] = MessageToDict(
        tls_transport_socket(outbound_tls_context(server_spiffe_id)), preserving_proto_field_name=True
    )
    c["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"max_requests_per_connection": 1},
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401  (registers the type)
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401

    return ParseDict(c, cluster_pb2.Cluster())


def xfcc_hcm() -> dict[str, Any]:
    """HCM options of an inbound sidecar listener: pass the verified peer's URI SAN to the app in XFCC."""
    return {"forward_client_cert_details": "SANITIZE_SET", "set_current_client_cert_details": {"uri": True}}


def client_ssl_context(chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> ssl.SSLContext:
    """A Python TLS client presenting ``chain_pem``/``key_pem`` and trusting ``bundle_pem``.

    Mesh certificates carry no DNS name, so host name checking is off; the chain is still verified.
    """
    ctx = ssl.create_default_context(cadata=bundle_pem.decode())
    ctx.check_hostname = False
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert.write_bytes(chain_pem)
        key.write_bytes(key_pem)
        ctx.load_cert_chain(cert, key)
    return ctx


__all__ = ["MiniAds", "client_ssl_context", "mesh_cluster", "sidecar_bootstrap", "socket_address", "xfcc_hcm"]
