"""The sidecar a pod gets: one decision and one JSONPatch, shared by ``envoykit k8s render``,
``envoykit k8s inject`` (offline) and the mutating admission webhook.

The Envoy runs as a native sidecar (an init container with ``restartPolicy: Always``, Kubernetes ≥ 1.29):
it starts before the pod's other init containers and its app, and stops after them, which is what
Istio's native-sidecar mode does. Its bootstrap (node id, ADS towards the control plane's Service, the
node token) comes from the Secret ``envoykit-bootstrap-<workload>`` that ``envoykit k8s render`` writes.

Which workload a pod is: its ``envoykit.io/workload`` label, else its ``app`` and ``version`` labels
naming one workload of the mesh. A pod is refused (:class:`NotInjectable`) when it uses
``hostNetwork`` (the sidecar's ports would be the node's), or is no workload of the mesh, or its
workload has no sidecar; a pod already carrying the status annotation or the sidecar container is
left as it is (:class:`AlreadyInjected`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from envoykit.control.model.mesh import Mesh, Service, Workload
from envoykit.k8s import names

JsonPatch = list[dict[str, Any]]


class NotInjectable(ValueError):
    """The pod cannot get a sidecar; the message says why and what to change."""


class AlreadyInjected(NotInjectable):
    """The pod already has envoykit's sidecar (status annotation or container present)."""


@dataclass(frozen=True)
class SidecarOptions:
    """How the sidecar container is built: image, Envoy's log level, resources (Kubernetes quantities)."""

    images: names.Images = field(default_factory=names.Images)
    log_level: str = "info"
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    memory_limit: str = "512Mi"


def _escape(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901: ``~`` → ``~0``, ``/`` → ``~1``)."""
    return key.replace("~", "~0").replace("/", "~1")


def find_workload(mesh: Mesh, labels: dict[str, str]) -> tuple[Service, Workload]:
    """The workload of ``mesh`` a pod with ``labels`` is.

    Raises:
        NotInjectable: no workload or several match, naming the labels to set.
    """
    name = labels.get(names.WORKLOAD_LABEL)
    if name is not None:
        for svc, wl in mesh.workloads():
            if wl.name == name:
                return svc, wl
        raise NotInjectable(f"label {names.WORKLOAD_LABEL}={name} names no workload of mesh {mesh.mesh_id!r}")
    app, version = labels.get("app"), labels.get("version")
    service = mesh.service(app) if app else None
    found = [wl for wl in service.workloads if version is None or wl.version == version] if service else []
    if service is not None and len(found) == 1:
        return service, found[0]
    raise NotInjectable(
        "cannot tell which workload of the mesh this pod is: label it "
        f"{names.WORKLOAD_LABEL}=<workload> (or app=<service> and version=<version> naming one workload)"
    )


def is_injected(pod: dict[str, Any]) -> bool:
    """True when ``pod`` (a Pod or a pod template) already has envoykit's sidecar."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    spec = pod.get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return names.STATUS_ANNOTATION in annotations or any(
        c.get("name") == names.SIDECAR_CONTAINER for c in containers
    )


def uses_wasm(mesh: Mesh, svc: Service) -> bool:
    """True when the sidecars of ``svc`` load Wasm modules (they then mount the ``envoykit-wasm`` ConfigMap)."""
    return bool(svc.extensions.wasm)


