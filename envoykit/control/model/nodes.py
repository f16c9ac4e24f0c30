"""The Envoys of a mesh: node ids, kinds and the node metadata every bootstrap carries.

Node ids are ``<kind>~<name>``: ``sidecar~backend-v1`` (a workload's sidecar), ``ingress~ingress`` and
``egress~egress`` (gateways). Node metadata (Envoy ``Node.metadata``, all strings) is the contract the
telemetry and authz servers read:

====================  ===========================================================
``workload``          workload or gateway name (``backend-v1``)
``app``               service name, or the gateway name (``backend``)
``version``           workload version (``v1``); ``latest`` for gateways
``namespace``         namespace of the service or gateway
``service_account``   its service account
``principal``         its SPIFFE ID ``spiffe://<trust_domain>/ns/<ns>/sa/<sa>``
``mesh_id``           the mesh's ``mesh_id``
``kind``              ``sidecar``, ``ingress`` or ``egress``
====================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from envoykit.control.model.mesh import Gateway, Mesh, Service, Workload
from envoykit.control.model.types import Address
from envoykit.core.spiffe import spiffe_id

NodeKind = Literal["sidecar", "ingress", "egress"]
NODE_KINDS: tuple[NodeKind, ...] = ("sidecar", "ingress", "egress")


def node_id(kind: NodeKind, name: str) -> str:
    """``node_id("sidecar", "backend-v1")`` → ``"sidecar~backend-v1"``."""
    return f"{kind}~{name}"


def parse_node_id(text: str) -> tuple[NodeKind, str]:
    """``"sidecar~backend-v1"`` → ``("sidecar", "backend-v1")``.

    Raises:
        ValueError: not ``<kind>~<name>`` with a known kind.
    """
    kind, sep, name = text.partition("~")
    if not sep or not name or kind not in NODE_KINDS:
        raise ValueError(f"node id {text!r} is not <kind>~<name> with kind one of {', '.join(NODE_KINDS)}")
    return kind, name  # type: ignore[return-value]


@dataclass(frozen=True)
class NodeInfo:
    """One Envoy of the mesh and its identity.

    Attributes:
        id: the node id (``sidecar~backend-v1``).
        kind: ``sidecar``, ``ingress`` or ``egress``.
        name: workload or gateway name.
        cluster: Envoy ``Node.cluster``: the service name (sidecars) or gateway name.
        admin: Envoy's admin address.
        service / workload / gateway: the model objects behind the node.
    """

    id: str
    kind: NodeKind
    name: str
    cluster: str
    app: str
    version: str
    namespace: str
    service_account: str
    principal: str
    mesh_id: str
    admin: Address
    service: Service | None = None
    workload: Workload | None = None
    gateway: Gateway | None = None

    def labels(self) -> dict[str, str]:
        """The workload's labels with ``app`` and ``version``: node metadata ``labels``, which the
        ext_authz filter sends as ``attributes.destination.labels`` (AuthorizationPolicy selectors)."""
        own = self.workload.labels if self.workload is not None else {}
        return {**own, "app": self.app, "version": self.version}

    def metadata(self) -> dict[str, str]:
        """The node metadata (string keys and values) for the bootstrap's ``node.metadata``."""
        return {
            "workload": self.name,
            "app": self.app,
            "version": self.version,
            "namespace": self.namespace,
            "service_account": self.service_account,
            "principal": self.principal,
            "mesh_id": self.mesh_id,
            "kind": self.kind,
        }


def mesh_nodes(mesh: Mesh) -> dict[str, NodeInfo]:
    """Every Envoy of ``mesh`` by node id: one per workload with a sidecar, one per gateway."""
    out: dict[str, NodeInfo] = {}
    for svc, wl in mesh.workloads():
        if wl.sidecar is None:
            continue
        ns, sa = mesh.ns(svc), mesh.service_account(svc)
        nid = node_id("sidecar", wl.name)
        out[nid] = NodeInfo(
            id=nid,
            kind="sidecar",
            name=wl.name,
            cluster=svc.name,
            app=svc.name,
            version=wl.version,
            namespace=ns,
            service_account=sa,
            principal=spiffe_id(mesh.trust_domain, ns, sa),
            mesh_id=mesh.mesh_id,
            admin=wl.sidecar.admin,
            service=svc,
            workload=wl,
        )
    for gw in mesh.gateways:
        ns, sa = mesh.ns(gw), mesh.service_account(gw)
        nid = node_id(gw.kind, gw.name)
        out[nid] = NodeInfo(
            id=nid,
            kind=gw.kind,
            name=gw.name,
            cluster=gw.name,
            app=gw.name,
            version="latest",
            namespace=ns,
            service_account=sa,
            principal=spiffe_id(mesh.trust_domain, ns, sa),
            mesh_id=mesh.mesh_id,
            admin=gw.admin,
            gateway=gw,
        )
    return out
