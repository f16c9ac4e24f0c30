"""What changed between two versions of a mesh, for the endpoint-only road of a mesh.yaml edit.

A workload's addresses reach few resources: its sidecar's ``inbound`` address is an endpoint of its
service (EDS) and that sidecar's inbound listener; its app ``address`` is the sidecar's ``inbound|``
cluster (or, without a sidecar, the endpoint itself). A change confined to these fields translates
again only the sidecars concerned and repacks only the assignments concerned
(:func:`envoykit.control.endpoint_update.recompile_endpoints`); any other difference takes the full
road. Istio makes the same cut: an endpoint change is an EDS push, not a full push.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoykit.control.model.mesh import Mesh, Service, Workload
from envoykit.control.model.nodes import node_id

# the fields of a workload that only feed endpoints and its own sidecar's inbound side
_ENDPOINT_FIELDS: Any = {"address": True, "sidecar": {"inbound"}}


@dataclass
class EndpointChanges:
    """Services whose endpoints moved (their assignments are rebuilt) and sidecar node ids whose own
    resources changed (translated again). Both empty: the models are equal."""

    services: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)


def _same_service_shape(a: Service, b: Service) -> bool:
    return len(a.workloads) == len(b.workloads) and a.model_dump(exclude={"workloads"}) == b.model_dump(
        exclude={"workloads"}
    )


def _workload_changes(a: Workload, b: Workload) -> tuple[bool, bool] | None:
    """(endpoint moved, own sidecar changed) for two versions of a workload; None when another field
    differs."""
    if a.model_dump(exclude=_ENDPOINT_FIELDS) != b.model_dump(exclude=_ENDPOINT_FIELDS):
        return None
    endpoint_a = a.sidecar.inbound if a.sidecar else a.address
    endpoint_b = b.sidecar.inbound if b.sidecar else b.address
    moved = endpoint_a != endpoint_b
    own = b.sidecar is not None and (a.address != b.address or moved)
    return moved, own


def endpoint_changes(old: Mesh, new: Mesh) -> EndpointChanges | None:
    """The endpoint-only difference from ``old`` to ``new``, or None when anything else differs
    (services added, removed or reordered, any field but a workload's ``address`` and
    ``sidecar.inbound``, gateways, routes, rules, extensions)."""
    if old.model_dump(exclude={"services"}) != new.model_dump(exclude={"services"}):
        return None
    if len(old.services) != len(new.services):
        return None
    out = EndpointChanges()
    for a, b in zip(old.services, new.services, strict=True):
        if a == b:
            continue
        if not _same_service_shape(a, b):
            return None
        for wa, wb in zip(a.workloads, b.workloads, strict=True):
            if wa == wb:
                continue
            found = _workload_changes(wa, wb)
            if found is None:
                return None
            moved, own = found
            if moved:
                out.services.add(b.name)
            if own:
                out.nodes.add(node_id("sidecar", wb.name))
    return out