def envoy_container(
    name: str, port: int, opts: SidecarOptions, *, wasm: bool, sidecar: bool
) -> dict[str, Any]:
    """The Envoy container of a sidecar (``sidecar=True``: native sidecar) or a gateway, reading its
    bootstrap from the ``envoykit-bootstrap`` volume; ready once its listener on ``port`` accepts."""
    mounts = [{"name": names.BOOTSTRAP_VOLUME, "mountPath": names.BOOTSTRAP_DIR, "readOnly": True}]
    if wasm:
        mounts.append({"name": names.WASM_VOLUME, "mountPath": names.WASM_DIR, "readOnly": True})
    c: dict[str, Any] = {
        "name": name,
        "image": opts.images.envoykit,
        "imagePullPolicy": opts.images.pull_policy,
        "command": ["envoy"],
        "args": [
            "-c",
            f"{names.BOOTSTRAP_DIR}/bootstrap.json",
            "--disable-hot-restart",
            "--log-level",
            opts.log_level,
        ],
        "ports": [{"name": names.MESH_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        # the listener exists once LDS arrived from the control plane
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 2, "failureThreshold": 3},
        "resources": {
            "requests": {"cpu": opts.cpu_request, "memory": opts.memory_request},
            "limits": {"memory": opts.memory_limit},
        },
        "securityContext": {
            "runAsUser": 1337,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    if sidecar:
        c["restartPolicy"] = "Always"
    return c


def envoy_volumes(workload: str, *, wasm: bool) -> list[dict[str, Any]]:
    """The volumes an Envoy container mounts: its bootstrap Secret (and the Wasm ConfigMap)."""
    vols: list[dict[str, Any]] = [
        {
            "name": names.BOOTSTRAP_VOLUME,
            "secret": {"secretName": names.bootstrap_secret(workload), "defaultMode": 0o444},
        }
    ]
    if wasm:
        vols.append({"name": names.WASM_VOLUME, "configMap": {"name": "envoykit-wasm"}})
    return vols


def sidecar_patch(mesh: Mesh, pod: dict[str, Any], opts: SidecarOptions | None = None) -> JsonPatch:
    """The JSONPatch (RFC 6902) that gives ``pod`` its sidecar.

    Args:
        mesh: the in-cluster mesh (:func:`envoykit.k8s.kmesh.k8s_mesh`).
        pod: a Pod (or a pod template: ``metadata`` and ``spec``) as the API returns it.
        opts: the sidecar container's image and resources.

    Returns:
        operations on ``/metadata`` and ``/spec`` of ``pod``: the sidecar first among the init containers,
        its volumes, the workload and service labels, the status annotation.

    Raises:
        AlreadyInjected: the pod has the sidecar already.
        NotInjectable: ``hostNetwork``, no workload of the mesh, or a workload without a sidecar.
    """
    opts = opts or SidecarOptions()
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if is_injected(pod):
        raise AlreadyInjected("pod already has envoykit's sidecar")
    if spec.get("hostNetwork"):
        raise NotInjectable(
            "pod uses hostNetwork: a sidecar would listen on the node's ports and see every pod's "
            "traffic; run it without hostNetwork or label it " + f"{names.POD_INJECT_LABEL}=false"
        )
    labels = meta.get("labels") or {}
    svc, wl = find_workload(mesh, labels)
    if wl.sidecar is None:
        raise NotInjectable(f"workload {wl.name} has no sidecar in the mesh (sidecar: null)")
    wasm = uses_wasm(mesh, svc)
    container = envoy_container(
        names.SIDECAR_CONTAINER, wl.sidecar.inbound.port, opts, wasm=wasm, sidecar=True
    )
    ops: JsonPatch = []
    if spec.get("initContainers"):
        ops.append({"op": "add", "path": "/spec/initContainers/0", "value": container})
    else:
        ops.append({"op": "add", "path": "/spec/initContainers", "value": [container]})
    volumes = envoy_volumes(wl.name, wasm=wasm)
    if spec.get("volumes"):
        ops += [{"op": "add", "path": "/spec/volumes/-", "value": v} for v in volumes]
    else:
        ops.append({"op": "add", "path": "/spec/volumes", "value": volumes})
    status = json.dumps({"workload": wl.name, "node": f"sidecar~{wl.name}", "mesh": mesh.mesh_id})
    if "annotations" in meta:
        ops.append(
            {
                "op": "add",
                "path": f"/metadata/annotations/{_escape(names.STATUS_ANNOTATION)}",
                "value": status,
            }
        )
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {names.STATUS_ANNOTATION: status}})
    wanted = {names.WORKLOAD_LABEL: wl.name, names.SERVICE_LABEL: svc.name}
    if "labels" not in meta:
        ops.append({"op": "add", "path": "/metadata/labels", "value": wanted})
    else:
        ops += [
            {"op": "add", "path": f"/metadata/labels/{_escape(k)}", "value": v}
            for k, v in wanted.items()
            if labels.get(k) != v
        ]
    return ops
