"""``envoykit k8s inject -f deploy.yaml``: the sidecar added to manifests offline (as ``istioctl
kube-inject`` does), with the same patch the webhook applies to pods.

Pods and the pod templates of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs
are injected; other objects pass through unchanged. The bootstrap Secret each sidecar mounts is
written by ``envoykit k8s render`` for every workload of the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonpatch

from envoykit.control.model.mesh import Mesh
from envoykit.core import ConfigError
from envoykit.k8s import names
from envoykit.k8s.sidecar import AlreadyInjected, NotInjectable, SidecarOptions, sidecar_patch

_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True)
class Injected:
    """What happened to one object: ``action`` is ``injected``, ``already`` or ``skipped``."""

    kind: str
    name: str
    action: str
    workload: str = ""


def inject_documents(
    mesh: Mesh, docs: list[Any], opts: SidecarOptions | None = None, source: str = "<input>"
) -> tuple[list[Any], list[Injected]]:
    """Inject every pod (template) in ``docs`` (parsed YAML documents, ``None`` for empty ones).

    Returns:
        the documents (injected copies where a pod was injected) and a report per object.

    Raises:
        ConfigError: a pod cannot be injected (hostNetwork, no workload of the mesh, …), naming the
            document, kind and name; nothing is written then.
    """
    out: list[Any] = []
    report: list[Injected] = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or doc.get("kind") not in _TEMPLATE_PATHS:
            out.append(doc)
            if isinstance(doc, dict):
                report.append(Injected(str(doc.get("kind")), _name(doc), "skipped"))
            continue
        kind, name = doc["kind"], _name(doc)
        path = _TEMPLATE_PATHS[kind]
        pod: Any = doc
        for key in path:
            pod = (pod or {}).get(key)
        if not isinstance(pod, dict):
            raise ConfigError(f"{kind} {name} has no pod template at {'.'.join(path)}", file=source)
        if (pod.get("metadata") or {}).get("labels", {}).get(names.POD_INJECT_LABEL) == "false":
            out.append(doc)
            report.append(Injected(kind, name, "skipped"))
            continue
        try:
            ops = sidecar_patch(mesh, pod, opts)
        except AlreadyInjected:
            out.append(doc)
            report.append(Injected(kind, name, "already"))
            continue
        except NotInjectable as exc:
            raise ConfigError(f"document {i + 1} ({kind} {name}): {exc}", file=source) from exc
        prefix = "".join(f"/{k}" for k in path)
        patch = [{**op, "path": prefix + op["path"]} for op in ops]
        new = jsonpatch.apply_patch(doc, patch)
        out.append(new)
        workload = new
        for key in (*path, "metadata", "labels"):
            workload = workload[key]
        report.append(Injected(kind, name, "injected", workload[names.WORKLOAD_LABEL]))
    return out, report


def _name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return str(meta.get("name") or meta.get("generateName") or "?")
