"""The mesh model → Envoy resources for every node: a pure function of (mesh, node).

:func:`translate` returns, per node id, the resources of each xDS type as *groups* of messages by name.
Groups that every node shares (mesh clusters and endpoints, the ``outbound`` routes, extension
clusters) are the same Python objects across nodes, so a 1,000-service mesh is built (and serialized by
the snapshot cache) once, not once per node.

What each node kind gets:

=========  =====================================================================================
sidecar    CDS: mesh clusters, ``inbound|<port>||``, its extension clusters; EDS: mesh endpoints;
           LDS: ``inbound`` and ``outbound``; RDS: ``outbound``, ``inbound|<workload>``
ingress    CDS: mesh clusters, extension clusters; EDS: mesh endpoints; LDS/RDS: its gateway
egress     CDS: ``external|<port>||<host>`` per allowed host; LDS/RDS: its gateway
=========  =====================================================================================

Every node also gets the ``envoykit_telemetry`` cluster and gRPC access loggers on its listeners
(:mod:`envoykit.control.translate.accesslog`) unless ``extensions.access_log.enabled`` is false.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from google.protobuf.message import Message

from envoykit.control.model.mesh import Gateway, Mesh, ProxyExtensions, Service, Workload
from envoykit.control.model.nodes import NodeInfo, mesh_nodes
from envoykit.control.model.queries import referenced_subsets
from envoykit.control.translate import clusters as cl
from envoykit.control.translate import listeners as ls
from envoykit.control.translate import routes as rt
from envoykit.control.translate.accesslog import ACCESS_LOG_CLUSTER, http_access_logs, tcp_access_logs
from envoykit.control.translate.authz_gate import (
    disable_gate_where_authz_is,
    gate_decision_logs,
    load_gate_document,
    node_gate,
)
from envoykit.control.translate.filters import (
    extension_filters,
    fault_filter,
    request_header_filter,
    router_filter,
)
from envoykit.control.xds.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET
from envoykit.core.authzgate import Gate

Group = dict[str, Message]
"""Resources of one xDS type by resource name."""


class MeshTls(Protocol):
    """Builds the mTLS transport sockets (SDS secrets ``default`` and ``ROOTCA``) for a mesh."""

    def downstream(self, mesh: Mesh, svc: Service | Gateway) -> base_pb2.TransportSocket:
        """Server side of a sidecar's inbound listener for ``svc`` or of an egress gateway (client
        certificate required)."""
        ...

    def upstream(self, mesh: Mesh, svc: Service | Gateway) -> base_pb2.TransportSocket:
        """Client side towards ``svc``: present ``default``, verify its SPIFFE ID against ``ROOTCA``."""
        ...


@dataclass
class NodeConfig:
    """One node's resources: ``groups[type_url]`` is a list of name→message groups (some shared)."""

    node: NodeInfo
    groups: dict[str, list[Group]] = field(default_factory=dict)

    def add(self, type_url: str, group: Group) -> None:
        """Append ``group`` to the resources of ``type_url``."""
        self.groups.setdefault(type_url, []).append(group)

    def resources(self, type_url: str) -> dict[str, Message]:
        """Every resource of ``type_url`` by name (merged groups; for tests and validation)."""
        out: dict[str, Message] = {}
        for g in self.groups.get(type_url, []):
            out.update(g)
        return out


@dataclass
class Translation:
    """The result of :func:`translate`: the mesh and each node's resources by node id.

    ``shared`` holds the groups every node shares (internal; :func:`translate_nodes` reuses them)."""

    mesh: Mesh
    nodes: dict[str, NodeConfig]
    gate_digest: str | None = None  # the authz gate document used (None: none read)
    shared: _Shared | None = field(default=None, repr=False, compare=False)


