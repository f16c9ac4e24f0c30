"""Read-only HTTP views of the control plane, served on its metrics port (for the dashboard).

* ``GET /status``: :meth:`ControlPlane.status` (streams, acknowledged versions, NACKs with Envoy's
  message, the last refused change) plus ``topology``: the mesh's nodes (kind, service, version,
  principal), services (mTLS mode, workloads) and the weighted routes (configured canary splits).
* ``GET /config/<node id>``: the listeners, routes, clusters and endpoints the control plane serves
  that node, as proto3 JSON (``MessageToDict``) by xDS type (``LDS``, ``RDS``, ``CDS``, ``EDS``).
  Secrets (SDS) are never shown. An unknown node answers 404.

Both are computed on the control plane's event loop (the metrics server calls from its own threads),
so they read one consistent state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from envoykit.control.xds.type_urls import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT
from envoykit.core.metrics import JsonRoute

if TYPE_CHECKING:
    from envoykit.control.server import Compiled, ControlPlane

#: xDS types shown by ``/config`` (never SDS: secrets carry private keys)
SHOWN_TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINT)


def topology(compiled: Compiled) -> dict[str, Any]:
    """The mesh as the dashboard draws it: nodes, services and weighted routes.

    Returns:
        ``{"nodes": [{id, kind, name, service, version, namespace, principal}], "services":
        [{name, mtls, workloads: [{name, version}]}], "gateways": [{name, kind, mtls}],
        "routes": [{virtual_service, route, gateways, destinations: [{service, subset, version, weight}]}]}``;
        ``weight`` is in percent (None when the route has one unweighted destination).
    """
    mesh = compiled.loaded.mesh
    subsets = {
        (dr.host, s.name): s.labels.get("version", s.name)
        for dr in mesh.destination_rules
        for s in dr.subsets
    }
    routes = []
    for vs in mesh.virtual_services:
        for i, r in enumerate(vs.http):
            if not r.route:
                continue
            routes.append(
                {
                    "virtual_service": vs.name,
                    "route": r.name or str(i),
                    "gateways": list(vs.gateways),
                    "destinations": [
                        {
                            "service": d.destination.host,
                            "subset": d.destination.subset,
                            "version": subsets.get((d.destination.host, d.destination.subset or "")),
                            "weight": d.weight,
                        }
                        for d in r.route
                    ],
                }
            )
    return {
        "nodes": [
            {
                "id": nid,
                "kind": cfg.node.kind,
                "name": cfg.node.name,
                "service": cfg.node.app,
                "version": cfg.node.version,
                "namespace": cfg.node.namespace,
                "principal": cfg.node.principal,
            }
            for nid, cfg in sorted(compiled.translation.nodes.items())
        ],
        "services": [
            {
                "name": s.name,
                "mtls": s.mtls,
                "workloads": [{"name": w.name, "version": w.version} for w in s.workloads],
            }
            for s in mesh.services
        ],
        "gateways": [{"name": g.name, "kind": g.kind, "mtls": g.mtls} for g in mesh.gateways],
        "routes": routes,
    }


_MESSAGES: dict[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}


def node_config(compiled: Compiled, node_id: str) -> dict[str, dict[str, Any]] | None:
    """``{"LDS": {name: resource JSON}, "RDS": ..., "CDS": ..., "EDS": ...}`` of ``node_id``, or None.

    Read from the served snapshot (what the node's Envoy receives), unpacked on request."""
    snap = compiled.snapshots.get(node_id)
    if snap is None:
        return None
    out: dict[str, dict[str, Any]] = {}
    for t in SHOWN_TYPES:
        shown = {}
        for name, (_version, packed) in sorted(snap.get(t).entries().items()):
            msg = _MESSAGES[t]()
            packed.Unpack(msg)
            shown[name] = MessageToDict(msg)
        out[SHORT[t]] = shown
    return out


def status_routes(cp: ControlPlane, timeout_s: float = 5.0) -> dict[str, JsonRoute]:
    """The ``/status`` and ``/config/`` routes of ``cp`` (add them with ``AioGrpcServer.add_json_route``)."""

    def on_loop(fn: Callable[[], tuple[int, Any]]) -> tuple[int, Any]:
        loop = cp.loop
        if loop is None or not loop.is_running():
            return 503, {"error": "the control plane is not serving yet"}

        async def call() -> tuple[int, Any]:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout_s)

    def status(_rest: str) -> tuple[int, Any]:
        return on_loop(lambda: (200, {**cp.status(), "topology": topology(cp.current)}))

    def config(rest: str) -> tuple[int, Any]:
        node_id = unquote(rest.strip("/"))

        def read() -> tuple[int, Any]:
            found = node_config(cp.current, node_id)
            if found is None:
                return 404, {"error": f"no node {node_id!r}", "nodes": sorted(cp.current.snapshots)}
            return 200, {"node": node_id, "generation": cp.config.generation, "resources": found}

        return on_loop(read)

    return {"/status": status, "/config/": config}
