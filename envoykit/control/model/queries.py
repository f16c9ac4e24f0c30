"""Queries on the mesh model that translation, validation and discovery share.

Which workloads a subset selects, where mesh traffic for a workload goes, which DestinationRule policy
applies, which subsets get their own cluster: answers read from a validated mesh model.
"""

from __future__ import annotations

from envoykit.control.model.mesh import Mesh, Service, Workload
from envoykit.control.model.traffic import TrafficPolicy
from envoykit.control.model.types import Address


def workload_labels(svc: Service, wl: Workload) -> dict[str, str]:
    """Labels a subset selects on: the workload's own, plus ``app`` and ``version``."""
    return {"app": svc.name, "version": wl.version, **wl.labels}


def subset_members(mesh: Mesh, svc: Service, subset: str) -> list[Workload]:
    """Workloads of ``svc`` in ``subset``: a DestinationRule subset's labels, else ``version == subset``."""
    dr = mesh.destination_rule(svc.name)
    labels = next((s.labels for s in dr.subsets if s.name == subset), None) if dr else None
    if labels is None:
        labels = {"version": subset}
    return [
        wl for wl in svc.workloads if all(workload_labels(svc, wl).get(k) == v for k, v in labels.items())
    ]


def endpoint_address(wl: Workload) -> Address:
    """Where mesh traffic for a workload goes: its sidecar's inbound address, or the app itself."""
    return wl.sidecar.inbound if wl.sidecar is not None else wl.address


def service_policy(mesh: Mesh, svc: Service, subset: str = "") -> TrafficPolicy | None:
    """The DestinationRule policy for ``svc`` (a subset's own policy replaces the rule's)."""
    dr = mesh.destination_rule(svc.name)
    if dr is None:
        return None
    sub = next((s for s in dr.subsets if s.name == subset), None) if subset else None
    return sub.traffic_policy if sub and sub.traffic_policy else dr.traffic_policy


def referenced_subsets(mesh: Mesh) -> dict[str, set[str]]:
    """Subsets that get their own cluster, by service name: named in a DestinationRule or a route."""
    out: dict[str, set[str]] = {}

    def note(host: str, subset: str | None) -> None:
        svc = mesh.service(host)
        if svc is not None and subset:
            out.setdefault(svc.name, set()).add(subset)

    for dr in mesh.destination_rules:
        for sub in dr.subsets:
            note(dr.host, sub.name)
    for vs in mesh.virtual_services:
        for r in vs.http:
            for branch in r.route:
                note(branch.destination.host, branch.destination.subset)
            if r.mirror is not None:
                note(r.mirror.host, r.mirror.subset)
    return out