class _Shared:
    """Groups shared by many nodes, built once per translation."""

    def __init__(self, mesh: Mesh, tls: MeshTls | None, endpoints: cl.EndpointSource, base_dir: Path) -> None:
        self.mesh = mesh
        self.als = mesh.extensions.access_log
        if self.als.json_log and not Path(self.als.json_log).is_absolute():  # as the model's other files
            self.als = self.als.model_copy(update={"json_log": str(base_dir.absolute() / self.als.json_log)})
        upstream = None
        if tls is not None:

            def upstream(svc: Service) -> base_pb2.TransportSocket | None:
                has_sidecars = all(w.sidecar is not None for w in svc.workloads)
                return tls.upstream(mesh, svc) if svc.mtls != "DISABLE" and has_sidecars else None

        self.clusters: Group = {}
        self.endpoints: Group = {}
        subsets = referenced_subsets(mesh)
        for svc in mesh.services:
            for subset in ["", *sorted(subsets.get(svc.name, ()))]:
                c = cl.outbound_cluster(mesh, svc, subset, upstream)
                self.clusters[c.name] = c
                self.endpoints[c.name] = cl.outbound_endpoints(mesh, svc, subset, endpoints)
        for gw in mesh.gateways:
            if gw.kind == "egress":  # sidecars reach allowed external hosts through it
                name = f"outbound|{gw.address.port}||{gw.name}.{mesh.ns(gw)}"
                c = cl.static_cluster(name, [gw.address])
                if gw.mtls != "DISABLE" and tls is not None:
                    c.transport_socket.CopyFrom(tls.upstream(mesh, gw))
                self.clusters[name] = c
        self.outbound_routes: Group = {rt.OUTBOUND_ROUTES: rt.outbound_route_config(mesh)}
        ext = mesh.extensions
        self.authz: Group = {
            cl.AUTHZ_CLUSTER: cl.static_cluster(cl.AUTHZ_CLUSTER, [ext.authz.address], http2=True)
        }
        self.ratelimit: Group = {
            cl.RATELIMIT_CLUSTER: cl.static_cluster(cl.RATELIMIT_CLUSTER, [ext.ratelimit.address], http2=True)
        }
        self.telemetry: Group = {
            cl.TELEMETRY_CLUSTER: cl.static_cluster(cl.TELEMETRY_CLUSTER, [ext.telemetry.address], http2=True)
        }
        als = ext.access_log
        self.access_log: Group = (
            {ACCESS_LOG_CLUSTER: cl.static_cluster(ACCESS_LOG_CLUSTER, [als.address], http2=True)}
            if als.enabled
            else {}
        )
        self.gate_doc = load_gate_document(mesh, base_dir)  # None: no native gate
        self.base_dir = base_dir
        self.processors: dict[str, Group] = {}
        for p in ext.processors:
            name = cl.processor_cluster_name(p.name)
            self.processors[p.name] = {name: cl.static_cluster(name, [p.address], http2=True)}

    def gate_logs(self, gate: Gate | None, node: NodeInfo) -> list[accesslog_pb2.AccessLog]:
        """The gate's decision loggers for an HCM of ``node`` with ``gate`` (none without a gate or a log)."""
        return gate_decision_logs(self.mesh, self.base_dir, gate, node.id)

    def extension_clusters(self, ext: ProxyExtensions) -> list[Group]:
        out = []
        if ext.authz is not None:
            out.append(self.authz)
        if ext.ratelimit is not None:
            out.append(self.ratelimit)
        if ext.telemetry:
            out.append(self.telemetry)
        out += [self.processors[p] for p in ext.processors if p in self.processors]
        return out


def _ids(node: NodeInfo) -> dict[str, str]:
    """The node's metadata and id, for the JSON access-log lines Envoy writes."""
    return {**node.metadata(), "id": node.id}


