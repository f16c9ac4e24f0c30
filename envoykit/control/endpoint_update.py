"""The endpoint-only road of a change: new ClusterLoadAssignments into the served snapshots, without
translating listeners, routes or clusters again (and, for a mesh.yaml edit that moves workloads, only
the sidecars of the moved workloads: :func:`recompile_endpoints`).

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

from envoykit.control.model.diff import endpoint_changes
from envoykit.control.model.loader import LoadedMesh
from envoykit.control.model.mesh import Mesh
from envoykit.control.model.queries import referenced_subsets
from envoykit.control.translate.clusters import EndpointSource, outbound_endpoints
from envoykit.control.translate.translation import MeshTls, translate_nodes
from envoykit.control.xds.snapshot import Part, PartCache, Snapshot, TypeSet
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
    translation's endpoint groups (the shared one and any a node still holds), updated to match."""
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
    shared = compiled.translation.shared  # the endpoint-only road builds sidecars with it again
    endpoint_groups = [shared.endpoints] if shared is not None else []
    for cfg in compiled.translation.nodes.values():
        endpoint_groups += cfg.groups.get(ENDPOINT, [])
    for g in endpoint_groups:
        if id(g) not in groups_done:
            groups_done.add(id(g))
            for n in changed & g.keys():
                g[n] = fresh[n]
    return replace(compiled, snapshots=snapshots, at=time.time()), len(changed)


def recompile_endpoints(
    serving: Compiled, loaded: LoadedMesh, source: EndpointSource, tls: MeshTls | None
) -> Compiled | None:
    """The endpoint-only road of a mesh.yaml edit: ``loaded`` (the edited mesh, validated) served by
    changing only what its workloads' addresses reach, or None when the edit needs the full road
    (:func:`envoykit.control.model.diff.endpoint_changes`).

    The sidecars whose own addresses changed are translated again (:func:`translate_nodes`); the
    assignments of the services whose endpoints moved are rebuilt from ``source`` and repacked
    (:func:`with_assignments`); every other node keeps its served snapshot object, so the ADS server
    sends each Envoy only the resources that differ. The caller checks that the files the mesh
    references did not change as well.
    """
    changes = endpoint_changes(serving.loaded.mesh, loaded.mesh)
    if changes is None:
        return None
    translation = translate_nodes(serving.translation, loaded.mesh, changes.nodes, loaded.base_dir, tls)
    compiled = replace(serving, loaded=loaded, translation=translation)
    if changes.services:
        moved = with_assignments(compiled, assignments(loaded.mesh, source, changes.services))
        if moved is not None:
            compiled = moved[0]
    if changes.nodes:
        parts = PartCache(compiled.snapshots.values())
        snapshots = dict(compiled.snapshots)
        for nid in changes.nodes:
            cfg = translation.nodes[nid]
            snapshots[nid] = Snapshot({t: TypeSet(parts.part(g) for g in gs) for t, gs in cfg.groups.items()})
            cfg.groups = {}  # served packed, as build_snapshots(release=True) leaves every node
        compiled = replace(compiled, snapshots=snapshots)
    return replace(compiled, at=time.time())
