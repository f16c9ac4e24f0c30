"""The endpoint-only road of a change: new ClusterLoadAssignments into the served snapshots, without
translating listeners, routes or clusters again.

An EndpointSlice event (or any endpoint source's change) moves addresses, nothing else. The full road
(parse mesh.yaml, translate every node, pack) takes seconds at 5,000 services; this one rebuilds the
assignments of the services named, compares them with what is served, repacks only those that
differ into a new copy of the shared endpoints part, and gives every node whose EDS set holds that
part a snapshot with the new part. The ADS server then sends each stream only the assignments that
changed (:func:`envoykit.control.xds.snapshot.changed_resources`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from envoy.config.endpoint.v3 import endpoint_pb2

from envoykit.control.model.mesh import Mesh
from envoykit.control.model.queries import referenced_subsets
from envoykit.control.translate.clusters import EndpointSource, outbound_endpoints
from envoykit.control.xds.snapshot import Part, TypeSet
from envoykit.control.xds.type_urls import ENDPOINT

if TYPE_CHECKING:
    from envoykit.control.server import Compiled


def assignments(
    mesh: Mesh, source: EndpointSource, services: Iterable[str] | None = None
) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    """The ClusterLoadAssignment of every cluster (each subset too) of ``services`` (None: all), by
    cluster name, with addresses from ``source``; names not in the mesh are ignored."""
    wanted = None if services is None else set(services)
    subsets = referenced_subsets(mesh)
    out: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}
    for svc in mesh.services:
        if wanted is not None and svc.name not in wanted:
            continue
        for subset in ["", *sorted(subsets.get(svc.name, ()))]:
            cla = outbound_endpoints(mesh, svc, subset, source)
            out[cla.cluster_name] = cla
    return out


def with_assignments(
    compiled: Compiled, fresh: dict[str, endpoint_pb2.ClusterLoadAssignment]
) -> tuple[Compiled, int] | None:
    """``compiled`` with ``fresh`` in place of the served assignments of the same names, and how many
    differed; None when none did. Parts and groups are replaced, never changed in place, except the
    translation's endpoint groups (the ``/config/<node>`` view), updated to match."""
    new_parts: dict[int, Part] = {}
    changed: set[str] = set()
    seen: set[int] = set()
    for snap in compiled.snapshots.values():
        for p in snap.get(ENDPOINT).parts:
            if id(p) in seen:
                continue
            seen.add(id(p))
            diff = {
                n: cla
                for n, cla in fresh.items()
                if n in p.items and p.items[n].value != cla.SerializeToString()
            }
            if diff:
                new_parts[id(p)] = p.replace(diff)
                changed |= set(diff)
    if not changed:
        return None
    snapshots = {}
    for nid, snap in compiled.snapshots.items():
        ts = snap.get(ENDPOINT)
        if any(id(p) in new_parts for p in ts.parts):
            snap = snap.with_type(ENDPOINT, TypeSet(new_parts.get(id(p), p) for p in ts.parts))
        snapshots[nid] = snap
    groups_done: set[int] = set()
    for cfg in compiled.translation.nodes.values():
        for g in cfg.groups.get(ENDPOINT, []):
            if id(g) not in groups_done:
                groups_done.add(id(g))
                for n in changed & g.keys():
                    g[n] = fresh[n]  # type: ignore[index]
    return replace(compiled, snapshots=snapshots, at=time.time()), len(changed)