def _sidecar(
    shared: _Shared, node: NodeInfo, svc: Service, wl: Workload, base_dir: Path, tls: MeshTls | None
) -> NodeConfig:
    mesh = shared.mesh
    assert wl.sidecar is not None
    out = NodeConfig(node)
    inbound_cluster = cl.inbound_cluster(svc, wl)
    out.add(CLUSTER, shared.clusters)
    out.add(CLUSTER, {inbound_cluster.name: inbound_cluster})
    for g in shared.extension_clusters(svc.extensions):
        out.add(CLUSTER, g)
    out.add(ENDPOINT, shared.endpoints)
    out.add(CLUSTER, shared.access_log)
    als = shared.als
    if svc.protocol == "tcp":
        inbound_filter = ls.tcp_proxy(
            "inbound", inbound_cluster.name, tcp_access_logs(als, "destination"), als.tcp_flush_interval
        )
    else:
        routes = rt.inbound_route_config(mesh, svc, wl, svc.extensions.ratelimit)
        routes.response_headers_to_add.append(rt.peer_header(node.metadata()))  # callers learn who answered
        gate = node_gate(shared.gate_doc, node, base_dir) if svc.extensions.authz else None
        if gate is not None:
            disable_gate_where_authz_is(routes, gate)
        out.add(ROUTE, {routes.name: routes})
        inbound_filter = ls.http_connection_manager(
            "inbound",
            routes.name,
            extension_filters(mesh, svc.extensions, base_dir, gate=gate),
            forward_client_cert=True,
            strip_any_host_port=True,
            access_log=[
                *http_access_logs(als, "destination", node=_ids(node)),
                *shared.gate_logs(gate, node),
            ],
        )
    downstream = (lambda s: tls.downstream(mesh, s)) if tls is not None else None
    chains = ls.mtls_chains(svc.mtls, inbound_filter, svc, downstream)
    inbound = ls.listener("inbound", wl.sidecar.inbound, chains, inbound=True)
    outbound = ls.listener(
        "outbound",
        wl.sidecar.outbound,
        [
            ls.lc.FilterChain(
                filters=[
                    ls.http_connection_manager(
                        "outbound",
                        rt.OUTBOUND_ROUTES,
                        # the outbound routes are shared by every sidecar: the peer header rides a filter
                        [
                            request_header_filter(rt.peer_header(node.metadata())),
                            fault_filter(),
                            router_filter(),
                        ],
                        access_log=http_access_logs(als, "source", node=_ids(node)),
                    )
                ]
            )
        ],
    )
    listeners = {inbound.name: inbound, outbound.name: outbound}
    for name, address in wl.sidecar.outbound_tcp.items():
        target = mesh.service(name)
        if target is not None:
            cluster = cl.outbound_cluster_name(mesh, target)
            logs = tcp_access_logs(als, "source")
            proxy = ls.tcp_proxy(f"outbound_tcp|{name}", cluster, logs, als.tcp_flush_interval)
            chain = ls.lc.FilterChain(filters=[proxy])
            lst = ls.listener(f"outbound_tcp|{name}", address, [chain])
            listeners[lst.name] = lst
    out.add(LISTENER, listeners)
    out.add(ROUTE, shared.outbound_routes)
    return out


def _gateway(
    shared: _Shared, node: NodeInfo, gw: Gateway, base_dir: Path, mesh_tls: MeshTls | None
) -> NodeConfig:
    mesh = shared.mesh
    out = NodeConfig(node)
    if gw.kind == "ingress":
        routes = rt.gateway_route_config(mesh, gw)
        out.add(CLUSTER, shared.clusters)
        out.add(ENDPOINT, shared.endpoints)
        gate = node_gate(shared.gate_doc, node, base_dir) if gw.extensions.authz else None
        filters = extension_filters(mesh, gw.extensions, base_dir, fault=True, gate=gate)
        tls = ls.ingress_tls_socket(gw.tls.cert_file, gw.tls.key_file) if gw.tls else None
    else:
        routes = rt.egress_route_config(gw)
        externals = [
            cl.external_cluster(ext, ls.origination_tls_socket(ext.host, ext.ca_file) if ext.tls else None)
            for ext in gw.allow
        ]
        out.add(CLUSTER, {c.name: c for c in externals})
        gate = node_gate(shared.gate_doc, node, base_dir) if gw.extensions.authz else None
        filters = extension_filters(mesh, gw.extensions, base_dir, gate=gate)
        tls = None
    for g in shared.extension_clusters(gw.extensions):
        out.add(CLUSTER, g)
    out.add(CLUSTER, shared.access_log)
    if gw.extensions.authz is not None:
        rt.add_authz_context(routes, gw.extensions.authz.context_extensions)
    if gate is not None:
        disable_gate_where_authz_is(routes, gate)
    if gw.kind == "ingress":
        routes.request_headers_to_add.append(rt.peer_header(node.metadata()))  # sidecars learn their caller
    hcm = ls.http_connection_manager(
        gw.name,
        routes.name,
        filters,
        use_remote_address=gw.kind == "ingress",
        strip_any_host_port=gw.kind == "ingress",
        stream_idle_timeout=gw.stream_idle_timeout,
        # gateways report as source
        access_log=[*http_access_logs(shared.als, "source", node=_ids(node)), *shared.gate_logs(gate, node)],
    )
    downstream = (lambda g: mesh_tls.downstream(mesh, g)) if mesh_tls is not None else None
    lst = ls.gateway_listener(gw, hcm, tls, downstream)
    out.add(LISTENER, {lst.name: lst})
    out.add(ROUTE, {routes.name: routes})
    return out


def _node(shared: _Shared, node: NodeInfo, base: Path, tls: MeshTls | None) -> NodeConfig:
    if node.kind == "sidecar":
        assert node.service is not None and node.workload is not None
        return _sidecar(shared, node, node.service, node.workload, base, tls)
    assert node.gateway is not None
    return _gateway(shared, node, node.gateway, base, tls)


def translate(
    mesh: Mesh,
    base_dir: Path | str = ".",
    tls: MeshTls | None = None,
    endpoints: cl.EndpointSource = cl.model_endpoints,
) -> Translation:
    """Translate a validated mesh into each node's Envoy resources.

    Args:
        mesh: a model that passed the schema and semantic checks.
        base_dir: directory relative file paths in the model (Wasm modules) are resolved against.
        tls: builds the mTLS transport sockets; required when a service's ``mtls`` is not DISABLE.
        endpoints: where services' endpoints come from (the model's workloads by default).

    Returns:
        a :class:`Translation` with a :class:`NodeConfig` per node id (no secrets: those come from the
        SDS provider when serving).

    Raises:
        ValueError: a service needs mTLS and ``tls`` is None.
    """
    base = Path(base_dir)
    shared = _Shared(mesh, tls, endpoints, base)
    nodes = {nid: _node(shared, node, base, tls) for nid, node in mesh_nodes(mesh).items()}
    digest = shared.gate_doc.digest if shared.gate_doc is not None else None
    return Translation(mesh=mesh, nodes=nodes, gate_digest=digest, shared=shared)


def translate_nodes(
    previous: Translation,
    mesh: Mesh,
    node_ids: Iterable[str],
    base_dir: Path | str = ".",
    tls: MeshTls | None = None,
) -> Translation:
    """``previous`` for ``mesh``, translating again only the nodes ``node_ids``: the others keep their
    resources, and every node keeps the shared groups of ``previous`` (mesh clusters and endpoints,
    ``outbound`` routes, extension clusters).

    Only correct when ``mesh`` differs from ``previous.mesh`` in nothing the shared groups or the
    other nodes depend on: :func:`envoykit.control.model_diff.endpoint_changes` decides that (a
    workload's app address or its sidecar's inbound address). The shared endpoints are not rebuilt
    here (:mod:`envoykit.control.endpoint_update` does that).

    Raises:
        ValueError: ``previous`` has no shared groups (not made by :func:`translate`), or a node id is
            not a node of ``mesh``.
    """
    if previous.shared is None:
        raise ValueError("the previous translation has no shared groups to reuse")
    shared = copy.copy(previous.shared)
    shared.mesh = mesh
    # the endpoints group gets its own copy: the served translation must not change under it when
    # the caller updates assignments in place (envoykit.control.endpoint_update)
    old_endpoints = previous.shared.endpoints
    shared.endpoints = dict(old_endpoints)
    infos = mesh_nodes(mesh)
    base = Path(base_dir)
    nodes = {
        nid: NodeConfig(
            infos[nid],
            {t: [shared.endpoints if g is old_endpoints else g for g in gs] for t, gs in cfg.groups.items()},
        )
        for nid, cfg in previous.nodes.items()
    }
    for nid in node_ids:
        if nid not in infos:
            raise ValueError(f"{nid} is not a node of the mesh")
        nodes[nid] = _node(shared, infos[nid], base, tls)
    return Translation(mesh=mesh, nodes=nodes, gate_digest=previous.gate_digest, shared=shared)


__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "ROUTE",
    "SECRET",
    "MeshTls",
    "NodeConfig",
    "Translation",
    "translate",
    "translate_nodes",
]
